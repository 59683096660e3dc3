// The ledger under measure: claims straight through src/ledger/actions.ts, synthetic growth
// to a given number of actions, and what the ledger takes on disk.
import pg from "pg";
import type { Db } from "../../src/db/client";
import { actionKey } from "../../src/engine/keys";
import { claimAction } from "../../src/ledger/actions";

export const percentile = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))]!;

/** A plain connection in the bench schema, for set-up statements. */
async function admin(dbUrl: string, schema: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: dbUrl.replace(/\?schema=.*/, "") });
  await client.connect();
  await client.query(`SET search_path TO "${schema}"`);
  return client;
}

export interface ClaimStats {
  perSecond: number;
  p50: number;
  p99: number;
}

/**
 * How many claims run before the measured ones: the first compile code and cold pages. V8 has
 * not finished optimising the claim path after 200 (measured: p50 0.88 ms and p99 4.3–5.0 ms
 * after 200, 0.65 ms and 3.5–3.7 ms after 1,000, on the same ledger, interleaved).
 */
const WARM_UP = 1_000;

/**
 * `count` first claims on fresh enrollments, `concurrency` at a time, after a warm-up of
 * WARM_UP claims one at a time, as each pipeline run has its own warm-up.
 */
export async function claims(
  db: Db,
  dbUrl: string,
  schema: string,
  count: number,
  concurrency: number,
  tag: string,
): Promise<ClaimStats> {
  const client = await admin(dbUrl, schema);
  const total = WARM_UP + count;
  await client.query(
    `INSERT INTO "Customer" (id, "updatedAt") SELECT 'cl_${tag}_' || g, now() FROM generate_series(0, ${total - 1}) g`,
  );
  const event = await client.query<{ id: string }>(
    `INSERT INTO "Event" (source, "eventId", type, "customerId", "occurredAt", "payloadHash") VALUES ('bench', 'claim_${tag}', 'x', 'cl_${tag}_0', now(), 'h') RETURNING id`,
  );
  const enrollments = await client.query<{ id: string; customerId: string }>(
    `INSERT INTO "Enrollment" ("journeyId", "journeyVersion", "customerId", reference, "triggerEventId", status, "currentStepId", "updatedAt")
     SELECT 'bench', 'v', 'cl_${tag}_' || g, '', ${event.rows[0]!.id}, 'active', 'note', now() FROM generate_series(0, ${total - 1}) g RETURNING id, "customerId"`,
  );
  await client.end();
  const claim = async (e: { id: string; customerId: string }) => {
    const identity = {
      journeyId: "bench",
      stepId: `claim_${tag}`,
      customerId: e.customerId,
      reference: "",
    };
    const result = await claimAction(
      db,
      {
        ...identity,
        key: actionKey(identity),
        enrollmentId: BigInt(e.id),
        stepSeq: 0,
        channel: "email",
        eventOccurredAt: new Date(),
      },
      { now: new Date(), workerId: "bench", claimLeaseMs: 30_000, callLeaseMs: 60_000 },
      () => Promise.resolve({ go: true }),
    );
    if (result.kind !== "proceed") throw new Error(`claim ${tag}: ${result.kind}, not proceed`);
  };
  for (const e of enrollments.rows.slice(0, WARM_UP)) await claim(e);
  const measured = enrollments.rows.slice(WARM_UP);
  const latencies: number[] = [];
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < measured.length) {
        const e = measured[next++]!;
        const t = performance.now();
        await claim(e);
        latencies.push(performance.now() - t);
      }
    }),
  );
  return {
    perSecond: count / ((performance.now() - started) / 1000),
    p50: percentile(latencies, 0.5),
    p99: percentile(latencies, 0.99),
  };
}

/**
 * Grows the ledger to `total` actions with sent ones as a long-running deployment has them:
 * spread over 100 k customers, each with its attempt and its audit entry, then ANALYZEs them.
 */
export async function growLedgerTo(dbUrl: string, schema: string, total: number): Promise<void> {
  const client = await admin(dbUrl, schema);
  const missing = total - (await countActions(client));
  if (missing > 0) {
    await client.query(
      `INSERT INTO "Customer" (id, "updatedAt") SELECT 'fill_' || g, now() FROM generate_series(0, 99999) g ON CONFLICT DO NOTHING`,
    );
    const event = await client.query<{ id: string }>(
      `INSERT INTO "Event" (source, "eventId", type, "customerId", "occurredAt", "payloadHash")
       VALUES ('bench', 'fill_' || gen_random_uuid(), 'fill', 'fill_0', now(), 'h') RETURNING id`,
    );
    const enrollment = await client.query<{ id: string }>(
      `INSERT INTO "Enrollment" ("journeyId", "journeyVersion", "customerId", reference, "triggerEventId", status, "updatedAt")
       VALUES ('filler', 'v', 'fill_0', gen_random_uuid()::text, $1, 'completed', now()) RETURNING id`,
      [event.rows[0]!.id],
    );
    const enrollmentId = enrollment.rows[0]!.id;
    for (let done = 0; done < missing; done += 100_000) {
      const batch = Math.min(100_000, missing - done);
      await client.query(
        `WITH a AS (
           INSERT INTO "Action" (key, "journeyId", "stepId", "customerId", reference, "enrollmentId", channel, state,
                                 attempt, "fencingToken", "claimedAt", "callStartedAt", "completedAt", "updatedAt", "providerId")
           SELECT encode(sha256(('fill' || g || random())::bytea), 'hex'), 'filler', 'step_' || (g % 20),
                  'fill_' || (g % 100000), 'r' || g, $1, 'email', 'sent', 1, 1,
                  now() - (g || ' seconds')::interval, now(), now(), now(), 'p' || g
           FROM generate_series(1, ${batch}) g
           RETURNING key, "customerId"),
         t AS (
           INSERT INTO "ActionAttempt" ("actionKey", attempt, "fencingToken", "workerId", "startedAt", "finishedAt", outcome, "providerId")
           SELECT key, 1, 1, 'fill', now(), now(), 'sent', 'p' FROM a)
         INSERT INTO "AuditEntry" (kind, at, "customerId", "journeyId", "actionKey", "workerId", detail)
         SELECT 'sent', now(), "customerId", 'filler', key, 'fill', '{"attempt":1}' FROM a`,
        [enrollmentId],
      );
    }
    // Only what was filled: an ANALYZE of the one-row Event and Enrollment tables would give
    // the workers' prepared statements plans for one-row tables (a scan), kept until the next
    // ANALYZE — not what a deployment with a ledger this size has. VACUUM and a CHECKPOINT
    // too: a ledger that grew to this size has long been vacuumed and written out, while
    // autovacuum's first pass over a million freshly loaded rows, and the checkpoints writing
    // them, would otherwise run during the timed pipeline.
    await client.query(`VACUUM ANALYZE "Customer", "Action", "ActionAttempt", "AuditEntry"`);
    await client.query("CHECKPOINT");
  }
  await client.end();
}

async function countActions(client: pg.Client): Promise<number> {
  const { rows } = await client.query<{ n: string }>(`SELECT count(*) AS n FROM "Action"`);
  return Number(rows[0]!.n);
}

/** How many actions the schema's ledger holds. */
export async function actionsIn(dbUrl: string, schema: string): Promise<number> {
  const client = await admin(dbUrl, schema);
  try {
    return await countActions(client);
  } finally {
    await client.end();
  }
}

/** Empties the schema's ledger, events and customers (journey versions stay). */
export async function emptyLedger(dbUrl: string, schema: string): Promise<void> {
  const client = await admin(dbUrl, schema);
  await client.query(
    `TRUNCATE "AuditEntry", "ActionAttempt", "PointsEntry", "PointsBalance", "Action", "Enrollment",
              "EventDuplicate", "Event", "Consent", "Customer" CASCADE`,
  );
  await client.end();
}

/** Bytes on disk of the ledger (actions and attempts) and of it with the audit trail. */
export async function ledgerSize(
  dbUrl: string,
  schema: string,
): Promise<{ actions: number; ledgerBytes: number; withAuditBytes: number }> {
  const client = await admin(dbUrl, schema);
  await client.query(`VACUUM ANALYZE "Action", "ActionAttempt", "AuditEntry"`);
  const { rows } = await client.query<{ n: string; ledger: string; audit: string }>(
    `SELECT (SELECT count(*) FROM "Action") AS n,
            pg_total_relation_size('"Action"') + pg_total_relation_size('"ActionAttempt"') AS ledger,
            pg_total_relation_size('"AuditEntry"') AS audit`,
  );
  await client.end();
  const r = rows[0]!;
  return {
    actions: Number(r.n),
    ledgerBytes: Number(r.ledger),
    withAuditBytes: Number(r.ledger) + Number(r.audit),
  };
}

/** Event-to-send latency of the actions claimed since `since`, from the ledger's own times. */
export async function sendLatency(
  dbUrl: string,
  schema: string,
  since: Date,
): Promise<{ p50: number; p99: number }> {
  const client = await admin(dbUrl, schema);
  const { rows } = await client.query<{ p50: number; p99: number }>(
    `SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50, percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99
     FROM (SELECT extract(epoch FROM "completedAt" - "eventOccurredAt") * 1000 AS ms FROM "Action"
           WHERE "journeyId" = 'bench' AND "claimedAt" >= $1 AND state = 'sent') s`,
    [since],
  );
  await client.end();
  return { p50: Number(rows[0]!.p50), p99: Number(rows[0]!.p99) };
}
