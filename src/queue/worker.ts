// BullMQ workers: the only place where engine results become queue operations (delays,
// unrecoverable errors). Everything a processor does is idempotent against Postgres.
import { DelayedError, UnrecoverableError, Worker } from "bullmq";
import type { Job } from "bullmq";
import type { Engine } from "../engine/engine";
import type { NewEnrollment } from "../engine/intake";
import { intakeDelivery, processEvent } from "../engine/intake";
import { runStep } from "../engine/runner";
import type { StepRunResult } from "../engine/runner";
import { EventValidationError, parseEvent } from "../ingest/event";
import { changesConsent, storeEvent } from "../ingest/store";
import type { DueStep, EventJob, Queues, StepJob } from "./queues";
import { EVENTS_QUEUE, STEPS_QUEUE, enqueueSteps, logQueueErrors, redisConnection } from "./queues";

export interface WorkerOptions {
  concurrency: number;
  /** BullMQ lock: a job whose worker died is handed to another after this long. */
  lockMs: number;
}

export interface RunningWorkers {
  /** Finishes in-flight jobs, then stops taking new ones. */
  close(): Promise<void>;
}

export function startWorkers(
  engine: Engine,
  queues: Queues,
  redisUrl: string,
  opts: WorkerOptions,
): RunningWorkers {
  const common = {
    prefix: queues.prefix,
    concurrency: opts.concurrency,
    lockDuration: opts.lockMs,
    stalledInterval: Math.max(1_000, Math.floor(opts.lockMs / 2)),
    // Every processor is idempotent, so a job that stalled again and again is simply run again.
    maxStalledCount: 1_000,
  };
  const events = new Worker<EventJob>(EVENTS_QUEUE, (job) => processEventJob(engine, queues, job), {
    ...common,
    connection: redisConnection(redisUrl),
  });
  const steps = new Worker<StepJob>(
    STEPS_QUEUE,
    (job, token) => processStepJob(engine, queues, job, token),
    {
      ...common,
      connection: redisConnection(redisUrl),
    },
  );
  const queueError = logQueueErrors(engine.log);
  for (const worker of [events, steps]) {
    worker.on("failed", (job, error) => {
      if (error instanceof DelayedError) return;
      engine.log.error("job failed", {
        queue: worker.name,
        job: job?.id,
        attempt: job?.attemptsMade,
        error: error.message,
      });
    });
    worker.on("error", (error) => queueError(worker.name, error));
  }
  return {
    async close() {
      await Promise.all([events.close(), steps.close()]);
      await Promise.all([events.disconnect(), steps.disconnect()]);
    },
  };
}

async function processEventJob(engine: Engine, queues: Queues, job: Job<EventJob>): Promise<void> {
  let enrolled: NewEnrollment[];
  if ("delivery" in job.data) {
    let event;
    try {
      event = parseEvent(job.data.delivery);
    } catch (error) {
      if (error instanceof EventValidationError) {
        engine.log.warn("event rejected", {
          job: job.id,
          via: job.data.via,
          problems: error.message,
        });
        throw new UnrecoverableError(error.message);
      }
      throw error;
    }
    if (changesConsent(event)) {
      // Stored with its consent changes first, in a transaction of their own.
      const stored = await storeEvent(engine.db, event, job.data.via, engine.clock.now());
      // A redelivery of an event whose first delivery crashed before processing still processes it.
      if (stored.status === "conflict" || (stored.status === "duplicate" && stored.processed))
        return;
      enrolled = await processEvent(engine, stored.eventRowId, event.customerId);
    } else {
      try {
        enrolled = await intakeDelivery(engine, event, job.data.via);
      } catch (error) {
        // Whatever failed, the event is kept: stored on its own and unprocessed, it is taken
        // up again by this job's retries or, once those are spent, by the sweep.
        await storeEvent(engine.db, event, job.data.via, engine.clock.now()).catch(
          (stored: unknown) =>
            engine.log.warn("event not stored after a failed intake; the job will retry", {
              job: job.id,
              error: (stored as Error).message,
            }),
        );
        throw error;
      }
    }
  } else {
    enrolled = await processEvent(engine, BigInt(job.data.eventRowId));
  }
  // First steps due now run here rather than as jobs of their own: one queue round trip less
  // per send. If this worker dies first, the sweep finds them due in Postgres.
  const next = await Promise.all(
    enrolled.map(async (e) =>
      nextJob(
        e.enrollmentId,
        e.stepSeq,
        await runStep(engine, e.enrollmentId, e.stepSeq, e.row, e.claimed),
      ),
    ),
  );
  await enqueueSteps(
    queues,
    next.filter((d) => d !== undefined),
    engine.clock.now(),
  );
}

async function processStepJob(
  engine: Engine,
  queues: Queues,
  job: Job<StepJob>,
  token?: string,
): Promise<void> {
  const enrollmentId = BigInt(job.data.enrollmentId);
  const { stepSeq } = job.data;
  const result = await runStep(engine, enrollmentId, stepSeq);
  const next = nextJob(enrollmentId, stepSeq, result);
  if (!next) return;
  if (result.kind === "retry" && next.stepSeq === stepSeq) {
    // Same job, later: BullMQ's way to reschedule from inside a processor.
    await job.moveToDelayed(Math.max(result.at.getTime(), Date.now() + 10), token);
    throw new DelayedError(result.why);
  }
  await enqueueSteps(queues, [next], engine.clock.now());
}

/**
 * Where a run that stopped goes on: its next step after a wait, or the step it must retry (at
 * the position it reached, which may be past the one it started from).
 */
function nextJob(
  enrollmentId: bigint,
  stepSeq: number,
  result: StepRunResult,
): DueStep | undefined {
  if (result.kind === "scheduled") return result;
  if (result.kind === "retry")
    return { enrollmentId, stepSeq: result.stepSeq ?? stepSeq, at: result.at };
  return undefined;
}
