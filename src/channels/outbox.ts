// File outboxes stand in for SMTP and Twilio when they are not configured. They are the
// honest record of what was sent: every send is a new file, never an overwrite, so a
// duplicate send shows up as a second file for the same action key — and countOutbox counts
// keys from what each file says, not from its name, so a duplicate cannot hide.
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { mkdir, open, rename, unlink } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import { join } from "node:path";
import nodemailer from "nodemailer";
import type { EmailChannel, SmsChannel } from "./channel";
import { mailOptions } from "./email-smtp";

/**
 * `<key>.<time>-<96 random bits>.<ext>`: unique without a lock, so concurrent workers (even
 * on several machines sharing the directory) never pick the same name. The key is hex in
 * practice; anything that could leave the directory is replaced.
 */
function uniqueName(actionKey: string, ext: "eml" | "json"): string {
  const safeKey = actionKey.replace(/[^A-Za-z0-9_-]/g, "_");
  return `${safeKey}.${Date.now().toString(36)}-${randomBytes(12).toString("hex")}.${ext}`;
}

/**
 * Writes a hidden temporary file, flushes it to disk, then renames it into place: a crash
 * leaves either the whole message or an ignored `.tmp`, never half a message.
 */
async function writeAtomically(dir: string, name: string, data: string | Buffer): Promise<void> {
  await mkdir(dir, { recursive: true });
  const tmp = join(dir, `.${name}.tmp`);
  const file = await open(tmp, "wx");
  try {
    await file.writeFile(data);
    await file.sync();
  } catch (error) {
    await file.close();
    await unlink(tmp).catch(() => {});
    throw error;
  }
  await file.close();
  await rename(tmp, join(dir, name));
}

/** An email channel that writes each message as a full RFC 5322 `.eml` file under `dir`. */
export function createEmailOutbox(dir: string, from: string): EmailChannel {
  // The same composer as SMTP, so the file carries the headers a server would have received.
  const composer = nodemailer.createTransport({ streamTransport: true, buffer: true });
  return {
    async send(message, actionKey) {
      const info = (await composer.sendMail(mailOptions(from, message))) as { message: Buffer };
      const name = uniqueName(actionKey, "eml");
      await writeAtomically(dir, name, info.message);
      return { providerId: `outbox:${name}` };
    },
    close: () => Promise.resolve(composer.close()),
  };
}

/** An SMS channel that writes each message as a `.json` file under `dir`. */
export function createSmsOutbox(dir: string): SmsChannel {
  return {
    async send(message, actionKey) {
      const name = uniqueName(actionKey, "json");
      const record = {
        to: message.to,
        body: message.body,
        actionKey,
        at: new Date().toISOString(),
      };
      await writeAtomically(dir, name, `${JSON.stringify(record)}\n`);
      return { providerId: `outbox:${name}` };
    },
    close: () => Promise.resolve(),
  };
}

/** What an outbox directory holds, per action key. */
export interface OutboxCount {
  files: number;
  /** Distinct action keys among them. */
  keys: number;
  /** Files beyond the first for a key: sends of an intent that was already sent. */
  duplicates: number;
  duplicateKeys: string[];
}

/**
 * Counts messages per action key from what each file says — the local part of an `.eml`'s
 * Message-ID, a `.json`'s actionKey — so a renamed or hand-copied file still counts.
 */
export function countOutbox(dir: string): OutboxCount {
  const perKey = new Map<string, number>();
  const names = existsSync(dir)
    ? readdirSync(dir).filter((n) => !n.startsWith(".") && /\.(eml|json)$/.test(n))
    : [];
  for (const name of names) {
    const text = readFileSync(join(dir, name), "utf8");
    // A file that names no key still counts, under its own name: it was a send.
    const key = (name.endsWith(".eml") ? emlKey(text) : jsonKey(text)) ?? `unreadable:${name}`;
    perKey.set(key, (perKey.get(key) ?? 0) + 1);
  }
  const duplicateKeys = [...perKey].filter(([, n]) => n > 1).map(([k]) => k);
  return {
    files: names.length,
    keys: perKey.size,
    duplicates: [...perKey.values()].reduce((sum, n) => sum + n - 1, 0),
    duplicateKeys: duplicateKeys.sort(),
  };
}

/** `Message-ID: <key@domain>` → `key`, from the header block only (folded lines unfolded). */
function emlKey(eml: string): string | undefined {
  const head = eml.split(/\r?\n\r?\n/, 1)[0] ?? "";
  const unfolded = head.replace(/\r?\n[ \t]+/g, " ");
  return /^Message-ID:\s*<([^@>\s]+)@[^>]*>/im.exec(unfolded)?.[1];
}

function jsonKey(json: string): string | undefined {
  try {
    const parsed: unknown = JSON.parse(json);
    const key = (parsed as { actionKey?: unknown } | null)?.actionKey;
    return typeof key === "string" ? key : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Channels that deliver nothing and append one line per send, `<channel> <action key>`, to one
 * file (SENDONCE_RECORD_ONLY): the pipeline measured without a provider's cost. The lines of
 * sends made in the same turn of the event loop go out in one append, and each send returns
 * once its line is written; appends are atomic, so workers may share the file.
 */
export function createRecorder(file: string): { email: EmailChannel; sms: SmsChannel } {
  let handle: Promise<FileHandle> | undefined;
  let pending: string[] = [];
  let batch: Promise<void> | undefined;
  // Every batch's write, in order: the next one starts when this one is done.
  let writes: Promise<void> = Promise.resolve();
  const record = async (channel: "email" | "sms", actionKey: string) => {
    pending.push(`${channel} ${actionKey}\n`);
    batch ??= new Promise<void>((resolve) => setImmediate(resolve)).then(() => {
      const lines = pending.join("");
      pending = [];
      batch = undefined;
      const written = writes.then(async () => {
        handle ??= open(file, "a");
        await (await handle).write(lines);
      });
      writes = written.catch(() => {});
      return written;
    });
    await batch;
    return { providerId: `recorded:${actionKey}` };
  };
  const close = async () => {
    await batch?.catch(() => {});
    await writes;
    if (handle) await (await handle).close();
    handle = undefined;
  };
  return {
    email: { send: (_message, key) => record("email", key), close },
    sms: { send: (_message, key) => record("sms", key), close: () => Promise.resolve() },
  };
}
