// The repair sweep: Postgres knows every pending step and unprocessed event, Redis may not
// (a flush, a failover, a crash between commit and enqueue). Re-adding is harmless because
// job ids derive from the rows, so every worker runs the sweep.
import type { Engine } from "../engine/engine";
import { settleEnded } from "../ledger/enrollments";
import type { Queues } from "./queues";
import { enqueueSteps, enqueueStoredEvents } from "./queues";

export interface SweepOptions {
  intervalMs: number;
  /** Only rows overdue by this much, so work that is merely in flight is left alone. */
  graceMs: number;
  batch?: number;
}

export interface SweepResult {
  steps: number;
  events: number;
  /** Calls of ended enrollments whose worker died, now in_doubt. */
  interrupted: number;
  /** Retries and stale claims of ended enrollments, now skipped. */
  skipped: number;
}

/**
 * One pass: re-enqueues overdue enrollment steps and unprocessed events, and settles what ended
 * enrollments left unfinished (settleEnded).
 */
export async function sweepOnce(
  engine: Engine,
  queues: Queues,
  opts: SweepOptions,
): Promise<SweepResult> {
  const now = engine.clock.now();
  const before = new Date(now.getTime() - opts.graceMs);
  const limit = opts.batch ?? 1_000;
  const due = await engine.db.$queryRaw<{ id: bigint; stepSeq: number }[]>`
    SELECT id, "stepSeq" FROM "Enrollment"
    WHERE status = 'active' AND "nextRunAt" <= ${before}
    ORDER BY "nextRunAt" LIMIT ${limit}`;
  await enqueueSteps(
    queues,
    due.map((d) => ({ enrollmentId: d.id, stepSeq: d.stepSeq, at: now })),
    now,
  );
  const events = await engine.db.$queryRaw<{ id: bigint }[]>`
    SELECT id FROM "Event" WHERE "processedAt" IS NULL AND "receivedAt" <= ${before}
    ORDER BY "receivedAt" LIMIT ${limit}`;
  await enqueueStoredEvents(
    queues,
    events.map((e) => e.id),
  );
  const ended = await settleEnded(engine.db, {
    now,
    callLeaseMs: engine.tuning.callLeaseMs + opts.graceMs,
    claimLeaseMs: engine.tuning.claimLeaseMs + opts.graceMs,
    workerId: engine.workerId,
    batch: limit,
  });
  return { steps: due.length, events: events.length, ...ended };
}

/** Runs the sweep every interval until stopped; errors are logged, never thrown away. */
export function startSweeper(
  engine: Engine,
  queues: Queues,
  opts: SweepOptions,
): { stop(): Promise<void> } {
  let running: Promise<void> | undefined;
  const tick = () => {
    running ??= sweepOnce(engine, queues, opts)
      .then((r) => {
        if (r.steps + r.events > 0)
          engine.log.info("sweep re-enqueued", { steps: r.steps, events: r.events });
        if (r.interrupted > 0)
          engine.log.warn("sweep found calls of ended enrollments interrupted: in_doubt", {
            calls: r.interrupted,
          });
        if (r.skipped > 0)
          engine.log.info("sweep settled unsent actions of ended enrollments: skipped", {
            actions: r.skipped,
          });
      })
      .catch((error: Error) => engine.log.error("sweep failed", { error: error.message }))
      .finally(() => {
        running = undefined;
      });
  };
  const timer = setInterval(tick, opts.intervalMs);
  timer.unref();
  return {
    async stop() {
      clearInterval(timer);
      await running;
    },
  };
}
