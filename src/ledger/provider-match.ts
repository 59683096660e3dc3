// Finding an in-doubt send in the provider's own list (SMS: Twilio's Messages). A message
// matches when it went to the number the attempt sent to, with the body it sent, created from
// a minute before the call on (the provider's clock is not ours), and no other action already
// has it as its provider id: two texts alike to one number are two messages, one for each.
import { createHash } from "node:crypto";
import type { ProviderMessage } from "../channels/channel";
import type { Db } from "../db/client";
import { poolOf } from "../db/sql";

/** The slack on the provider's clock, before the call started. */
export const CLOCK_SLACK_MS = 60_000;

/** What an attempt recorded it sent, with its call-started mark. */
export interface SentContent {
  address: string;
  contentHash: string;
}

export function contentHash(body: string): string {
  return createHash("sha256").update(body).digest("hex");
}

/** The attempt's recorded address and body hash; null for attempts made before they were kept. */
export async function sentContent(
  db: Db,
  key: string,
  attempt: number,
): Promise<SentContent | null> {
  const [row] = await poolOf(db).sql<{ address: string | null; contentHash: string | null }>`
    SELECT address, "contentHash" FROM "ActionAttempt" WHERE "actionKey" = ${key} AND attempt = ${attempt}`;
  return row?.address && row.contentHash
    ? { address: row.address, contentHash: row.contentHash }
    : null;
}

/**
 * The provider's messages that can be this action's send: to its number (the caller listed
 * them), with its body, created between `from` (less the clock slack) and `to`, and not the
 * provider id of another action. Oldest first.
 */
export async function unclaimedMatches(
  db: Db,
  key: string,
  messages: ProviderMessage[],
  /** The body's hash; null for an attempt that did not record it: any body then. */
  hash: string | null,
  window: { from: Date; to?: Date },
): Promise<ProviderMessage[]> {
  const from = window.from.getTime() - CLOCK_SLACK_MS;
  const to = window.to?.getTime() ?? Infinity;
  const alike = messages.filter(
    (m) =>
      m.dateCreated.getTime() >= from &&
      m.dateCreated.getTime() <= to &&
      (hash === null || contentHash(m.body) === hash),
  );
  if (alike.length === 0) return [];
  const taken = await poolOf(db).sql<{ providerId: string }>`
    SELECT "providerId" FROM "Action"
    WHERE "providerId" = ANY(${alike.map((m) => m.sid)}) AND key <> ${key}`;
  const other = new Set(taken.map((t) => t.providerId));
  return alike
    .filter((m) => !other.has(m.sid))
    .sort((a, b) => a.dateCreated.getTime() - b.dateCreated.getTime());
}
