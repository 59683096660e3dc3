// `sendonce resolve KEY --sent | --not-sent`: settles an in-doubt send by hand.
import { userInfo } from "node:os";
import { loadConfig } from "../config";
import { openLedger } from "../infra/services";
import type { Finding } from "../ops/resolve";
import { resolveByHand } from "../ops/resolve";

export interface ResolveFlags {
  sent?: boolean;
  notSent?: boolean;
  providerId?: string;
  note?: string;
}

export async function runResolve(keyOrPrefix: string, flags: ResolveFlags): Promise<number> {
  const finding: Finding = flags.sent
    ? { sent: true, ...(flags.providerId !== undefined && { providerId: flags.providerId }) }
    : { sent: false };
  if (!/^[0-9a-f]{8,64}$/.test(keyOrPrefix)) {
    console.error(
      `sendonce: "${keyOrPrefix}" is not an action key: 64 hex digits, or a start of at least 8`,
    );
    return 1;
  }
  const { db, close } = await openLedger(loadConfig(), 2);
  try {
    // explain prints keys shortened to their first 12 characters; a unique prefix will do.
    const keys = await db.$queryRaw<{ key: string }[]>`
      SELECT key FROM "Action" WHERE key LIKE ${`${keyOrPrefix}%`} ORDER BY key LIMIT 2`;
    if (keys.length !== 1) {
      console.error(
        keys.length === 0
          ? `sendonce: no action has the key ${keyOrPrefix}`
          : `sendonce: more than one action key starts with ${keyOrPrefix}: give more of it`,
      );
      return 1;
    }
    const key = keys[0]!.key;
    const resolved = await resolveByHand(db, key, finding, {
      now: new Date(),
      by: operator(),
      ...(flags.note !== undefined && { note: flags.note }),
    });
    switch (resolved.kind) {
      case "sent":
        console.log(
          `${key}: sent${resolved.providerId ? ` (provider id ${resolved.providerId})` : ""}`,
        );
        return 0;
      case "retry":
        console.log(
          `${key}: not sent; its run is still on the step and sends it again, under the same key, once the workers' sweep picks it up (within two sweep intervals); a text is looked up at the provider once more first, and held in doubt again if a message you were not shown may be it`,
        );
        return 0;
      case "not_sent":
        console.log(
          `${key}: not sent, recorded failed_permanent(not_sent); its enrollment has moved on, so nothing sends it again: resend by hand if it should go`,
        );
        return 0;
      case "needs_provider_id":
        console.error(
          `sendonce: ${key} is an SMS: give the message's SID with --provider-id, so that it is not taken for another message`,
        );
        return 1;
      case "reported":
        console.error(
          `sendonce: the provider reported "${resolved.status}" for ${key}: it took the message, so it is not resolved as never sent; use --sent`,
        );
        return 1;
      case "unknown":
        console.error(`sendonce: no action has the key ${key}`);
        return 1;
      case "not_in_doubt":
        console.error(
          `sendonce: ${key} is ${resolved.state}${resolved.reason ? ` (${resolved.reason})` : ""}, not in_doubt: only an in-doubt send is resolved by hand`,
        );
        return 1;
    }
  } finally {
    await close();
  }
}

/** The account running the command, for the audit trail. */
function operator(): string {
  try {
    return userInfo().username;
  } catch {
    return "unknown user";
  }
}
