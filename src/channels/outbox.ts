// File outboxes stand in for SMTP and Twilio when they are not configured. They are the
// honest record of what was sent: every send is a new file, never an overwrite, so a
// duplicate send would show up as a second file for the same action key.
import { randomBytes } from "node:crypto";
import {
  mkdirSync,
  readFileSync,
  readdirSync,
  renameSync,
  writeFileSync,
  existsSync,
} from "node:fs";
import { join } from "node:path";
import nodemailer from "nodemailer";
import type { EmailChannel, SmsChannel } from "./channel";
import { mailOptions } from "./email-smtp";

function uniqueName(actionKey: string, ext: string): string {
  return `${actionKey}.${Date.now().toString(36)}-${randomBytes(4).toString("hex")}.${ext}`;
}

/** Writes via a temporary name and a rename, so a crash never leaves half a message. */
function writeAtomically(dir: string, name: string, data: string | Buffer): void {
  mkdirSync(dir, { recursive: true });
  const tmp = join(dir, `.${name}.tmp`);
  writeFileSync(tmp, data, { flag: "wx" });
  renameSync(tmp, join(dir, name));
}

/** One RFC 822 `.eml` file per message, with real headers (Message-ID and all). */
export function createEmailOutbox(dir: string, from: string): EmailChannel {
  const builder = nodemailer.createTransport({
    streamTransport: true,
    buffer: true,
    newline: "unix",
  });
  return {
    async send(message, actionKey) {
      const info = (await builder.sendMail(mailOptions(from, message))) as { message: Buffer };
      const name = uniqueName(actionKey, "eml");
      writeAtomically(dir, name, info.message);
      return { providerId: `outbox:${name}` };
    },
    close: () => Promise.resolve(builder.close()),
  };
}

/** One JSON file per text message. */
export function createSmsOutbox(dir: string): SmsChannel {
  return {
    // eslint-disable-next-line @typescript-eslint/require-await -- the port is async
    async send(message, actionKey) {
      const name = uniqueName(actionKey, "json");
      writeAtomically(
        dir,
        name,
        `${JSON.stringify({ actionKey, to: message.to, body: message.body, at: new Date().toISOString() })}\n`,
      );
      return { providerId: `outbox:${name}` };
    },
    close: async () => {},
  };
}

export interface OutboxCount {
  files: number;
  /** Distinct action keys among them. */
  keys: number;
  /** Files beyond the first for a key: sends of an intent that was already sent. */
  duplicates: number;
  duplicateKeys: string[];
}

/**
 * Counts messages per action key from what the files say (the Message-ID header, or the
 * actionKey field), not from their names.
 */
export function countOutbox(dir: string): OutboxCount {
  const perKey = new Map<string, number>();
  let files = 0;
  const names = existsSync(dir)
    ? readdirSync(dir).filter((n) => /\.(eml|json)$/.test(n) && !n.startsWith("."))
    : [];
  for (const name of names) {
    const text = readFileSync(join(dir, name), "utf8");
    const key = name.endsWith(".eml")
      ? /^Message-ID:\s*<([^@>]+)@/im.exec(text)?.[1]
      : (JSON.parse(text) as { actionKey?: string }).actionKey;
    files += 1;
    const k = key ?? `unreadable:${name}`;
    perKey.set(k, (perKey.get(k) ?? 0) + 1);
  }
  const duplicateKeys = [...perKey].filter(([, n]) => n > 1).map(([k]) => k);
  return {
    files,
    keys: perKey.size,
    duplicates: [...perKey.values()].reduce((sum, n) => sum + n - 1, 0),
    duplicateKeys,
  };
}
