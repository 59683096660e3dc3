// Ending an enrollment: the update and its audit entry, as a statement of its own or spliced
// into the statement that records a run's last outcome.
import type { Db } from "../db/client";
import type { Sql, Statement } from "../db/sql";
import { poolOf, stmt, withCtes } from "../db/sql";
import type { AuditRecord } from "./audit";
import { auditInsert } from "./audit";

/** An enrollment to end wherever it is, and the audit entry to write if it does end. */
export interface EnrollmentEnd {
  enrollmentId: bigint;
  status: "completed" | "exited" | "failed";
  reason: string;
  now: Date;
  /** End it only at this position (a run ending its own step). */
  expectedSeq?: number;
  audit?: AuditRecord;
}

/**
 * The CTEs that end an enrollment, `n` (its id, when it ended) and `na` (the audit entry,
 * written only then); bumping stepSeq makes any queued step job stale. Spliced into a larger
 * statement, `after` guards the end on the rest of it (e.g. on the outcome that finished the
 * run's last step): `when` is its condition, and `audited` a CTE whose audit entries come first.
 */
export function enrollmentEnd(
  end: EnrollmentEnd,
  after?: { when: Statement; audited: Statement },
): Statement[] {
  const seq = end.expectedSeq ?? null;
  // A run's own completion has no call left unfinished. An exit or a failure may come while a
  // call is under way, or about to start: a claim this statement sees may have its call-started
  // mark commit before the settling below reaches it. nextRunAt keeps the earliest start of
  // either, so the sweep comes back to what they leave (settleEnded).
  const nextRunAt =
    end.status === "completed"
      ? stmt`NULL`
      : stmt`(SELECT min(COALESCE("callStartedAt", "claimedAt")) FROM "Action"
               WHERE "enrollmentId" = ${end.enrollmentId} AND state IN ('claimed', 'calling', 'failed_retryable'))`;
  return [
    stmt`n AS (
      UPDATE "Enrollment" SET status = ${end.status}::"EnrollmentStatus", "currentStepId" = NULL, "nextRunAt" = ${nextRunAt},
        "stepSeq" = "stepSeq" + 1, "endedReason" = ${end.reason}, "endedAt" = ${end.now}, "updatedAt" = ${end.now}
      WHERE id = ${end.enrollmentId} AND status = 'active' AND (${seq}::int IS NULL OR "stepSeq" = ${seq}::int)
        AND ${after?.when ?? stmt`TRUE`}
      RETURNING id)`,
    // Reading `audited` makes Postgres write its entries before this one.
    stmt`na AS (${auditInsert(end.audit ? [end.audit] : [])}, n${after ? stmt`, ${after.audited}` : stmt``})`,
  ];
}

/**
 * Ends an enrollment (enrollmentEnd); false when it had ended or moved on already. An exit (or
 * a failure) also settles its actions that no call has started: claimed, or waiting for a
 * retry. No run is left to finish them, and they must not stay unfinished; they become
 * `skipped(exited)`, and a worker still holding such a claim finds its call-started mark
 * refused. A call already started (`calling`) is left to its outcome, and to the sweep
 * (settleEnded) for what that leaves.
 */
export async function endEnrollment(tx: Sql, end: EnrollmentEnd): Promise<boolean> {
  const settle =
    end.status === "completed"
      ? []
      : [
          stmt`s AS (
            UPDATE "Action" SET state = 'skipped', reason = ${end.status}, "nextAttemptAt" = NULL,
              "completedAt" = ${end.now}, "updatedAt" = ${end.now}
            WHERE "enrollmentId" IN (SELECT id FROM n) AND state IN ('claimed', 'failed_retryable')
            RETURNING key, "customerId", "journeyId", "stepId", "enrollmentId", state AS was)`,
          stmt`sa AS (
            INSERT INTO "AuditEntry" (kind, at, "customerId", "journeyId", "stepId", "enrollmentId", "actionKey", rule, detail)
            SELECT 'skipped', ${end.now}::timestamptz, "customerId", "journeyId", "stepId", "enrollmentId", key,
              ${end.status}::text,
              json_build_object('why', ${`the enrollment ${end.status}: ${end.reason}`}::text)
            FROM s)`,
        ];
  const [row] = await tx<{ ended: bigint }>`${withCtes(
    [...enrollmentEnd(end), ...settle],
    stmt`SELECT count(*) AS ended FROM n`,
  )}`;
  return row!.ended > 0n;
}

/**
 * endEnrollment for a run outside any transaction, with the enrollment's customer locked
 * first, as every claim locks it: a claim being made for the enrollment right now commits
 * before the end reads the actions, which then settles it. Without the lock the end would not
 * see it, leave no nextRunAt for it, and a claim whose worker then died would stay claimed.
 * A completion settles nothing and takes no lock.
 */
export async function endEnrollmentLocked(
  db: Db,
  customerId: string,
  end: EnrollmentEnd,
): Promise<boolean> {
  const pool = poolOf(db);
  if (end.status === "completed") return endEnrollment(pool.shared, end);
  return pool.tx(async (tx) => {
    await tx`SELECT 1 FROM "Customer" WHERE id = ${customerId} FOR NO KEY UPDATE`;
    return endEnrollment(tx, end);
  });
}

/**
 * What an ended enrollment left unfinished, which no run is left to finish: the sweep does it.
 *  - A call whose worker died before recording the outcome, once its lease is over, becomes
 *    `in_doubt` (call_interrupted), as a run would have made it.
 *  - A retry that a call in flight at the end asked for (`failed_retryable`), and a claim whose
 *    call never started and whose lease is over, become `skipped` with the end's status: the
 *    enrollment ended before they were sent.
 * The enrollment keeps the earliest start of what is still under way, for the next pass. Each
 * enrollment is taken by one sweep at a time (SKIP LOCKED), so concurrent sweeps share the work.
 */
export async function settleEnded(
  db: Db,
  opts: { now: Date; callLeaseMs: number; claimLeaseMs: number; workerId: string; batch: number },
): Promise<{ interrupted: number; skipped: number }> {
  const calls = new Date(opts.now.getTime() - opts.callLeaseMs);
  const claims = new Date(opts.now.getTime() - opts.claimLeaseMs);
  const [row] = await poolOf(db).sql<{ interrupted: bigint; skipped: bigint }>`
    WITH ended AS (
      SELECT id, status FROM "Enrollment"
      WHERE status IN ('exited', 'failed') AND "nextRunAt" <= ${calls}
      ORDER BY "nextRunAt" LIMIT ${opts.batch}
      FOR NO KEY UPDATE SKIP LOCKED),
    a AS (
      UPDATE "Action" SET state = 'in_doubt', reason = 'call_interrupted', "updatedAt" = ${opts.now}
      WHERE "enrollmentId" IN (SELECT id FROM ended) AND state = 'calling'
        AND COALESCE("callStartedAt", "claimedAt") <= ${calls}
      RETURNING key, "customerId", "journeyId", "stepId", "enrollmentId", attempt, "workerId"),
    k AS (
      UPDATE "Action" x SET state = 'skipped', reason = ended.status::text, "nextAttemptAt" = NULL,
        "completedAt" = ${opts.now}, "updatedAt" = ${opts.now}
      FROM ended
      WHERE x."enrollmentId" = ended.id
        AND (x.state = 'failed_retryable' OR (x.state = 'claimed' AND x."claimedAt" <= ${claims}))
      RETURNING x.key, x."customerId", x."journeyId", x."stepId", x."enrollmentId", x.reason),
    w AS (
      INSERT INTO "AuditEntry" (kind, at, "customerId", "journeyId", "stepId", "enrollmentId", "actionKey", rule, "workerId", detail)
      SELECT 'in_doubt', ${opts.now}::timestamptz, "customerId", "journeyId", "stepId", "enrollmentId", key,
        'call_interrupted', ${opts.workerId}::text,
        json_build_object('attempt', attempt, 'crashedWorker', "workerId",
          'why', 'the call outlived its lease after the enrollment had ended; found by the sweep')
      FROM a
      UNION ALL
      SELECT 'skipped', ${opts.now}::timestamptz, "customerId", "journeyId", "stepId", "enrollmentId", key,
        reason, ${opts.workerId}::text,
        json_build_object('why', 'the enrollment ' || reason || ' before it was sent; found by the sweep')
      FROM k),
    e AS (
      UPDATE "Enrollment" n SET "nextRunAt" = (
        SELECT min(COALESCE(x."callStartedAt", x."claimedAt")) FROM "Action" x
        WHERE x."enrollmentId" = n.id AND x.state IN ('claimed', 'calling')
          AND x.key NOT IN (SELECT key FROM a UNION ALL SELECT key FROM k))
      WHERE n.id IN (SELECT id FROM ended))
    SELECT (SELECT count(*) FROM a) AS interrupted, (SELECT count(*) FROM k) AS skipped`;
  return { interrupted: Number(row!.interrupted), skipped: Number(row!.skipped) };
}
