// The send-once ledger protocol of DESIGN §3, one function per database operation:
//   claimAction      one transaction, customer locked: re-check, evaluate, insert the key
//   markCallStarted  the recovery point just before the provider call
//   recordOutcome    the provider's answer, written only under the attempt's fencing token
// A conflict on the key means the intent was already handled: a suppressed duplicate.
import type { Sql, Statement } from "../db/sql";
import { poolOf, stmt, withCtes } from "../db/sql";
import type { Db } from "../db/client";
import type { ActionState, Channel } from "../generated/prisma/client";
import type { AuditRecord } from "./audit";
import { auditInsert, recordAudit } from "./audit";
import type { EnrollmentEnd } from "./enrollments";
import { enrollmentEnd } from "./enrollments";
import { UNMATCHED, triedLater } from "./provider-match";

/** One intent: the action key and what it is about. */
export interface ActionIntent {
  key: string;
  journeyId: string;
  stepId: string;
  customerId: string;
  reference: string;
  enrollmentId: bigint;
  /** The enrollment's position when the step started; a moved enrollment makes the run stale. */
  stepSeq: number;
  channel: Channel;
  eventOccurredAt: Date;
}

/** What the caller re-checks inside the claim transaction, with the customer locked. */
export type Recheck =
  | { go: true }
  | { go: false; outcome: "exited"; detail: string }
  | { go: false; outcome: "skip"; reason: string; detail: string }
  /** Not now: quiet hours, or a full cap with on_cap: delay. Nothing is inserted. */
  | { go: false; outcome: "delay"; until: Date; reason: string; detail: string };

export interface ClaimOptions {
  now: Date;
  workerId: string;
  /** A `claimed` row older than this belongs to a crashed attempt and is taken over. */
  claimLeaseMs: number;
  /** A `calling` row older than this belongs to a crashed call: in_doubt. */
  callLeaseMs: number;
  /**
   * When the channel can look a message up at the provider: how long an in-doubt action waits
   * before it is looked up (once; found → sent, absent → one more attempt).
   */
  resolveAfterMs?: number;
}

/** States after which a key is settled: a later run only records a suppressed duplicate. */
export const SETTLED: readonly ActionState[] = ["sent", "skipped", "failed_permanent", "in_doubt"];

/** A claim that settled without a provider call: what points and skips return. */
export type SettledClaim = Exclude<ClaimResult, { kind: "proceed" | "resolve" }>;

export type ClaimResult =
  | { kind: "proceed"; attempt: number; token: number }
  | { kind: "settled"; state: ActionState; reason: string | null; duplicate: boolean }
  | { kind: "wait"; until: Date; why: string }
  | { kind: "stale" }
  | { kind: "exited"; detail: string }
  /** In doubt and due for a look-up at the provider, under this token. */
  | { kind: "resolve"; token: number; attempt: number; callStartedAt: Date };

interface ActionRow {
  state: ActionState;
  reason: string | null;
  attempt: number;
  fencingToken: number;
  claimedAt: Date;
  callStartedAt: Date | null;
  nextAttemptAt: Date | null;
  workerId: string | null;
  updatedAt: Date;
  /** An earlier in-doubt attempt was looked up, not found, and released for its one retry. */
  released: boolean;
}

/**
 * Locks the customer (serialising everything that counts sends for them), re-checks that the
 * enrollment is still at this step, and reads the action row if there is one. The caller's
 * `inside` then decides under the same lock.
 */
export async function withCustomerLock<T>(
  db: Db,
  intent: Pick<ActionIntent, "key" | "customerId" | "enrollmentId" | "stepSeq">,
  inside: (tx: Sql, existing: ActionRow | undefined, aheadRows?: unknown[]) => Promise<T>,
  ahead?: Statement,
): Promise<T | { kind: "stale" }> {
  // The row read here is not locked: a call-started mark or an outcome (which take no customer
  // lock) may change it before this transaction writes it. Each write is guarded by what was
  // read; one that finds the row moved rolls the transaction back, and it runs again on what
  // is there now.
  for (let tries = 1; ; tries++) {
    try {
      return await lockedOnce(db, intent, inside, ahead);
    } catch (error) {
      if (!(error instanceof ActionMoved) || tries >= 3) throw error;
    }
  }
}

/** Thrown when the action row changed between this transaction's read and its write. */
export class ActionMoved extends Error {
  override readonly name = "ActionMoved";
  constructor(key: string) {
    super(`action ${key.slice(0, 16)}… changed while it was being claimed`);
  }
}

async function lockedOnce<T>(
  db: Db,
  intent: Pick<ActionIntent, "key" | "customerId" | "enrollmentId" | "stepSeq">,
  inside: (tx: Sql, existing: ActionRow | undefined, aheadRows?: unknown[]) => Promise<T>,
  ahead?: Statement,
): Promise<T | { kind: "stale" }> {
  // Claims of other customers in flight at the same time share this transaction's round trips.
  return poolOf(db).grouped(intent.customerId, async (tx) => {
    // One round trip (with the BEGIN): the lock, then statements that, coming after it, see
    // everything committed before the lock was granted.
    const [, rows, aheadRows] = await tx.many(
      stmt`SELECT 1 FROM "Customer" WHERE id = ${intent.customerId} FOR NO KEY UPDATE`,
      stmt`
      SELECT e.status, e."stepSeq",
        (SELECT row_to_json(a) FROM (
          SELECT state, reason, attempt, "fencingToken", "claimedAt", "callStartedAt", "nextAttemptAt",
            "workerId", "updatedAt",
            EXISTS (SELECT 1 FROM "ActionAttempt" t WHERE t."actionKey" = key AND t.outcome = 'released') AS released
          FROM "Action" WHERE key = ${intent.key}) a) AS action
      FROM (SELECT 1) one LEFT JOIN "Enrollment" e ON e.id = ${intent.enrollmentId}`,
      ...(ahead ? [ahead] : []),
    );
    const row = rows![0] as
      { status: string | null; stepSeq: number | null; action: ActionJson | null } | undefined;
    if (row?.status !== "active" || row.stepSeq !== intent.stepSeq) {
      return { kind: "stale" as const };
    }
    return inside(tx, row.action ? actionRow(row.action) : undefined, aheadRows);
  });
}

type ActionJson = {
  [K in keyof ActionRow]: ActionRow[K] extends Date | null ? string | null : ActionRow[K];
};

const date = (s: string | null) => (s === null ? null : new Date(s));

/** row_to_json gives timestamps as text. */
function actionRow(j: ActionJson): ActionRow {
  return {
    ...j,
    claimedAt: new Date(j.claimedAt!),
    callStartedAt: date(j.callStartedAt),
    nextAttemptAt: date(j.nextAttemptAt),
    updatedAt: new Date(j.updatedAt!),
  };
}

/** Claims the action for a provider call, or says why not (settled, wait, stale, exited). */
export async function claimAction(
  db: Db,
  intent: ActionIntent,
  opts: ClaimOptions,
  recheck: (tx: Sql, aheadRows?: unknown[]) => Promise<Recheck>,
  /**
   * A read the re-check needs, sent in the round trip that takes the customer lock (after the
   * lock, so it sees what the lock protects); its rows are handed to the re-check.
   */
  ahead?: Statement,
): Promise<ClaimResult> {
  return withCustomerLock(
    db,
    intent,
    async (tx, existing, aheadRows): Promise<ClaimResult> => {
      const audit = auditBase(intent, opts);
      if (existing) {
        const now = opts.now.getTime();
        switch (existing.state) {
          case "sent":
          case "skipped":
          case "failed_permanent":
          case "in_doubt":
            // Only a call in doubt is looked up; a settled one is a duplicate, whatever its call.
            if (existing.state === "in_doubt" && resolvable(existing, opts))
              return resolveWhenDue(existing, opts);
            await recordAudit(tx, {
              ...audit,
              kind: "duplicate_suppressed",
              rule: existing.state,
              detail: { state: existing.state, reason: existing.reason },
            });
            return {
              kind: "settled",
              state: existing.state,
              reason: existing.reason,
              duplicate: true,
            };
          case "claimed": {
            const expires = existing.claimedAt.getTime() + opts.claimLeaseMs;
            if (expires > now)
              return { kind: "wait", until: new Date(expires), why: "claimed by another attempt" };
            break; // a crashed attempt that never called the provider: safe to retry
          }
          case "calling": {
            const expires =
              (existing.callStartedAt ?? existing.claimedAt).getTime() + opts.callLeaseMs;
            if (expires > now)
              return { kind: "wait", until: new Date(expires), why: "provider call in progress" };
            // The call started and nobody recorded its end: the provider may have acted.
            const [moved] = await tx<{ key: string }>`
            UPDATE "Action" SET state = 'in_doubt', reason = 'call_interrupted', "updatedAt" = ${opts.now}
            WHERE key = ${intent.key} AND "fencingToken" = ${existing.fencingToken} AND state = 'calling'
            RETURNING key`;
            // Its outcome came in after all.
            if (!moved) throw new ActionMoved(intent.key);
            await recordAudit(tx, {
              ...audit,
              kind: "in_doubt",
              rule: "call_interrupted",
              detail: { attempt: existing.attempt, crashedWorker: existing.workerId },
            });
            if (resolvable(existing, opts)) {
              return resolveWhenDue({ ...existing, updatedAt: opts.now }, opts);
            }
            return {
              kind: "settled",
              state: "in_doubt",
              reason: "call_interrupted",
              duplicate: false,
            };
          }
          case "failed_retryable": {
            const due = existing.nextAttemptAt?.getTime() ?? now;
            if (due > now) return { kind: "wait", until: new Date(due), why: "retry backoff" };
            // Handed back by a person as never sent, while its run may have been looking it up:
            // looked up again before it is sent, so a message that look-up found is not sent twice.
            if (handedBack(existing) && opts.resolveAfterMs !== undefined)
              return resolveWhenDue(existing, { ...opts, resolveAfterMs: 0 });
            break;
          }
        }
      }
      const verdict = decideClaim(intent, opts, await recheck(tx, aheadRows), existing);
      if (verdict.kind === "result") {
        if (verdict.audit) await recordAudit(tx, verdict.audit);
        return verdict.result;
      }
      const { state, reason } = verdict;
      const written = await upsertAction(
        tx.last,
        intent,
        opts,
        state,
        reason,
        existing,
        verdict.audit,
      );
      return claimWritten(state, reason, written);
    },
    ahead,
  );
}

/**
 * What a claim does once its re-check has spoken: write the action row (`claimed` for a
 * provider call, `skipped` with the policy's reason), or write nothing and say why. `existing`
 * is the row of an earlier attempt being retried.
 */
export function decideClaim(
  intent: ActionIntent,
  opts: ClaimOptions,
  check: Recheck,
  existing: ActionRow | undefined,
):
  | { kind: "write"; state: "claimed" | "skipped"; reason: string | null; audit: AuditRecord }
  | { kind: "result"; result: ClaimResult; audit?: AuditRecord } {
  const audit = auditBase(intent, opts);
  if (check.go) {
    return {
      kind: "write",
      state: "claimed",
      reason: null,
      audit: {
        ...audit,
        kind: "step_claimed",
        detail: {
          attempt: (existing?.attempt ?? 0) + 1,
          ...(existing && { previous: existing.state }),
        },
      },
    };
  }
  switch (check.outcome) {
    case "exited":
      return { kind: "result", result: { kind: "exited", detail: check.detail } };
    case "delay":
      return {
        kind: "result",
        result: { kind: "wait", until: check.until, why: check.detail },
        audit: {
          ...audit,
          kind: "delayed",
          rule: check.reason,
          detail: { why: check.detail, until: check.until },
        },
      };
    case "skip":
      return {
        kind: "write",
        state: "skipped",
        reason: check.reason,
        audit: { ...audit, kind: "skipped", rule: check.reason, detail: { why: check.detail } },
      };
  }
}

/** The claim's result once its action row is written. */
export function claimWritten(
  state: "claimed" | "skipped",
  reason: string | null,
  row: { attempt: number; fencingToken: number },
): ClaimResult {
  return state === "claimed"
    ? { kind: "proceed", attempt: row.attempt, token: row.fencingToken }
    : { kind: "settled", state: "skipped", reason, duplicate: false };
}

/**
 * What a look-up settles or releases: an action in doubt, or one a person handed back
 * (`sendonce resolve --not-sent`) that no run has claimed again (in SQL; handedBack below).
 */
const LOOKED_UP = stmt`(state = 'in_doubt' OR (state = 'failed_retryable' AND reason = 'resolved_by_hand'))`;

/** What a look-up may release or hold for a person: looked up, and not held already. */
const OPEN_TO_LOOK_UP = stmt`${LOOKED_UP} AND reason IS DISTINCT FROM ${UNMATCHED}`;

/** In doubt, then released by `sendonce resolve --not-sent`, and not claimed again since. */
const handedBack = (row: Pick<ActionRow, "state" | "reason" | "callStartedAt">) =>
  row.state === "failed_retryable" &&
  row.reason === "resolved_by_hand" &&
  row.callStartedAt !== null;

/** What a provider's report needs of its action: whose it is, and whether a finder may settle it. */
export const REPORTED_ACTION = {
  customerId: true,
  journeyId: true,
  stepId: true,
  enrollmentId: true,
  channel: true,
  state: true,
  reason: true,
  attempt: true,
  fencingToken: true,
} as const;

/**
 * What recordFoundSent takes: an action in doubt, or one a person settled as never sent
 * (handed back and not claimed again, or ended not_sent): the provider is the better witness.
 */
export const openToFinding = (a: { state: string; reason: string | null }) =>
  a.state === "in_doubt" ||
  (a.state === "failed_retryable" && a.reason === "resolved_by_hand") ||
  (a.state === "failed_permanent" && a.reason === "not_sent");

/** Due a look-up: in doubt, not looked up and released before, nor held for a person. */
function resolvable(row: ActionRow, opts: ClaimOptions): boolean {
  return (
    opts.resolveAfterMs !== undefined &&
    !row.released &&
    row.callStartedAt !== null &&
    row.reason !== UNMATCHED
  );
}

function resolveWhenDue(row: ActionRow, opts: ClaimOptions): ClaimResult {
  const due = row.updatedAt.getTime() + opts.resolveAfterMs!;
  if (due > opts.now.getTime()) {
    return { kind: "wait", until: new Date(due), why: "in doubt: to be looked up at the provider" };
  }
  return {
    kind: "resolve",
    token: row.fencingToken,
    attempt: row.attempt,
    callStartedAt: row.callStartedAt!,
  };
}

/** An in-doubt send found to have been sent, and by whom: what its action and audit entry say. */
export interface FoundSent {
  key: string;
  /** The token of the attempt found out: a newer attempt, or another outcome, makes it stale. */
  token: number;
  /** The provider's id of the message; null keeps the one the action has. */
  providerId: string | null;
  /** `found_at_provider` (a look-up, a delivery event) or `resolved_by_hand`. */
  reason: "found_at_provider" | "resolved_by_hand";
  /** Who or what found it out, as explain shows it. */
  resolvedBy: string;
  now: Date;
  workerId?: string;
}

/**
 * Records an in-doubt send as sent, whoever found it out (a worker's look-up, reconcile, a
 * person): the action, dated when its call started (when the provider took it, which resend
 * policies count from); its attempt, as a provider call confirmed (what duplicate-send counts
 * read); and one audit entry. An action a person settled as never sent (`sendonce resolve
 * --not-sent`: handed back and not claimed again, or ended not_sent) is taken too: the provider
 * is the better witness, and a retry or a resend by hand would send it twice. False when the
 * action has moved on. In a transaction of its own, or in the caller's when given one.
 */
export async function recordFoundSent(on: Db | Sql, f: FoundSent): Promise<boolean> {
  return typeof on === "function" ? foundSent(on, f) : poolOf(on).tx((tx) => foundSent(tx, f));
}

async function foundSent(tx: Sql, f: FoundSent): Promise<boolean> {
  const [found] = await tx<{
    attempt: number;
    providerId: string | null;
    customerId: string;
    journeyId: string;
    stepId: string;
    enrollmentId: bigint;
  }>`
    WITH a AS (
      UPDATE "Action" SET state = 'sent', reason = ${f.reason},
        "providerId" = COALESCE(${f.providerId}::text, "providerId"),
        "completedAt" = COALESCE("callStartedAt", ${f.now}), "updatedAt" = ${f.now}
      WHERE key = ${f.key} AND "fencingToken" = ${f.token}
        AND (${LOOKED_UP} OR (state = 'failed_permanent' AND reason = 'not_sent'))
      RETURNING key, attempt, "providerId", "customerId", "journeyId", "stepId", "enrollmentId"),
    t AS (
      UPDATE "ActionAttempt" t SET outcome = 'sent', "providerId" = COALESCE(a."providerId", t."providerId"),
        "finishedAt" = COALESCE(t."finishedAt", ${f.now})
      FROM a WHERE t."actionKey" = a.key AND t.attempt = a.attempt)
    SELECT attempt, "providerId", "customerId", "journeyId", "stepId", "enrollmentId" FROM a`;
  if (!found) return false;
  await recordAudit(tx, {
    kind: "sent",
    at: f.now,
    customerId: found.customerId,
    journeyId: found.journeyId,
    stepId: found.stepId,
    enrollmentId: found.enrollmentId,
    actionKey: f.key,
    rule: f.reason,
    ...(f.workerId && { workerId: f.workerId }),
    detail: { attempt: found.attempt, providerId: found.providerId, resolvedBy: f.resolvedBy },
  });
  return true;
}

/**
 * The provider's list has no message with the attempt's body, but has one to that number from
 * the time of the call that nothing else explains (see unexplainedMessages): Twilio may have
 * changed the body. Releasing the action could send the text twice, so it stays in doubt, held
 * for a person (`sendonce resolve --sent` or `--not-sent`), with the messages' SIDs in its
 * audit entry; no run looks it up or releases it again. A status callback still settles it.
 * One a person handed back as never sent goes back in doubt so, for messages they were not
 * shown (the caller leaves out those an earlier hold named). False when the action has moved
 * on.
 */
export async function holdInDoubt(
  db: Db,
  intent: ActionIntent,
  token: number,
  candidates: string[],
  opts: Pick<ClaimOptions, "now" | "workerId">,
): Promise<boolean> {
  return poolOf(db).tx(async (tx) => {
    const [row] = await tx<{ attempt: number }>`
      UPDATE "Action" SET state = 'in_doubt', reason = ${UNMATCHED}, "nextAttemptAt" = NULL,
        "updatedAt" = ${opts.now}
      WHERE key = ${intent.key} AND "fencingToken" = ${token} AND ${OPEN_TO_LOOK_UP}
        AND NOT ${triedLater(intent, token)}
      RETURNING attempt`;
    if (!row) return false;
    // Handed back as never sent: the attempt is no longer released, but in doubt again.
    const handedBack = await tx`
      UPDATE "ActionAttempt" SET outcome = NULL
      WHERE "actionKey" = ${intent.key} AND attempt = ${row.attempt} AND outcome = 'released'
      RETURNING 1`;
    await recordAudit(tx, {
      ...auditBase(intent, opts),
      kind: "in_doubt",
      rule: UNMATCHED,
      detail: {
        attempt: row.attempt,
        candidates,
        ...(handedBack.length > 0 && { handedBack: true }),
        why: `no message with its body, but ${candidates.join(", ")} to its number from the time of the call (Twilio may have changed the body)${handedBack.length > 0 ? ", though a person had said it was not sent" : ""}: sendonce resolve --sent --provider-id SID, or --not-sent`,
      },
    });
    return true;
  });
}

/**
 * The provider does not have the message: release the in-doubt action (or the one a person
 * handed back as never sent) for one more attempt, re-checking consent and policies first, as
 * any retry does.
 */
export async function releaseInDoubt(
  db: Db,
  intent: ActionIntent,
  token: number,
  opts: ClaimOptions,
  recheck: (tx: Sql) => Promise<Recheck>,
): Promise<ClaimResult> {
  return withCustomerLock(db, intent, async (tx): Promise<ClaimResult> => {
    const [row] = await tx<ActionRow>`
      SELECT state, reason, attempt, "fencingToken", "claimedAt", "callStartedAt", "nextAttemptAt", "workerId",
        "updatedAt", false AS released
      FROM "Action" WHERE key = ${intent.key} AND "fencingToken" = ${token} AND ${OPEN_TO_LOOK_UP}
      FOR NO KEY UPDATE`;
    if (!row) return { kind: "stale" };
    await tx.run`
      UPDATE "ActionAttempt" SET outcome = 'released' WHERE "actionKey" = ${intent.key} AND attempt = ${row.attempt}`;
    await recordAudit(tx, {
      ...auditBase(intent, opts),
      kind: "released",
      rule: "not_found_at_provider",
      detail: { attempt: row.attempt },
    });
    const check = await recheck(tx);
    if (!check.go && check.outcome === "delay") {
      // A delay (quiet hours, a full cap) keeps the action released but unclaimed until then.
      await upsertAction(tx, intent, opts, "claimed", null, row);
      await tx.run`
        UPDATE "Action" SET state = 'failed_retryable', "nextAttemptAt" = ${check.until} WHERE key = ${intent.key}`;
      return { kind: "wait", until: check.until, why: check.detail };
    }
    const verdict = decideClaim(intent, opts, check, row);
    if (verdict.kind === "result") return verdict.result;
    const { state, reason } = verdict;
    const written = await upsertAction(tx.last, intent, opts, state, reason, row, verdict.audit);
    return claimWritten(state, reason, written);
  });
}

/**
 * Inserts the action, or starts a new attempt on it under a new fencing token; the audit entry
 * goes in with it, in the same statement. Given `tx.last`, the transaction commits with it.
 */
async function upsertAction(
  tx: Sql["last"],
  a: ActionIntent,
  opts: ClaimOptions,
  state: "claimed" | "skipped",
  reason: string | null,
  existing: ActionRow | undefined,
  audit?: AuditRecord,
): Promise<{ attempt: number; fencingToken: number }> {
  const completedAt = state === "skipped" ? opts.now : null;
  const audits = auditInsert(audit ? [audit] : []);
  if (existing) {
    const [row] = await tx<{ attempt: number; fencingToken: number }>`
      WITH u AS (
        UPDATE "Action" SET state = ${state}::"ActionState", reason = ${reason},
          attempt = attempt + ${state === "claimed" ? 1 : 0}, "fencingToken" = "fencingToken" + 1,
          "workerId" = ${opts.workerId}, "claimedAt" = ${opts.now}, "callStartedAt" = NULL,
          "nextAttemptAt" = NULL, "completedAt" = ${completedAt}, "updatedAt" = ${opts.now}
        WHERE key = ${a.key} AND "fencingToken" = ${existing.fencingToken}
          AND state = ${existing.state}::"ActionState"
        RETURNING attempt, "fencingToken"),
      w AS (${audits}, u)
      SELECT attempt, "fencingToken" FROM u`;
    // A call-started mark or an outcome of the attempt being taken over got there first: the
    // attempt is alive after all, or done.
    if (!row) throw new ActionMoved(a.key);
    return row;
  }
  const row = newActionRow(state);
  await tx`WITH i AS (${actionInsert(a, opts, state, reason)}) ${audits}`;
  return row;
}

/** A new action row's attempt and fencing token. */
export function newActionRow(state: "claimed" | "skipped"): {
  attempt: number;
  fencingToken: number;
} {
  return { attempt: state === "claimed" ? 1 : 0, fencingToken: 1 };
}

/** The insert of a new action row, to splice into a larger statement. */
export function actionInsert(
  a: ActionIntent,
  opts: Pick<ClaimOptions, "now" | "workerId">,
  state: "claimed" | "skipped",
  reason: string | null,
): Statement {
  const completedAt = state === "skipped" ? opts.now : null;
  const { attempt, fencingToken } = newActionRow(state);
  return stmt`
    INSERT INTO "Action" (key, "journeyId", "stepId", "customerId", reference, "enrollmentId", channel,
                          state, reason, attempt, "fencingToken", "workerId", "eventOccurredAt",
                          "claimedAt", "completedAt", "updatedAt")
    VALUES (${a.key}, ${a.journeyId}, ${a.stepId}, ${a.customerId}, ${a.reference}, ${a.enrollmentId},
            ${a.channel}::"Channel", ${state}::"ActionState", ${reason}, ${attempt},
            ${fencingToken}, ${opts.workerId}, ${a.eventOccurredAt}, ${opts.now},
            ${completedAt}, ${opts.now})`;
}

/**
 * The recovery point: from here on a crash means the provider may have acted, so the action
 * becomes in_doubt instead of being retried. False when a newer attempt took the action over.
 */
export async function markCallStarted(
  db: Db,
  key: string,
  token: number,
  workerId: string,
  now: Date,
  /** Where the message goes and, for a text, its body's hash: what a look-up matches. */
  sent?: { address: string; contentHash?: string },
  /**
   * The claim lease: a claim older than this may have been decided on facts that changed
   * (a revoked consent, quiet hours begun), so its call does not start; the run claims again.
   */
  leaseMs?: number,
): Promise<boolean> {
  const fresh = leaseMs === undefined ? null : new Date(now.getTime() - leaseMs);
  const rows = await poolOf(db).shared`
    WITH a AS (
      UPDATE "Action" SET state = 'calling', "callStartedAt" = ${now}, "updatedAt" = ${now}
      WHERE key = ${key} AND "fencingToken" = ${token} AND state = 'claimed'
        AND (${fresh}::timestamptz IS NULL OR "claimedAt" > ${fresh}::timestamptz)
      RETURNING key, attempt, "fencingToken")
    INSERT INTO "ActionAttempt" ("actionKey", attempt, "fencingToken", "workerId", "startedAt",
                                 address, "contentHash")
    SELECT key, attempt, "fencingToken", ${workerId}, ${now}, ${sent?.address ?? null},
      ${sent?.contentHash ?? null} FROM a
    RETURNING 1`;
  return rows.length === 1;
}

export type Outcome =
  | { state: "sent"; providerId: string }
  | { state: "failed_retryable"; error: string; code?: string; nextAttemptAt: Date }
  | { state: "failed_permanent"; error: string; code?: string; reason: string }
  | { state: "in_doubt"; error: string; code?: string };

/**
 * Records the provider's answer under the attempt's fencing token: a stale worker that wakes
 * up late cannot overwrite a newer attempt. An in_doubt row set by another worker while this
 * call was still running is resolved by this answer when it settles it (sent, or refused for
 * good). A "try later" for such a row says the message was not sent, but the run that gave the
 * call up has moved on. If that run will look the message up (`lookUp`, the enrollment still
 * on the step, no earlier release), the row stays in_doubt and the look-up releases it for its
 * retry; otherwise nothing would retry it, and it is settled known unsent: `skipped` with the
 * end's status when the enrollment has ended, else `failed_permanent(retry_missed)`, for
 * review. False when the token is stale or the answer was not taken; "not_retried" when a "try
 * later" was taken so.
 */
export async function recordOutcome(
  db: Db,
  intent: ActionIntent,
  claim: { token: number; attempt: number },
  outcome: Outcome,
  opts: Pick<ClaimOptions, "now" | "workerId"> & { lookUp?: boolean },
  /** An enrollment to end with the outcome, only if the outcome is recorded. */
  then?: EnrollmentEnd,
): Promise<boolean | "not_retried"> {
  const providerId = outcome.state === "sent" ? outcome.providerId : null;
  const error = outcome.state === "sent" ? null : outcome.error;
  const reason =
    outcome.state === "failed_permanent"
      ? outcome.reason
      : outcome.state === "in_doubt"
        ? "unknown_outcome"
        : null;
  const base = auditBase(intent, opts);
  const ignored = auditInsert([
    {
      ...base,
      kind: "stale_outcome_ignored",
      detail: { token: claim.token, outcome: outcome.state },
    },
  ]);
  const ctes =
    outcome.state === "failed_retryable"
      ? retryCtes(intent, claim, outcome, opts)
      : [
          // An in_doubt row (another worker gave this call up) takes only an answer that
          // settles it.
          stmt`a AS (
        UPDATE "Action" SET state = ${outcome.state}::"ActionState", reason = ${reason},
          "providerId" = ${providerId}, "lastError" = ${error}, "nextAttemptAt" = NULL,
          "completedAt" = ${opts.now}, "updatedAt" = ${opts.now}
        WHERE key = ${intent.key} AND "fencingToken" = ${claim.token}
          AND (state = 'calling' OR (state = 'in_doubt' AND ${outcome.state !== "in_doubt"}))
        RETURNING key, attempt, state)`,
          stmt`w AS (${auditInsert([outcomeAudit(base, outcome, claim.attempt)])}, a RETURNING id)`,
        ];
  // One statement, so atomic without a transaction: the action, its attempt and the audit (and
  // the enrollment's end).
  const [row] = await poolOf(db).shared<{ n: bigint; retried: bigint }>`${withCtes(
    [
      ...ctes,
      stmt`t AS (
        UPDATE "ActionAttempt" t SET outcome = ${outcome.state}, "providerId" = ${providerId},
          error = ${error}, "finishedAt" = ${opts.now}
        FROM a WHERE t."actionKey" = a.key AND t.attempt = a.attempt)`,
      stmt`s AS (${ignored} WHERE NOT EXISTS (SELECT 1 FROM a))`,
      ...(then
        ? enrollmentEnd(then, { when: stmt`EXISTS (SELECT 1 FROM a)`, audited: stmt`w` })
        : []),
    ],
    stmt`SELECT count(*) AS n, count(*) FILTER (WHERE a.state = 'failed_retryable') AS retried FROM a`,
  )}`;
  if (row!.n === 0n) return false;
  return outcome.state === "failed_retryable" && row!.retried === 0n ? "not_retried" : true;
}

/**
 * The CTEs `a` and `w` of a "try later": `failed_retryable` over the call, or known unsent
 * over an in_doubt row that no run will look up or retry (see recordOutcome).
 */
function retryCtes(
  intent: ActionIntent,
  claim: { token: number; attempt: number },
  outcome: Extract<Outcome, { state: "failed_retryable" }>,
  opts: Pick<ClaimOptions, "now" | "workerId"> & { lookUp?: boolean },
): Statement[] {
  const base = auditBase(intent, opts);
  const retry = auditInsert([outcomeAudit(base, outcome, claim.attempt)]);
  const missed = auditInsert([
    {
      ...base,
      kind: "failed_permanent",
      rule: "retry_missed",
      detail: {
        attempt: claim.attempt,
        error: outcome.error,
        code: outcome.code,
        why: "the provider said try later after the call was given up as in doubt, and its run had moved on",
      },
    },
  ]);
  // The run that gave the call up looks the message up later, and releases it for a retry.
  const lookedUp = opts.lookUp
    ? stmt`(e.status = 'active' AND e."currentStepId" = x."stepId" AND x.reason IS DISTINCT FROM ${UNMATCHED}
        AND NOT EXISTS (SELECT 1 FROM "ActionAttempt" r WHERE r."actionKey" = x.key AND r.outcome = 'released'))`
    : stmt`FALSE`;
  return [
    stmt`a AS (
      UPDATE "Action" x SET
        state = (CASE WHEN x.state = 'calling' THEN 'failed_retryable'
                      WHEN e.status <> 'active' THEN 'skipped' ELSE 'failed_permanent' END)::"ActionState",
        reason = CASE WHEN x.state = 'calling' THEN NULL
                      WHEN e.status <> 'active' THEN e.status::text ELSE 'retry_missed' END,
        "providerId" = NULL, "lastError" = ${outcome.error},
        "nextAttemptAt" = CASE WHEN x.state = 'calling' THEN ${outcome.nextAttemptAt}::timestamptz END,
        "completedAt" = CASE WHEN x.state = 'calling' THEN NULL ELSE ${opts.now}::timestamptz END,
        "updatedAt" = ${opts.now}
      FROM "Enrollment" e
      WHERE x.key = ${intent.key} AND x."fencingToken" = ${claim.token} AND e.id = x."enrollmentId"
        AND (x.state = 'calling' OR (x.state = 'in_doubt' AND NOT ${lookedUp}))
      RETURNING x.key, x.attempt, x.state, x.reason, x."customerId", x."journeyId", x."stepId", x."enrollmentId")`,
    stmt`w AS (${retry}, a WHERE a.state = 'failed_retryable' RETURNING id)`,
    stmt`m AS (${missed}, a WHERE a.state = 'failed_permanent')`,
    stmt`k AS (
      INSERT INTO "AuditEntry" (kind, at, "customerId", "journeyId", "stepId", "enrollmentId", "actionKey", rule, "workerId", detail)
      SELECT 'skipped', ${opts.now}::timestamptz, "customerId", "journeyId", "stepId", "enrollmentId", key, reason,
        ${opts.workerId}::text,
        json_build_object('why', 'the provider said try later after the call was given up as in doubt; the enrollment had ended')
      FROM a WHERE a.state = 'skipped')`,
  ];
}

function outcomeAudit(
  base: Omit<AuditRecord, "kind">,
  outcome: Outcome,
  attempt: number,
): AuditRecord {
  switch (outcome.state) {
    case "sent":
      return { ...base, kind: "sent", detail: { attempt, providerId: outcome.providerId } };
    case "failed_retryable":
      return {
        ...base,
        kind: "failed_retryable",
        detail: {
          attempt,
          error: outcome.error,
          code: outcome.code,
          nextAttemptAt: outcome.nextAttemptAt,
        },
      };
    case "failed_permanent":
      return {
        ...base,
        kind: "failed_permanent",
        rule: outcome.reason,
        detail: { attempt, error: outcome.error, code: outcome.code },
      };
    case "in_doubt":
      return {
        ...base,
        kind: "in_doubt",
        rule: "unknown_outcome",
        detail: { attempt, error: outcome.error, code: outcome.code },
      };
  }
}

export function auditBase(
  a: Pick<ActionIntent, "key" | "journeyId" | "stepId" | "customerId" | "enrollmentId">,
  opts: Pick<ClaimOptions, "now" | "workerId">,
): Omit<AuditRecord, "kind"> {
  return {
    at: opts.now,
    customerId: a.customerId,
    journeyId: a.journeyId,
    stepId: a.stepId,
    enrollmentId: a.enrollmentId,
    actionKey: a.key,
    workerId: opts.workerId,
  };
}
