// `sendonce demo`: the whole product on one machine with nothing configured. Starts (or
// reuses) an embedded Postgres and a redis-server under .sendonce/, runs the bundled journeys
// over a sample of events full of duplicates, and proves from the outbox that nothing was
// sent twice.
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createApp, outboxDir, runEngine } from "../app";
import { countOutbox } from "../channels/outbox";
import { ConfigError, loadConfig } from "../config";
import type { Config } from "../config";
import { migrate } from "../db/migrate";
import { resolveServices } from "../infra/services";
import { createLogger } from "../log";
import type { App } from "../app";
import { enqueueDeliveries } from "../queue/queues";
import { summarize } from "../ops/summary";

/** How far ahead the demo waits for scheduled work; later delays are listed instead. */
const HORIZON_MS = 60_000;
const SAMPLE = fileURLToPath(new URL("../../demo/sample.json", import.meta.url));

/** A wave of sample deliveries; `copies` delivers each event that many times at once. */
interface Wave {
  label: string;
  events: unknown[];
  copies?: number;
}

export interface DemoOptions {
  timeScale: number;
  timeoutSeconds: number;
  fresh: boolean;
  verbose: boolean;
}

export async function runDemo(opts: DemoOptions): Promise<number> {
  const loaded = loadConfig();
  if (opts.fresh && loaded.databaseUrl) {
    // Starting over means an empty ledger; a database of the user's own is not ours to empty.
    throw new ConfigError(
      "--fresh starts over on the embedded database, and DATABASE_URL is set: unset it, or point it at a new schema (?schema=demo2)",
    );
  }
  if (opts.fresh) {
    rmSync(loaded.stateDir, { recursive: true, force: true });
    console.log(`removed ${loaded.stateDir}/`);
  }
  const config: Config = {
    ...loaded,
    sweepIntervalMs: 1_000,
    secret: loaded.secret ?? demoSecret(loaded.stateDir),
  };
  const services = await resolveServices(config);
  console.log(
    `postgres: ${services.embedded.postgres ? `embedded, data in ${config.stateDir}/postgres` : "DATABASE_URL"}; ` +
      `redis: ${services.embedded.redis ? `redis-server child, data in ${config.stateDir}/redis` : "REDIS_URL"}`,
  );
  let app: App | undefined;
  try {
    const migrated = await migrate(services.databaseUrl);
    if (migrated.applied.length > 0) console.log(`migrated: ${migrated.applied.join(", ")}`);
    app = await createApp(config, {
      databaseUrl: services.databaseUrl,
      redisUrl: services.redisUrl,
      log: createLogger({ quiet: !opts.verbose, verbose: opts.verbose }),
      timeScale: opts.timeScale,
    });
    console.log(
      `journeys: ${app.engine.catalog.current.map((c) => c.journey.id).join(", ")} (waits run ${opts.timeScale}× faster)`,
    );
    console.log(
      `email: ${config.smtpUrl ? "SMTP" : `outbox ${outboxDir(config, "email")}/`}; sms: outbox ${outboxDir(config, "sms")}/`,
    );
    const running = runEngine(app, config, services.redisUrl, 20);
    const started = new Date();
    const deadline = Date.now() + opts.timeoutSeconds * 1000;
    let idle = true;
    // Waves, so the story is the same on every run: each starts once the last is processed.
    for (const wave of readSample(SAMPLE)) {
      const copies = wave.copies ?? 1;
      console.log(`delivering: ${wave.label} (${wave.events.length * copies} deliveries)`);
      await Promise.all(
        Array.from({ length: copies }, () => enqueueDeliveries(app!.queues, wave.events, "demo")),
      );
      idle &&= await waitUntilIdle(app, deadline, "events");
    }
    idle &&= await waitUntilIdle(app, deadline, "enrollments");
    await running.stop();
    const summary = await summarize(app.db, started);
    const outbox = countOutbox(outboxDir(config, "email"));
    const smsOutbox = countOutbox(outboxDir(config, "sms"));
    printSummary(summary, outbox, smsOutbox, (Date.now() - started.getTime()) / 1000);
    const held = await app.db.enrollment.findMany({
      where: { status: "active", nextRunAt: { gt: new Date(Date.now() + HORIZON_MS) } },
      select: { customerId: true, journeyId: true, currentStepId: true, nextRunAt: true },
    });
    for (const e of held) {
      console.log(
        `  held back: ${e.journeyId}.${e.currentStepId} for ${e.customerId} until ${e.nextRunAt!.toISOString()} (see explain)`,
      );
    }
    if (!idle) {
      console.log(`\nnot idle after ${opts.timeoutSeconds} s: ${await pendingWork(app)}`);
      return 1;
    }
    if (summary.events === 0) {
      console.log(
        `\nevery sample event was already in ${services.embedded.postgres ? `${config.stateDir}/` : "DATABASE_URL"} from an earlier run, so nothing new was sent: that is the guarantee. ${services.embedded.postgres ? "Run with --fresh to start over." : "Point DATABASE_URL at a new schema to start over."}`,
      );
    }
    console.log(`\nsee one customer's story: sendonce explain --customer c_1002`);
    return outbox.duplicates + smsOutbox.duplicates === 0 ? 0 : 1;
  } finally {
    await app?.close();
    await services.stop();
  }
}

/** Without SENDONCE_SECRET the demo signs unsubscribe links with a key kept in its state dir. */
function demoSecret(stateDir: string): string {
  const file = join(stateDir, "secret");
  if (!existsSync(file)) {
    mkdirSync(stateDir, { recursive: true });
    writeFileSync(file, randomBytes(32).toString("hex"), { mode: 0o600 });
  }
  return readFileSync(file, "utf8").trim();
}

function readSample(file: string): Wave[] {
  return (JSON.parse(readFileSync(file, "utf8")) as { waves: Wave[] }).waves;
}

async function pendingWork(app: App): Promise<string> {
  const [events, enrollments, counts] = await Promise.all([
    app.db.event.count({ where: { processedAt: null } }),
    app.db.enrollment.count({ where: { status: "active" } }),
    app.queues.events.getJobCounts("waiting", "active", "delayed"),
  ]);
  const queued = Object.values(counts).reduce((a, b) => a + b, 0);
  return `${events} unprocessed events, ${enrollments} active enrollments, ${queued} queued deliveries`;
}

/** Idle: every delivery taken and every event processed (and every enrollment finished). */
async function waitUntilIdle(
  app: App,
  deadline: number,
  what: "events" | "enrollments",
): Promise<boolean> {
  while (Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 250));
    const [events, enrollments, counts] = await Promise.all([
      app.db.event.count({ where: { processedAt: null } }),
      // Enrollments held back past the demo's horizon (quiet hours, a full cap) are reported,
      // not waited for: those delays run on the real clock.
      app.db.enrollment.count({
        where: { status: "active", nextRunAt: { lte: new Date(Date.now() + HORIZON_MS) } },
      }),
      app.queues.events.getJobCounts("waiting", "active", "delayed", "prioritized"),
    ]);
    const drained = events === 0 && Object.values(counts).every((n) => n === 0);
    if (drained && (what === "events" || enrollments === 0)) return true;
  }
  return false;
}

function printSummary(
  s: Awaited<ReturnType<typeof summarize>>,
  email: ReturnType<typeof countOutbox>,
  sms: ReturnType<typeof countOutbox>,
  seconds: number,
): void {
  const rows: [string, string | number][] = [
    ["events stored", s.events],
    ["duplicate deliveries dropped", s.duplicatesDropped],
    ["conflicts rejected (same id, other payload)", s.conflicts],
    ["enrollments", s.enrollments],
    ["enrollments exited early", s.enrollmentsExited],
  ];
  for (const [k, v] of Object.entries(s.actions).sort()) rows.push([`actions: ${k}`, v]);
  rows.push(["duplicate actions suppressed", s.suppressedDuplicates]);
  for (const [k, v] of Object.entries(s.skippedByReason).sort()) rows.push([`skipped: ${k}`, v]);
  for (const [k, v] of Object.entries(s.delayedByReason).sort()) rows.push([`delayed: ${k}`, v]);
  rows.push(["points granted (net)", s.pointsGranted]);
  rows.push(["emails in outbox", `${email.files} messages for ${email.keys} action keys`]);
  rows.push(["sms in outbox", `${sms.files} messages for ${sms.keys} action keys`]);
  rows.push(["duplicate sends found in outbox", email.duplicates + sms.duplicates]);
  const width = Math.max(...rows.map(([k]) => k.length));
  console.log(`\nsummary (${seconds.toFixed(1)} s)`);
  for (const [k, v] of rows) console.log(`  ${k.padEnd(width)}  ${v}`);
}
