// Benchmark (not a test): end-to-end send-once throughput against the bare-BullMQ ceiling on
// the same Redis, ledger-claim latency, ledger size on disk, and claim throughput as the
// ledger grows. Prints a table, then one JSON line with every figure.
//   npm run bench -- [--events 3000] [--growth 1000000]
import { spawn } from "node:child_process";
import { createWriteStream, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Queue, Worker } from "bullmq";
import pg from "pg";
import { createDb } from "../src/db/client";
import { migrate } from "../src/db/migrate";
import { actionKey } from "../src/engine/keys";
import { claimAction } from "../src/ledger/actions";
import { redisConnection } from "../src/queue/queues";

const { values } = parseArgs({
  options: {
    events: { type: "string", default: "3000" },
    growth: { type: "string", default: "1000000" },
    workers: { type: "string", default: "1,2,4" },
    "cpu-prof": { type: "string" },
  },
});
const N = Number(values.events);
const GROWTH = Number(values.growth);
const SERVER = process.env.TEST_DATABASE_URL ?? "postgresql://postgres@127.0.0.1:5432/postgres";
const REDIS = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379";
const stamp = Date.now().toString(36);
const schema = `bench_${stamp}`;
const dbUrl = (() => {
  const u = new URL(SERVER);
  u.searchParams.set("schema", schema);
  return u.toString();
})();
const BIN = new URL("../bin/sendonce.js", import.meta.url).pathname;
const results: Record<string, number | null> = {};
const rows: [string, string][] = [];
const record = (label: string, key: string, value: number | null, unit: string) => {
  results[key] = value === null ? null : Math.round(value * 100) / 100;
  rows.push([label, value === null ? "-" : `${results[key]} ${unit}`]);
};
const percentile = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))]!;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

await migrate(dbUrl);
const db = createDb(dbUrl, { poolSize: 20 });

// 1. The ceiling: bare BullMQ, no-op jobs, producer and worker (concurrency 50) side by side.
{
  const prefix = `bench${stamp}c`;
  const connection = redisConnection(REDIS);
  const queue = new Queue("noop", { connection, prefix });
  let done = 0;
  const worker = new Worker("noop", async () => {}, {
    connection: redisConnection(REDIS),
    prefix,
    concurrency: 50,
  });
  worker.on("completed", () => (done += 1));
  const started = performance.now();
  for (let i = 0; i < N; i += 1000) {
    await queue.addBulk(
      Array.from({ length: Math.min(1000, N - i) }, (_, j) => ({
        name: "n",
        data: { i: i + j },
        opts: { removeOnComplete: true },
      })),
    );
  }
  while (done < N) await sleep(5);
  record(
    "bare BullMQ ceiling (no-op jobs)",
    "ceiling_per_s",
    N / ((performance.now() - started) / 1000),
    "jobs/s",
  );
  await worker.close();
  await queue.obliterate({ force: true });
  await queue.close();
  connection.disconnect();
}

// 2. The pipeline: deliveries → intake → enrollment → step → ledger claim → send (file outbox,
// a channel that only records), with 1, 2 and 4 worker processes.
const journeys = mkdtempSync(join(tmpdir(), "sendonce-bench-journeys-"));
writeFileSync(
  join(journeys, "bench.yaml"),
  `id: bench\nname: Bench\ncategory: transactional\ntrigger: { event: bench.event }\nentry: { once: every_event }\nsteps:\n  - id: note\n    email: { subject: "Hi", text: "Hello" }\n`,
);
// --cpu-prof DIR: each worker writes a V8 CPU profile there when it exits.
const profile = values["cpu-prof"] ? ["--cpu-prof", `--cpu-prof-dir=${values["cpu-prof"]}`] : [];
const WORKERS = values.workers.split(",").map(Number);
for (const workers of WORKERS) {
  const prefix = `bench${stamp}w${workers}`;
  const env = {
    ...process.env,
    DATABASE_URL: dbUrl,
    REDIS_URL: REDIS,
    SENDONCE_QUEUE_PREFIX: prefix,
    SENDONCE_JOURNEYS_DIR: journeys,
    SENDONCE_STATE_DIR: mkdtempSync(join(tmpdir(), "sendonce-bench-state-")),
  };
  const children = Array.from({ length: workers }, () =>
    spawn(process.execPath, [...profile, BIN, "worker", "--concurrency", "50"], {
      env,
      stdio: ["ignore", "ignore", "pipe"],
    }),
  );
  // Each worker's log goes to a file beside its outbox, for a look after the run.
  const logs = children.map((_, i) =>
    createWriteStream(join(env.SENDONCE_STATE_DIR, `worker-${i}.log`)),
  );
  await Promise.all(
    children.map(
      (c, i) =>
        new Promise<void>((resolve) =>
          c.stderr.on("data", (d: Buffer) => {
            logs[i]!.write(d);
            if (d.toString().includes("worker started")) resolve();
          }),
        ),
    ),
  );
  const connection = redisConnection(REDIS);
  const queue = new Queue("events", { connection, prefix });
  const before = await db.action.count({
    where: { state: { in: ["sent", "in_doubt", "failed_permanent"] } },
  });
  const started = performance.now();
  for (let i = 0; i < N; i += 1000) {
    await queue.addBulk(
      Array.from({ length: Math.min(1000, N - i) }, (_, j) => ({
        name: "deliver",
        data: {
          delivery: {
            id: `w${workers}_${i + j}`,
            type: "bench.event",
            customerId: `c_${(i + j) % 500}`,
            occurredAt: new Date().toISOString(),
            customer: { email: "bench@example.com" },
          },
          via: "bench",
        },
      })),
    );
  }
  while (
    (await db.action.count({
      where: { state: { in: ["sent", "in_doubt", "failed_permanent"] } },
    })) -
      before <
    N
  )
    await sleep(200);
  const doubtful = await db.action.count({ where: { state: "in_doubt" } });
  if (doubtful > 0)
    console.error(`${doubtful} actions in_doubt so far; worker logs in ${env.SENDONCE_STATE_DIR}`);
  const seconds = (performance.now() - started) / 1000;
  record(
    `send-once pipeline, ${workers} worker${workers > 1 ? "s" : ""}`,
    `pipeline_${workers}w_per_s`,
    N / seconds,
    "sends/s",
  );
  for (const c of children) c.kill("SIGTERM");
  await Promise.all(children.map((c) => new Promise((r) => c.once("exit", r))));
  await queue.obliterate({ force: true });
  await queue.close();
  connection.disconnect();
}
results.best_vs_ceiling =
  Math.round(
    (Math.max(...WORKERS.map((w) => results[`pipeline_${w}w_per_s`]!)) / results.ceiling_per_s!) *
      1000,
  ) / 10;
rows.push(["best pipeline / ceiling", `${results.best_vs_ceiling} %`]);

// 3. Claim latency and throughput as the ledger grows, in this process.
async function claims(
  count: number,
  concurrency: number,
  tag: string,
): Promise<{ perSecond: number; p50: number; p99: number }> {
  const admin = new pg.Client({ connectionString: dbUrl.replace(/\?schema=.*/, "") });
  await admin.connect();
  await admin.query(`SET search_path TO "${schema}"`);
  await admin.query(
    `INSERT INTO "Customer" (id, "updatedAt") SELECT 'cl_${tag}_' || g, now() FROM generate_series(0, ${count - 1}) g`,
  );
  const event = await admin.query<{ id: string }>(
    `INSERT INTO "Event" (source, "eventId", type, "customerId", "occurredAt", "payloadHash") VALUES ('bench', 'claim_${tag}', 'x', 'cl_${tag}_0', now(), 'h') RETURNING id`,
  );
  const enrollments = await admin.query<{ id: string; customerId: string }>(
    `INSERT INTO "Enrollment" ("journeyId", "journeyVersion", "customerId", reference, "triggerEventId", status, "currentStepId", "updatedAt")
     SELECT 'bench', 'v', 'cl_${tag}_' || g, '', ${event.rows[0]!.id}, 'active', 'note', now() FROM generate_series(0, ${count - 1}) g RETURNING id, "customerId"`,
  );
  await admin.end();
  const latencies: number[] = [];
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < enrollments.rows.length) {
        const e = enrollments.rows[next++]!;
        const identity = {
          journeyId: "bench",
          stepId: `claim_${tag}`,
          customerId: e.customerId,
          reference: "",
        };
        const t = performance.now();
        await claimAction(
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

async function growLedgerTo(total: number): Promise<void> {
  const admin = new pg.Client({ connectionString: dbUrl.replace(/\?schema=.*/, "") });
  await admin.connect();
  await admin.query(`SET search_path TO "${schema}"`);
  const count = await admin.query<{ n: string }>(`SELECT count(*) AS n FROM "Action"`);
  const n = count.rows[0]!.n;
  const missing = total - Number(n);
  if (missing > 0) {
    const found = await admin.query<{ id: string; customerId: string }>(
      `SELECT id, "customerId" FROM "Enrollment" LIMIT 1`,
    );
    const enrollment = found.rows[0]!;
    for (let done = 0; done < missing; done += 100_000) {
      const batch = Math.min(100_000, missing - done);
      await admin.query(
        `INSERT INTO "Action" (key, "journeyId", "stepId", "customerId", reference, "enrollmentId", channel, state, attempt, "fencingToken", "claimedAt", "completedAt", "updatedAt", "providerId")
         SELECT md5('fill' || g || random()) || md5(g::text), 'filler', 'step_' || (g % 20), $1, 'r' || g, $2, 'email', 'sent', 1, 1, now() - (g || ' seconds')::interval, now(), now(), 'p' || g
         FROM generate_series(1, ${batch}) g`,
        [enrollment.customerId, enrollment.id],
      );
    }
    await admin.query(`ANALYZE "Action"`);
  }
  await admin.end();
}

await growLedgerTo(10_000);
const small = await claims(2_000, 20, "small");
record("claim p50 (ledger 10k rows)", "claim_p50_ms", small.p50, "ms");
record("claim p99 (ledger 10k rows)", "claim_p99_ms", small.p99, "ms");
record(
  "claims/s, 20 concurrent (ledger 10k rows)",
  "claims_10k_per_s",
  small.perSecond,
  "claims/s",
);
await growLedgerTo(GROWTH);
const large = await claims(2_000, 20, "large");
record(
  `claims/s, 20 concurrent (ledger ${GROWTH / 1000}k rows)`,
  "claims_large_per_s",
  large.perSecond,
  "claims/s",
);
record(`claim p99 (ledger ${GROWTH / 1000}k rows)`, "claim_p99_large_ms", large.p99, "ms");
results.large_vs_small = Math.round((large.perSecond / small.perSecond) * 1000) / 10;
rows.push(["claims/s large / small", `${results.large_vs_small} %`]);

const [size] = await db.$queryRaw<{ bytes: bigint; n: bigint }[]>`
  SELECT pg_total_relation_size('"Action"') + pg_total_relation_size('"ActionAttempt"') AS bytes, (SELECT count(*) FROM "Action") AS n`;
record(
  "ledger on disk per million actions",
  "ledger_mb_per_million",
  ((Number(size!.bytes) / Number(size!.n)) * 1e6) / 1024 / 1024,
  "MB",
);

const width = Math.max(...rows.map(([k]) => k.length));
console.log(`\nsendonce bench: ${N} events per pipeline run, ledger grown to ${GROWTH} rows`);
for (const [k, v] of rows) console.log(`  ${k.padEnd(width)}  ${v}`);
console.log(JSON.stringify(results));

await db.$disconnect();
const admin = new pg.Client({ connectionString: SERVER });
await admin.connect();
await admin.query(`DROP SCHEMA "${schema}" CASCADE`);
await admin.end();
