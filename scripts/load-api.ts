// Load script for the ingestion API (not a test): runs `sendonce api` as a child process on a
// scratch schema of the local Postgres and a scratch prefix of the local Redis, posts events
// one per request (without and with Idempotency-Key) and in batches from concurrent clients,
// and prints accepted events per second. The API has a process of its own, so the clients'
// CPU is not counted against it.
//   npm run load:api -- [--events 5000] [--concurrency 50] [--batch 100]
import type { ChildProcess } from "node:child_process";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { randomBytes } from "node:crypto";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { Redis } from "ioredis";
import pg from "pg";
import { migrate } from "../src/db/migrate";

const { values } = parseArgs({
  options: {
    events: { type: "string", default: "5000" },
    concurrency: { type: "string", default: "50" },
    batch: { type: "string", default: "100" },
  },
});
const total = Number(values.events);
const concurrency = Number(values.concurrency);
const batchSize = Number(values.batch);
const server = process.env.TEST_DATABASE_URL ?? "postgresql://postgres@127.0.0.1:5432/postgres";
const redisUrl = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379";
const schema = `load_${Date.now().toString(36)}`;
const url = new URL(server);
url.searchParams.set("schema", schema);
const prefix = `load${randomBytes(3).toString("hex")}`;
const key = randomBytes(24).toString("hex");

const port = await new Promise<number>((resolve) => {
  const s = createServer();
  s.listen(0, "127.0.0.1", () => {
    const a = s.address();
    s.close(() => resolve(typeof a === "object" && a ? a.port : 0));
  });
});

/** `sendonce api` on the scratch schema and prefix; resolves once it listens. */
async function startApi(): Promise<ChildProcess> {
  const child = spawn(
    process.execPath,
    [
      fileURLToPath(new URL("../bin/sendonce.js", import.meta.url)),
      "api",
      "--port",
      String(port),
      "--host",
      "127.0.0.1",
    ],
    {
      env: {
        ...process.env,
        DATABASE_URL: url.toString(),
        REDIS_URL: redisUrl,
        SENDONCE_QUEUE_PREFIX: prefix,
        SENDONCE_API_KEYS: key,
      },
      stdio: ["ignore", "ignore", "pipe"],
    },
  );
  await new Promise<void>((resolve, reject) => {
    let log = "";
    child.stderr.on("data", (chunk: Buffer) => {
      log += chunk.toString();
      if (/api listening/.test(log)) resolve();
    });
    child.once("exit", (code) => reject(new Error(`sendonce api exited (${code}):\n${log}`)));
  });
  return child;
}
const base = `http://127.0.0.1:${port}`;

const event = (run: string, i: number) => ({
  id: `${run}_${i}`,
  type: "page.viewed",
  customerId: `c_${i % 1000}`,
  occurredAt: new Date().toISOString(),
  properties: { path: `/p/${i}` },
});
const post = (body: unknown, idempotencyKey?: string) =>
  fetch(`${base}/v1/events`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${key}`,
      "content-type": "application/json",
      ...(idempotencyKey && { "idempotency-key": idempotencyKey }),
    },
    body: JSON.stringify(body),
  });

async function measure(label: string, requests: (() => Promise<Response>)[], events: number) {
  let next = 0;
  let failed = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < requests.length) {
        const r = await requests[next++]!();
        if (r.status !== 202) failed += 1;
        await r.arrayBuffer();
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  const rate = Math.round(events / seconds);
  console.log(
    `${label.padEnd(40)} ${String(events).padStart(6)} events  ${seconds.toFixed(2).padStart(6)} s  ${String(rate).padStart(6)} events/s  ${failed} failed`,
  );
  return rate;
}

const admin = new pg.Client({ connectionString: server });
await admin.connect();
let api: ChildProcess | undefined;
try {
  await migrate(url.toString());
  api = await startApi();
  console.log(`sendonce api on ${base} (pid ${api.pid}), ${concurrency} concurrent clients`);
  const single = await measure(
    "one event per request",
    Array.from({ length: total }, (_, i) => () => post(event("s", i))),
    total,
  );
  const keyed = await measure(
    "one event per request, Idempotency-Key",
    Array.from({ length: total }, (_, i) => () => post(event("k", i), `k-${i}`)),
    total,
  );
  const batches = Math.ceil(total / batchSize);
  const batched = await measure(
    `batches of ${batchSize}`,
    Array.from(
      { length: batches },
      (_, b) => () =>
        post({
          events: Array.from({ length: batchSize }, (_, i) => event("b", b * batchSize + i)),
        }),
    ),
    batches * batchSize,
  );
  const [row] = (
    await admin.query<{ stored: string; enqueued: string }>(
      `SELECT count(*) AS stored, count("enqueuedAt") AS enqueued FROM "${schema}"."Event"`,
    )
  ).rows;
  console.log(`stored ${row!.stored} events, ${row!.enqueued} of them enqueued`);
  console.log(JSON.stringify({ events: total, concurrency, single, keyed, batched }));
} finally {
  if (api && api.exitCode === null && api.signalCode === null) {
    const exited = once(api, "exit");
    api.kill("SIGTERM");
    await exited;
  }
  // Only this run's keys: the Redis may be shared.
  const redis = new Redis(redisUrl);
  for (let cursor = "0"; ;) {
    const [next, keys] = await redis.scan(cursor, "MATCH", `${prefix}:*`, "COUNT", 1000);
    if (keys.length > 0) await redis.del(...keys);
    cursor = next;
    if (cursor === "0") break;
  }
  redis.disconnect();
  await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  await admin.end();
}
