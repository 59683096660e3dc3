// Load script for the ingestion API (not a test): starts the API in-process against a fresh
// schema on the local Postgres and Redis, posts events one per request and in batches from
// concurrent clients, and prints accepted events per second.
//   npm run load:api -- [--events 5000] [--concurrency 50] [--batch 100]
import { randomBytes } from "node:crypto";
import { parseArgs } from "node:util";
import pg from "pg";
import { buildApi } from "../src/api/app";
import { createDb } from "../src/db/client";
import { migrate } from "../src/db/migrate";
import { systemClock } from "../src/engine/engine";
import { createLogger } from "../src/log";
import { createQueues } from "../src/queue/queues";

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

await migrate(url.toString());
const db = createDb(url.toString(), { poolSize: 20 });
const queues = createQueues(redisUrl, `load${randomBytes(3).toString("hex")}`);
const key = randomBytes(24).toString("hex");
const app = await buildApi({
  db,
  queues,
  redis: queues.connection,
  apiKeys: [key],
  bodyLimitBytes: 10 * 1024 * 1024,
  idempotency: { ttlMs: 86_400_000, inFlightLeaseMs: 30_000 },
  clock: systemClock,
  log: createLogger({ quiet: true }),
  publicBaseUrl: "http://localhost",
});
const base = await app.listen({ port: 0, host: "127.0.0.1" });
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
    `${label.padEnd(36)} ${String(events).padStart(6)} events  ${seconds.toFixed(2).padStart(6)} s  ${String(rate).padStart(6)} events/s  ${failed} failed`,
  );
  return rate;
}

console.log(`API on ${base}, ${concurrency} concurrent clients`);
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
      post({ events: Array.from({ length: batchSize }, (_, i) => event("b", b * batchSize + i)) }),
  ),
  batches * batchSize,
);
console.log(JSON.stringify({ events: total, concurrency, single, keyed, batched }));

await app.close();
// Only this run's keys: the Redis may be shared.
for (let cursor = "0"; ;) {
  const [next, keys] = await queues.connection.scan(
    cursor,
    "MATCH",
    `${queues.prefix}:*`,
    "COUNT",
    1000,
  );
  if (keys.length > 0) await queues.connection.del(...keys);
  cursor = next;
  if (cursor === "0") break;
}
await queues.close();
await db.$disconnect();
const admin = new pg.Client({ connectionString: server });
await admin.connect();
await admin.query(`DROP SCHEMA "${schema}" CASCADE`);
await admin.end();
