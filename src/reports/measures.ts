// The measures that prove (or disprove) the guarantee, read from the ledger, the event log and
// the audit trail: what `sendonce report` prints and `/metrics` exports.
import type { Db } from "../db/client";
import { Prisma } from "../generated/prisma/client";

export interface Scope {
  since: Date;
  journeyId?: string;
}

export interface ActionGroup {
  journeyId: string;
  stepId: string;
  channel: string;
  /** The source of the event that started the enrollment. */
  source: string;
  state: string;
  reason: string | null;
  count: number;
}

export interface Latency {
  count: number;
  p50: number | null;
  p95: number | null;
  p99: number | null;
}

export interface Measures {
  since: string;
  journeyId: string | null;
  /** With a journey: the event types it enters on, which the events are narrowed to. */
  eventTypes: string[] | null;
  events: { source: string; received: number; duplicates: number; conflicts: number }[];
  idempotentReplays: number;
  actions: ActionGroup[];
  suppressedDuplicates: { journeyId: string; stepId: string; count: number }[];
  /** Keys the provider was asked to send, and confirmed, more than once. Must be empty. */
  duplicateSends: { key: string; sends: number }[];
  skipsByReason: Record<string, number>;
  delaysByReason: Record<string, number>;
  retries: { retried: number; succeeded: number; successRate: number | null };
  inDoubt: number;
  reconciliationMismatches: Record<string, number>;
  /** From the event's arrival to its send, in milliseconds, over sent email and SMS. */
  latency: Latency & {
    byChannel: Record<string, Latency>;
    byJourney: Record<string, Latency>;
    byStep: Record<string, Latency>;
    bySource: Record<string, Latency>;
  };
  /** Sends per event-to-send latency bucket (upper bound in ms; null: above the last). */
  latencyHistogram: { upToMs: number | null; count: number }[];
  /** Actions per hour by outcome, for the chart. */
  timeline: { hour: string; state: string; count: number }[];
  funnel: {
    journeyId: string;
    enrolled: number;
    steps: { stepId: string; sent: number; skipped: number; other: number }[];
  }[];
}

/**
 * Where a send's latency starts (over Event e and Enrollment n): the event's arrival, queueing
 * included; or its enrollment when that came after the event was processed (a backfill enrolls
 * events processed long before: their sends are not weeks late). Live intake enrolls as it
 * marks the event processed.
 */
const SENT_FROM = Prisma.raw(
  `CASE WHEN n."enrolledAt" > e."processedAt" THEN n."enrolledAt" ELSE e."receivedAt" END`,
);

/** Latency bucket bounds, in milliseconds: 100 ms to an hour. */
const LATENCY_BUCKETS = [
  100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000, 3_600_000,
];

export async function collectMeasures(db: Db, scope: Scope): Promise<Measures> {
  const { since } = scope;
  const journey = scope.journeyId ?? null;
  const [
    events,
    replays,
    actions,
    suppressed,
    duplicateSends,
    delays,
    retries,
    mismatches,
    latency,
    timeline,
    enrolled,
    histogram,
    triggers,
    inDoubtNow,
  ] = await Promise.all([
    // A journey's events are those of the types it enters on, in any version it ran; a
    // redelivery counts under the type of the event first stored with its id.
    db.$queryRaw<{ source: string; received: bigint; duplicates: bigint; conflicts: bigint }[]>`
        WITH types AS (
          SELECT DISTINCT definition->'trigger'->>'event' AS type FROM "JourneyVersion" WHERE "journeyId" = ${journey})
        SELECT source, sum(received)::bigint AS received, sum(duplicates)::bigint AS duplicates, sum(conflicts)::bigint AS conflicts FROM (
          SELECT source, count(*) AS received, 0 AS duplicates, 0 AS conflicts FROM "Event"
          WHERE "receivedAt" >= ${since} AND (${journey}::text IS NULL OR type IN (SELECT type FROM types))
          GROUP BY source
          UNION ALL
          SELECT d.source, 0, count(*) FILTER (WHERE d.kind = 'duplicate'), count(*) FILTER (WHERE d.kind = 'conflict')
          FROM "EventDuplicate" d
          WHERE d."receivedAt" >= ${since} AND (${journey}::text IS NULL OR EXISTS (
            SELECT 1 FROM "Event" e WHERE e.source = d.source AND e."eventId" = d."eventId" AND e.type IN (SELECT type FROM types)))
          GROUP BY d.source
        ) t GROUP BY source ORDER BY source`,
    db.auditEntry.count({ where: { kind: "idempotent_replay", at: { gte: since } } }),
    db.$queryRaw<(Omit<ActionGroup, "count"> & { count: bigint })[]>`
        SELECT a."journeyId", a."stepId", a.channel::text AS channel, e.source, a.state::text AS state, a.reason, count(*) AS count
        FROM "Action" a JOIN "Enrollment" n ON n.id = a."enrollmentId" JOIN "Event" e ON e.id = n."triggerEventId"
        WHERE a."claimedAt" >= ${since} AND (${journey}::text IS NULL OR a."journeyId" = ${journey})
        GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 5, 6, 4`,
    db.$queryRaw<{ journeyId: string; stepId: string; count: bigint }[]>`
        SELECT "journeyId", "stepId", count(*) AS count FROM "AuditEntry"
        WHERE kind = 'duplicate_suppressed' AND at >= ${since} AND (${journey}::text IS NULL OR "journeyId" = ${journey})
        GROUP BY 1, 2 ORDER BY 1, 2`,
    db.$queryRaw<{ key: string; sends: bigint }[]>`
        SELECT t."actionKey" AS key, count(*) AS sends FROM "ActionAttempt" t JOIN "Action" a ON a.key = t."actionKey"
        WHERE t.outcome = 'sent' AND a."claimedAt" >= ${since} AND (${journey}::text IS NULL OR a."journeyId" = ${journey})
        GROUP BY 1 HAVING count(*) > 1`,
    db.$queryRaw<{ rule: string; count: bigint }[]>`
        SELECT rule, count(*) AS count FROM "AuditEntry"
        WHERE kind = 'delayed' AND at >= ${since} AND (${journey}::text IS NULL OR "journeyId" = ${journey}) GROUP BY 1`,
    db.$queryRaw<{ retried: bigint; succeeded: bigint }[]>`
        SELECT count(*) AS retried, count(*) FILTER (WHERE state = 'sent') AS succeeded FROM "Action"
        WHERE attempt > 1 AND "claimedAt" >= ${since} AND (${journey}::text IS NULL OR "journeyId" = ${journey})`,
    // Each run of reconcile records every mismatch still open: one is counted once, however
    // many runs listed it.
    db.$queryRaw<{ rule: string; count: bigint }[]>`
        SELECT rule, count(DISTINCT COALESCE("actionKey", "customerId", detail->>'detail')) AS count FROM "AuditEntry" m
        WHERE kind = 'reconcile_mismatch' AND at >= ${since} AND (${journey}::text IS NULL OR EXISTS (
          SELECT 1 FROM "Action" a WHERE a.key = m."actionKey" AND a."journeyId" = ${journey}))
        GROUP BY 1`,
    db.$queryRaw<
      {
        channel: string;
        count: bigint;
        p50: number | null;
        p95: number | null;
        p99: number | null;
      }[]
    >`
        SELECT CASE WHEN grouping(channel) = 0 THEN 'channel:' || channel
                    WHEN grouping(source) = 0 THEN 'source:' || source
                    WHEN grouping("stepId") = 0 THEN 'step:' || "journeyId" || '.' || "stepId"
                    WHEN grouping("journeyId") = 0 THEN 'journey:' || "journeyId"
                    ELSE 'all' END AS channel,
          count(*) AS count,
          percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50,
          percentile_cont(0.95) WITHIN GROUP (ORDER BY ms) AS p95,
          percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99
        FROM (SELECT a.channel::text AS channel, a."journeyId", a."stepId", e.source,
                extract(epoch FROM (a."completedAt" - ${SENT_FROM})) * 1000 AS ms
              FROM "Action" a JOIN "Enrollment" n ON n.id = a."enrollmentId" JOIN "Event" e ON e.id = n."triggerEventId"
              WHERE a.state = 'sent' AND a.channel IN ('email', 'sms') AND a."completedAt" >= ${since}
                AND (${journey}::text IS NULL OR a."journeyId" = ${journey})) s
        GROUP BY GROUPING SETS ((), (channel), (source), ("journeyId"), ("journeyId", "stepId"))`,
    db.$queryRaw<{ hour: Date; state: string; count: bigint }[]>`
        SELECT date_trunc('hour', "claimedAt") AS hour, state::text AS state, count(*) AS count FROM "Action"
        WHERE "claimedAt" >= ${since} AND (${journey}::text IS NULL OR "journeyId" = ${journey}) GROUP BY 1, 2 ORDER BY 1, 2`,
    db.$queryRaw<{ journeyId: string; count: bigint }[]>`
        SELECT "journeyId", count(*) AS count FROM "Enrollment"
        WHERE "enrolledAt" >= ${since} AND (${journey}::text IS NULL OR "journeyId" = ${journey}) GROUP BY 1 ORDER BY 1`,
    db.$queryRaw<{ bucket: number; count: bigint }[]>`
        SELECT width_bucket(extract(epoch FROM (a."completedAt" - ${SENT_FROM})) * 1000, ${LATENCY_BUCKETS}::float8[]) AS bucket,
          count(*) AS count
        FROM "Action" a JOIN "Enrollment" n ON n.id = a."enrollmentId" JOIN "Event" e ON e.id = n."triggerEventId"
        WHERE a.state = 'sent' AND a.channel IN ('email', 'sms') AND a."completedAt" >= ${since}
          AND (${journey}::text IS NULL OR a."journeyId" = ${journey})
        GROUP BY 1 ORDER BY 1`,
    db.$queryRaw<{ type: string }[]>`
        SELECT DISTINCT definition->'trigger'->>'event' AS type FROM "JourneyVersion"
        WHERE "journeyId" = ${journey} ORDER BY 1`,
    // Whenever claimed: an action still in doubt after the window began is still a person's.
    db.$queryRaw<{ count: bigint }[]>`
        SELECT count(*) AS count FROM "Action"
        WHERE state = 'in_doubt' AND (${journey}::text IS NULL OR "journeyId" = ${journey})`,
  ]);
  const n = (v: bigint | number) => Number(v);
  const groups = actions.map((a) => ({ ...a, count: n(a.count) }));
  const skipsByReason: Record<string, number> = {};
  for (const g of groups.filter((g) => g.state === "skipped")) {
    skipsByReason[g.reason ?? "unknown"] = (skipsByReason[g.reason ?? "unknown"] ?? 0) + g.count;
  }
  const lat = (row?: {
    count: bigint;
    p50: number | null;
    p95: number | null;
    p99: number | null;
  }): Latency => ({
    count: row ? n(row.count) : 0,
    p50: row?.p50 ?? null,
    p95: row?.p95 ?? null,
    p99: row?.p99 ?? null,
  });
  const latencyBy = (prefix: string) =>
    Object.fromEntries(
      latency
        .filter((l) => l.channel.startsWith(prefix))
        .map((l) => [l.channel.slice(prefix.length), lat(l)]),
    );
  const r = retries[0] ?? { retried: 0n, succeeded: 0n };
  const journeys = [
    ...new Set([...enrolled.map((e) => e.journeyId), ...groups.map((g) => g.journeyId)]),
  ].sort();
  return {
    since: since.toISOString(),
    journeyId: journey,
    eventTypes: journey === null ? null : triggers.map((t) => t.type),
    events: events.map((e) => ({
      source: e.source,
      received: n(e.received),
      duplicates: n(e.duplicates),
      conflicts: n(e.conflicts),
    })),
    idempotentReplays: replays,
    actions: groups,
    suppressedDuplicates: suppressed.map((s) => ({ ...s, count: n(s.count) })),
    duplicateSends: duplicateSends.map((d) => ({ key: d.key, sends: n(d.sends) })),
    skipsByReason,
    delaysByReason: Object.fromEntries(delays.map((d) => [d.rule, n(d.count)])),
    retries: {
      retried: n(r.retried),
      succeeded: n(r.succeeded),
      successRate: n(r.retried) ? n(r.succeeded) / n(r.retried) : null,
    },
    inDoubt: n(inDoubtNow[0]?.count ?? 0n),
    reconciliationMismatches: Object.fromEntries(mismatches.map((m) => [m.rule, n(m.count)])),
    latency: {
      ...lat(latency.find((l) => l.channel === "all")),
      byChannel: latencyBy("channel:"),
      byJourney: latencyBy("journey:"),
      byStep: latencyBy("step:"),
      bySource: latencyBy("source:"),
    },
    latencyHistogram: [...LATENCY_BUCKETS, null].map((upToMs, i) => ({
      upToMs,
      count: n(histogram.find((b) => b.bucket === i)?.count ?? 0),
    })),
    timeline: timeline.map((t) => ({
      hour: t.hour.toISOString(),
      state: t.state,
      count: n(t.count),
    })),
    funnel: journeys.map((j) => {
      const steps = [...new Set(groups.filter((g) => g.journeyId === j).map((g) => g.stepId))];
      return {
        journeyId: j,
        enrolled: n(enrolled.find((e) => e.journeyId === j)?.count ?? 0),
        steps: steps.map((stepId) => {
          const of = groups.filter((g) => g.journeyId === j && g.stepId === stepId);
          const sum = (f: (g: ActionGroup) => boolean) =>
            of.filter(f).reduce((s, g) => s + g.count, 0);
          return {
            stepId,
            sent: sum((g) => g.state === "sent"),
            skipped: sum((g) => g.state === "skipped"),
            other: sum((g) => !["sent", "skipped"].includes(g.state)),
          };
        }),
      };
    }),
  };
}
