// Finding an in-doubt send in the provider's own list (SMS: Twilio's Messages). A message
// matches when it went to the number the attempt sent to, with the body it sent, created from
// a minute before the call on (the provider's clock is not ours), and no other action already
// has it as its provider id: two texts alike to one number are two messages, one for each.
import { createHash } from "node:crypto";
import type { ProviderMessage } from "../channels/channel";
import type { Db } from "../db/client";
import type { Statement } from "../db/sql";
import { poolOf, stmt } from "../db/sql";

/** Why a look-up held an in-doubt action for a person instead of releasing it (holdInDoubt). */
export const UNMATCHED = "unmatched_at_provider";

/**
 * Delivery statuses that say the provider took the message: an email provider's (`deferred`
 * too: it holds the message and keeps trying; `dropped` is not one), and Twilio's status
 * callbacks (`failed` and `canceled` are not: Twilio did not send it).
 */
export const PROVIDER_TOOK_IT: readonly string[] = [
  ...["delivered", "bounced", "complained", "deferred", "opened", "clicked"],
  ...["accepted", "scheduled", "queued", "sending", "sent", "delivered", "undelivered"],
  ...["partially_delivered", "read"],
];

/**
 * Twilio's statuses for a message it handed on to the carrier: sent, whatever comes after
 * (`failed` comes before, if at all).
 */
export const HANDED_ON = ["sent", "delivered", "undelivered", "partially_delivered", "read"];

/** Twilio's statuses for a message it took and then did not send. */
const NOT_SENT = ["failed", "canceled"];

/** The slack on the provider's clock, before the call started. */
export const CLOCK_SLACK_MS = 60_000;

/** What an attempt recorded it sent, with its call-started mark. */
export interface SentContent {
  address: string;
  contentHash: string;
}

/**
 * What Twilio's Smart Encoding (on by default for a new Messaging Service) may have made of a
 * body: typographic quotes, apostrophes, dashes, angle quotes, slashes and spaces as their GSM-7
 * look-alikes, and compatibility forms (fullwidth letters, `…`) as NFKC has them. Twilio
 * publishes its list (docs/messaging/services/smart-encoding-char-list); test/ledger/fold.test.ts
 * holds a body against it. A body is
 * hashed and compared in this form, so a message Twilio rewrote that way is still found; folding
 * more than Twilio does only makes two texts that differ in a quote's shape look alike, and two
 * alike are already told apart by whose provider id each is.
 */
const SMART_FOLDS: [RegExp, string][] = [
  [/[«»“”„‟″‶ʺˮ❝❞〝〞]/g, '"'],
  [/[‘’‚‛′‵ʹʻʼʽˈˊˋ´`❛❜]/g, "'"],
  [/[‐‑‒–—―⁃﹘﹣−]/g, "-"],
  [/[‹˂﹤]/g, "<"],
  [/[›˃﹥]/g, ">"],
  [/[⁄∕]/g, "/"],
  [/[\u200B-\u200D\u2060\uFEFF]/g, ""],
  [/\s/g, " "],
];

export function foldForMatch(body: string): string {
  const fold = (text: string) =>
    SMART_FOLDS.reduce((folded, [chars, to]) => folded.replace(chars, to), text);
  // Before NFKC too, which would take some apart first (´ to a space and a combining accent).
  return fold(fold(body).normalize("NFKC"));
}

const sha256 = (text: string) => createHash("sha256").update(text).digest("hex");

/** The hash an attempt records of the body it sent, folded as the look-up compares it. */
export function contentHash(body: string): string {
  return sha256(foldForMatch(body));
}

/** Whether a listed body is the one hashed; as sent, for attempts recorded before folding. */
function sameContent(body: string, hash: string): boolean {
  return contentHash(body) === hash || sha256(body) === hash;
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

/** When an attempt's message can have been created, and who else's it can be. */
export interface CallWindow {
  /** The attempt's call-started mark. */
  from: Date;
  /** The latest its call can have reached the provider; unset: any time after `from`. */
  to?: Date;
  /**
   * A claim's lease and its call's together: an action whose message was created at a time was
   * claimed no longer than this before it (bounds the ledger read of whose a message is).
   */
  leasesMs: number;
}

/**
 * The messages created between `from` less the clock slack and `to` (ms; `slackAfter` adds the
 * slack there too) that Twilio did not give up.
 */
function createdAround(
  messages: ProviderMessage[],
  window: CallWindow,
  slackAfter: boolean,
): ProviderMessage[] {
  const from = window.from.getTime() - CLOCK_SLACK_MS;
  const to = (window.to?.getTime() ?? Infinity) + (slackAfter ? CLOCK_SLACK_MS : 0);
  return messages.filter(
    (m) =>
      m.dateCreated.getTime() >= from &&
      m.dateCreated.getTime() <= to &&
      !NOT_SENT.includes(m.status ?? ""),
  );
}

/** The earliest claim of an action whose message can be in the window. */
const ownersFrom = (window: CallWindow) =>
  new Date(window.from.getTime() - CLOCK_SLACK_MS - window.leasesMs);

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
  window: CallWindow,
): Promise<ProviderMessage[]> {
  const alike = createdAround(messages, window, false).filter(
    (m) => hash === null || sameContent(m.body, hash),
  );
  const other = await takenByOthers(db, key, alike, window);
  return alike
    .filter((m) => !other.has(m.sid))
    .sort((a, b) => a.dateCreated.getTime() - b.dateCreated.getTime());
}

/**
 * Which of the messages are another action's, by their provider id: among the actions claimed
 * since the earliest that can have made one (through the claim-time index; the provider id has
 * none, so that an outcome's update stays heap-only).
 */
async function takenByOthers(
  db: Db,
  key: string,
  messages: ProviderMessage[],
  window: CallWindow,
): Promise<Set<string>> {
  if (messages.length === 0) return new Set();
  const taken = await poolOf(db).sql<{ providerId: string }>`
    SELECT "providerId" FROM "Action"
    WHERE "claimedAt" >= ${ownersFrom(window)}
      AND "providerId" = ANY(${messages.map((m) => m.sid)}) AND key <> ${key}`;
  return new Set(taken.map((t) => t.providerId));
}

/**
 * The provider's messages to the attempt's number, from the time of its call, that may be its
 * send with a body Twilio changed (Link Shortening, say, which rewrites every link): created
 * between `from` less the clock slack and `to` plus it, not given up by Twilio, with another
 * body than the attempt's, not another action's, and not explained as another of the
 * customer's texts to that number (a body an attempt of theirs from then recorded).
 * None for an attempt that did not record its body (any body matches it then). A look-up that
 * finds none with the attempt's body releases it for another attempt only when this is empty.
 */
export async function unexplainedMessages(
  db: Db,
  action: { key: string; customerId: string },
  messages: ProviderMessage[],
  sent: SentContent | null,
  window: CallWindow & { to: Date },
): Promise<ProviderMessage[]> {
  if (!sent) return [];
  const near = createdAround(messages, window, true).filter(
    (m) => !sameContent(m.body, sent.contentHash),
  );
  if (near.length === 0) return [];
  const other = await takenByOthers(db, action.key, near, window);
  const theirs = await poolOf(db).sql<{ contentHash: string }>`
    SELECT DISTINCT t."contentHash" FROM "Action" a
    JOIN "ActionAttempt" t ON t."actionKey" = a.key
    WHERE a."customerId" = ${action.customerId} AND a.channel = 'sms' AND a.key <> ${action.key}
      AND a."claimedAt" >= ${ownersFrom(window)} AND t.address = ${sent.address}
      AND t."contentHash" IS NOT NULL`;
  return near.filter(
    (m) => !other.has(m.sid) && !theirs.some((t) => sameContent(m.body, t.contentHash)),
  );
}

/**
 * The message a Twilio status callback reported for this attempt of the action, if one said
 * Twilio took it and none said Twilio gave it up: the callback's URL carries the action key and
 * the attempt, and its request is signed, so it names this attempt's message whatever Twilio
 * did to the body. (A callback URL without the attempt, from before it was added, counts for
 * any.) The earliest such report.
 */
export async function reportedMessage(
  db: Db,
  key: string,
  attempt: number,
): Promise<{ sid: string; status: string } | undefined> {
  const [row] = await poolOf(db).sql<{ sid: string; status: string }>`
    SELECT d.detail->>'providerId' AS sid, d.rule AS status FROM "AuditEntry" d
    WHERE d.kind = 'delivery_status' AND d."actionKey" = ${key} AND d.rule = ANY(${PROVIDER_TOOK_IT})
      AND d.detail->>'providerId' IS NOT NULL
      AND COALESCE((d.detail->>'attempt')::int, ${attempt}) = ${attempt}
      AND NOT EXISTS (
        SELECT 1 FROM "AuditEntry" f
        WHERE f.kind = 'delivery_status' AND f."actionKey" = ${key} AND f.rule = ANY(${NOT_SENT})
          AND f.detail->>'providerId' = d.detail->>'providerId')
    ORDER BY d.at, d.id LIMIT 1`;
  return row;
}

/**
 * SQL, over the action's row: its call's own answer, come in late (after the call was given up
 * as in doubt), said "try later" under `token`: Twilio made nothing. From the customer's audit
 * trail since the call (its index).
 */
export function triedLater(action: { key: string; customerId: string }, token: number): Statement {
  return stmt`EXISTS (
    SELECT 1 FROM "AuditEntry" s
    WHERE s."customerId" = ${action.customerId} AND s.at >= "callStartedAt" - interval '1 hour'
      AND s."actionKey" = ${action.key} AND s.kind = 'stale_outcome_ignored'
      AND s.detail->>'token' = ${String(token)} AND s.detail->>'outcome' = 'failed_retryable')`;
}

/**
 * What was said of an in-doubt attempt before its look-up: the messages an earlier look-up held
 * it for (a person who handed it back since was shown them), and whether its call's own answer
 * said "try later" (triedLater). From the customer's audit trail since the call.
 */
export async function earlierWord(
  db: Db,
  action: { key: string; customerId: string },
  claim: { token: number; attempt: number },
): Promise<{ shown: Set<string>; triedLater: boolean }> {
  const [row] = await poolOf(db).sql<{ triedLater: boolean; holds: unknown[] | null }>`
    SELECT ${triedLater(action, claim.token)} AS "triedLater",
      (SELECT array_agg(h.detail) FROM "AuditEntry" h
       WHERE h."customerId" = ${action.customerId} AND h."actionKey" = ${action.key}
         AND h.at >= "callStartedAt" - interval '1 hour' AND h.kind = 'in_doubt'
         AND h.rule = ${UNMATCHED}) AS holds
    FROM "Action" WHERE key = ${action.key}`;
  const shown = new Set<string>();
  for (const detail of (row?.holds ?? []) as { attempt?: number; candidates?: string[] }[])
    if (detail.attempt === claim.attempt) for (const sid of detail.candidates ?? []) shown.add(sid);
  return { shown, triedLater: row?.triedLater ?? false };
}
