// The pipeline under measure: real `sendonce worker` processes fed deliveries through BullMQ,
// sending through a channel that only records the key (SENDONCE_RECORD_ONLY) or through a real
// SMTP server. Progress is read from what the channel received, not from the database, so
// watching a run does not load the ledger being measured.
import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { createWriteStream, existsSync, mkdtempSync, readFileSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createQueues } from "../../src/queue/queues";
import { startSmtpSink } from "../../test/support/smtp";
import type { SmtpSink } from "../../test/support/smtp";

const BIN = new URL("../../bin/sendonce.js", import.meta.url).pathname;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface Setup {
  dbUrl: string;
  redisUrl: string;
  journeysDir: string;
  /** Extra node flags for each worker, e.g. --cpu-prof. */
  nodeArgs: string[];
}

export interface Fleet {
  pids: number[];
  stop(): Promise<void>;
}

/** Starts `count` workers and resolves once each has logged that it started. */
export async function startFleet(
  count: number,
  env: NodeJS.ProcessEnv,
  setup: Setup,
): Promise<Fleet> {
  const children: ChildProcess[] = [];
  await Promise.all(
    Array.from({ length: count }, (_, i) => {
      const child = spawn(
        process.execPath,
        [...setup.nodeArgs, BIN, "worker", "--concurrency", "50"],
        { env: { ...process.env, ...env }, stdio: ["ignore", "ignore", "pipe"] },
      );
      children.push(child);
      // Each worker's log goes to the run's state directory, for a look afterwards.
      const log = createWriteStream(join(env.SENDONCE_STATE_DIR!, `worker-${i}.log`));
      child.stderr.pipe(log);
      return new Promise<void>((resolve, reject) => {
        child.stderr.on("data", (d: Buffer) => {
          if (d.toString().includes("worker started")) resolve();
        });
        child.once("exit", (code) =>
          reject(new Error(`a worker exited with ${code}; see ${env.SENDONCE_STATE_DIR}`)),
        );
      });
    }),
  );
  return {
    pids: children.map((c) => c.pid!),
    async stop() {
      const exits = children.map((c) => new Promise((r) => c.once("exit", r)));
      for (const c of children) c.kill("SIGTERM");
      await Promise.all(exits);
    },
  };
}

/** A worker's environment for this bench run, on queue prefix `prefix`. */
export function workerEnv(setup: Setup, prefix: string, stateDir: string): NodeJS.ProcessEnv {
  return {
    DATABASE_URL: setup.dbUrl,
    REDIS_URL: setup.redisUrl,
    SENDONCE_QUEUE_PREFIX: prefix,
    SENDONCE_JOURNEYS_DIR: setup.journeysDir,
    SENDONCE_STATE_DIR: stateDir,
  };
}

/** Deliveries `from` … `from + count - 1` of a run, spread over customers `<c>_0` … `<c>_<n-1>`. */
export function deliveries(
  tag: string,
  from: number,
  count: number,
  customers: { prefix: string; count: number },
) {
  return Array.from({ length: count }, (_, j) => {
    const customerId = `${customers.prefix}_${(from + j) % customers.count}`;
    return {
      name: "deliver",
      data: {
        delivery: {
          id: `${tag}_${from + j}`,
          type: "bench.event",
          customerId,
          occurredAt: new Date().toISOString(),
          customer: { email: `${customerId}@example.com` },
        },
        via: "bench",
      },
    };
  });
}

/**
 * The queues of a prefix, as the API and the importer make them (finished jobs removed);
 * closing them also removes both.
 */
export function eventsQueue(redisUrl: string, prefix: string) {
  const queues = createQueues(redisUrl, prefix);
  return {
    events: queues.events,
    async close() {
      await Promise.all([
        queues.events.obliterate({ force: true }),
        queues.steps.obliterate({ force: true }),
      ]);
      await queues.close();
    },
  };
}

export type Sink = "record" | "smtp";

export interface RunOptions {
  tag: string;
  workers: number;
  sink: Sink;
  events: number;
  /** Deliveries per second; unset enqueues them all at once (a throughput run). */
  rate?: number;
}

export interface RunResult {
  /** Sends per second over the timed run (after the warm-up). */
  perSecond: number;
  /** Sends the warm-up and the run should have made, each once. */
  expected: number;
  /** Distinct action keys the channel received, and how many receipts there were. */
  keys: number;
  receipts: number;
  startedAt: Date;
}

/** Polls `done` until it holds; past `ms`, fails naming where the worker logs are. */
async function until(done: () => boolean, ms: number, what: string, logs: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!done()) {
    if (Date.now() > deadline)
      throw new Error(`${what}: not done in ${ms / 1000} s; logs in ${logs}`);
    await sleep(20);
  }
}

/** One run: a fresh queue prefix, `workers` processes, `events` deliveries, all sent once. */
export async function runPipeline(setup: Setup, opts: RunOptions): Promise<RunResult> {
  const stateDir = mkdtempSync(join(tmpdir(), `sendonce-bench-${opts.tag}-`));
  const prefix = `bench${opts.tag}`;
  const recordFile = join(stateDir, "sent.txt");
  const sink: SmtpSink | undefined = opts.sink === "smtp" ? await startSmtpSink() : undefined;
  const env = {
    ...workerEnv(setup, prefix, stateDir),
    ...(sink
      ? { SMTP_URL: sink.url, EMAIL_FROM: "Bench <bench@shop.example>" }
      : { SENDONCE_RECORD_ONLY: recordFile }),
  };
  const fleet = await startFleet(opts.workers, env, setup);
  const queue = eventsQueue(setup.redisUrl, prefix);
  // Workers, queues and the SMTP sink go away however the run ends: a failed run leaves nothing
  // running.
  try {
    // Each line the recorder writes is `email <64 hex>\n`: 71 bytes.
    const sent = () =>
      sink ? sink.messages.length : existsSync(recordFile) ? statSync(recordFile).size / 71 : 0;
    // Warm-up, not measured: the workers' first sends compile code and prepare statements.
    const warmUp = Math.min(1_000, Math.ceil(opts.events / 10));
    await queue.events.addBulk(deliveries(`${opts.tag}w`, 0, warmUp, { prefix: "c", count: 500 }));
    await until(() => sent() >= warmUp, 120_000, `${opts.tag} warm-up`, stateDir);
    // Then the run, timed from the first delivery enqueued to the last send received.
    const startedAt = new Date();
    const started = performance.now();
    const batch = opts.rate ? Math.max(1, Math.round(opts.rate / 20)) : 1_000;
    for (let i = 0; i < opts.events; i += batch) {
      await queue.events.addBulk(
        deliveries(opts.tag, i, Math.min(batch, opts.events - i), { prefix: "c", count: 500 }),
      );
      if (opts.rate) {
        const due = ((i + batch) / opts.rate) * 1000;
        const ahead = due - (performance.now() - started);
        if (ahead > 0) await sleep(ahead);
      }
    }
    const total = warmUp + opts.events;
    const timeout = Math.max(120_000, opts.events * 20);
    await until(() => sent() >= total, timeout, `${opts.tag}: ${total} sends`, stateDir);
    const seconds = (performance.now() - started) / 1000;
    const keys = sink
      ? [...sink.countByMessageId().keys()]
      : readFileSync(recordFile, "utf8").trim().split("\n");
    return {
      perSecond: opts.events / seconds,
      expected: total,
      keys: new Set(keys).size,
      receipts: sink ? sink.messages.length : keys.length,
      startedAt,
    };
  } finally {
    await fleet.stop();
    await queue.close();
    await sink?.close();
  }
}
