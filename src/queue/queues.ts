// The queue edge: BullMQ is transport and timers only. Job ids derive from Postgres rows
// (enrollment + position, event row), so adding a job twice is harmless, and everything a
// job stands for is also in Postgres, where the sweep finds it if Redis loses the job.
import { Queue } from "bullmq";
import type { JobsOptions } from "bullmq";
import { Redis } from "ioredis";
import { redactUrl } from "../db/url";
import { eventJobId, stepJobId } from "../engine/keys";
import type { Logger } from "../log";
import { reasonOf, throttledError } from "../log";

export const EVENTS_QUEUE = "events";
export const STEPS_QUEUE = "steps";

/** An event delivery (the payload is validated by the worker) or a stored event to process. */
export type EventJob = { delivery: unknown; via: string } | { eventRowId: string };
export interface StepJob {
  enrollmentId: string;
  stepSeq: number;
}

// Finished jobs are removed: their truth is in Postgres, and a removed id can be re-added by
// the sweep. Attempts cover infrastructure errors only (a database restart); send retries are
// decided by the ledger.
export const JOB_OPTIONS: JobsOptions = {
  removeOnComplete: true,
  removeOnFail: true,
  attempts: 10,
  backoff: { type: "exponential", delay: 1_000 },
};

export interface Queues {
  connection: Redis;
  prefix: string;
  events: Queue<EventJob>;
  steps: Queue<StepJob>;
  close(): Promise<void>;
}

/**
 * BullMQ requires `maxRetriesPerRequest: null` on connections that block. Commands issued in
 * one turn of the event loop leave in one write (ioredis auto-pipelining), and while a write's
 * replies are awaited the next ones gather: the jobs a group transaction finishes together are
 * completed together, instead of one write, one wake-up of Redis and one reply each. Order on
 * the connection is unchanged; the blocking connection BullMQ derives only ever blocks.
 */
export function redisConnection(url: string): Redis {
  return new Redis(url, {
    maxRetriesPerRequest: null,
    enableReadyCheck: true,
    enableAutoPipelining: true,
  });
}

/**
 * How long a producer's command may wait for Redis: past it the caller goes on without the
 * queue (what it enqueues is stored, and the sweep enqueues it).
 */
export const PRODUCER_COMMAND_TIMEOUT_MS = 5_000;

/**
 * A producer's connection (the API, `import`): what it enqueues is already stored, so while
 * Redis is away a command fails at once (no offline queue, one try) or after
 * PRODUCER_COMMAND_TIMEOUT_MS (a Redis that stopped answering), instead of waiting for Redis
 * to come back with the client's request held open.
 */
export function producerConnection(url: string): Redis {
  return new Redis(url, {
    maxRetriesPerRequest: 1,
    enableOfflineQueue: false,
    commandTimeout: PRODUCER_COMMAND_TIMEOUT_MS,
    enableReadyCheck: true,
    enableAutoPipelining: true,
  });
}

/** Thrown when Redis cannot be reached at start-up: names where, never the password. */
export class RedisUnreachableError extends Error {
  override readonly name = "RedisUnreachableError";
}

/** Redis answers, or a process about to depend on it refuses to start, in one line. */
export async function requireRedis(url: string): Promise<void> {
  const probe = new Redis(url, {
    lazyConnect: true,
    connectTimeout: 5_000,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    retryStrategy: () => null,
  });
  // The connection's own error says why (ECONNREFUSED); connect() only that it closed.
  let cause: unknown;
  probe.on("error", (error) => (cause ??= error));
  try {
    await probe.connect();
    await probe.ping();
  } catch (error) {
    throw new RedisUnreachableError(
      `cannot reach Redis at ${redactUrl(url)}: ${reasonOf(cause ?? error)}`,
    );
  } finally {
    probe.disconnect();
  }
}

/**
 * Queue errors as log lines: one per message per 10 s, as an outage (Redis gone away, ioredis
 * reconnecting) makes every connection report the same error many times a second.
 */
export function logQueueErrors(log: Logger): (queue: string, error: Error) => void {
  const error = throttledError(log);
  return (queue, e) => error("queue error", { queue, error: reasonOf(e) });
}

/**
 * The queues of a prefix once Redis answers (requireRedis), their errors logged. A producer's
 * (`producer: true`) fail fast while Redis is away (producerConnection); they are ready before
 * this returns, as without an offline queue a command sent earlier would fail.
 */
export async function openQueues(
  redisUrl: string,
  prefix: string,
  log: Logger,
  opts: { producer?: boolean } = {},
): Promise<Queues> {
  await requireRedis(redisUrl);
  const queues = createQueues(redisUrl, prefix, logQueueErrors(log), opts);
  if (opts.producer) {
    try {
      await Promise.all([queues.events.waitUntilReady(), queues.steps.waitUntilReady()]);
    } catch (error) {
      await queues.close().catch(() => {});
      throw new RedisUnreachableError(
        `cannot reach Redis at ${redactUrl(redisUrl)}: ${reasonOf(error)}`,
      );
    }
  }
  return queues;
}

/**
 * The queues of a prefix. Their errors (Redis gone away: ioredis reconnects by itself) go to
 * `onError`, one line each; without a listener BullMQ prints each as a stack trace.
 */
export function createQueues(
  redisUrl: string,
  prefix: string,
  onError: (queue: string, error: Error) => void = () => {},
  opts: { producer?: boolean } = {},
): Queues {
  const connection = opts.producer ? producerConnection(redisUrl) : redisConnection(redisUrl);
  const events = new Queue<EventJob>(EVENTS_QUEUE, {
    connection,
    prefix,
    defaultJobOptions: JOB_OPTIONS,
  });
  const steps = new Queue<StepJob>(STEPS_QUEUE, {
    connection,
    prefix,
    defaultJobOptions: JOB_OPTIONS,
  });
  for (const q of [events, steps]) q.on("error", (error) => onError(q.name, error));
  return {
    connection,
    prefix,
    events,
    steps,
    async close() {
      await Promise.all([events.close(), steps.close()]);
      connection.disconnect();
    },
  };
}

/** One delivery of an event, as a webhook or an import hands it over; duplicates welcome. */
export async function enqueueDelivery(
  queues: Queues,
  delivery: unknown,
  via: string,
): Promise<void> {
  await queues.events.add("deliver", { delivery, via });
}

/** Deliveries in one round trip. */
export async function enqueueDeliveries(
  queues: Queues,
  deliveries: unknown[],
  via: string,
): Promise<void> {
  await queues.events.addBulk(
    deliveries.map((delivery) => ({ name: "deliver", data: { delivery, via } })),
  );
}

/** A stored event that is not yet processed; one job per event row. */
export async function enqueueStoredEvents(queues: Queues, rowIds: bigint[]): Promise<void> {
  if (rowIds.length === 0) return;
  await queues.events.addBulk(
    rowIds.map((id) => ({
      name: "process",
      data: { eventRowId: String(id) },
      opts: { jobId: eventJobId(id) },
    })),
  );
}

export interface DueStep {
  enrollmentId: bigint;
  stepSeq: number;
  at: Date;
}

/** Schedules step runs; a run already queued under the same position is left as it is. */
export async function enqueueSteps(queues: Queues, due: DueStep[], now: Date): Promise<void> {
  if (due.length === 0) return;
  await queues.steps.addBulk(
    due.map((d) => ({
      name: "step",
      data: { enrollmentId: String(d.enrollmentId), stepSeq: d.stepSeq },
      opts: {
        jobId: stepJobId(d.enrollmentId, d.stepSeq),
        delay: Math.max(0, d.at.getTime() - now.getTime()),
      },
    })),
  );
}
