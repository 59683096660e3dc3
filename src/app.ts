// Wiring, in one place: config → database, queues, channels → engine → workers and sweep.
import { hostname } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import type { EmailChannel, SmsChannel } from "./channels/channel";
import { createSmtpChannel } from "./channels/email-smtp";
import { createEmailOutbox, createRecorder, createSmsOutbox } from "./channels/outbox";
import { createTwilioChannel } from "./channels/sms-twilio";
import type { Config } from "./config";
import { ConfigError, addressOf } from "./config";
import type { Db } from "./db/client";
import { openMigrated } from "./db/migrate";
import { JourneyCatalog } from "./engine/catalog";
import type { Clock, Engine, FailpointName, Tuning } from "./engine/engine";
import { DEFAULT_TUNING, systemClock } from "./engine/engine";
import { stepIdChanges } from "./journeys/deployed";
import { loadJourneys } from "./journeys/load";
import type { Logger } from "./log";
import type { Queues } from "./queue/queues";
import { openQueues, requireRedis } from "./queue/queues";
import { startSweeper } from "./queue/sweep";
import { startWorkers } from "./queue/worker";

export class JourneyLoadError extends Error {
  override readonly name = "JourneyLoadError";
}

export interface AppOptions {
  databaseUrl: string;
  /** The queues' Redis (a preview, previewApp, opens none). */
  redisUrl: string;
  log: Logger;
  clock?: Clock;
  timeScale?: number;
  /** Database pool size; a worker needs about one connection per few concurrent jobs. */
  poolSize?: number;
}

/** The engine over the database, without the queues: enough for a backfill's dry run. */
export interface EngineApp {
  db: Db;
  engine: Engine;
  close(): Promise<void>;
}

export interface App extends EngineApp {
  queues: Queues;
}

/** Outboxes stand in for SMTP and Twilio when they are not configured. */
export function outboxDir(config: Config, channel: "email" | "sms"): string {
  return join(config.stateDir, "outbox", channel);
}

/** Loads and deploys the journeys, connects everything the engine needs. */
export async function createApp(config: Config, opts: AppOptions): Promise<App> {
  // Redis answers before anything is deployed: a worker that cannot start records nothing.
  const app = await engineApp(config, opts, {
    deploy: true,
    ready: () => requireRedis(opts.redisUrl),
  });
  const queues = await openQueues(opts.redisUrl, config.queuePrefix, opts.log).catch(
    async (error: unknown) => {
      await app.close();
      throw error;
    },
  );
  return {
    ...app,
    queues,
    async close() {
      await queues.close();
      await app.close();
    },
  };
}

/**
 * The engine for a preview (a backfill's dry run): the journeys as the files have them, not
 * deployed (a preview of an edited journey must not become the version the next deploy and
 * `validate` compare with), and no queues, so no Redis either.
 */
export function previewApp(config: Config, opts: Omit<AppOptions, "redisUrl">): Promise<EngineApp> {
  return engineApp(config, opts, { deploy: false });
}

async function engineApp(
  config: Config,
  opts: Omit<AppOptions, "redisUrl">,
  { deploy, ready }: { deploy: boolean; ready?: () => Promise<void> },
): Promise<EngineApp> {
  const loaded = loadJourneys(config.journeysDir);
  const errors = loaded.diagnostics.filter((d) => d.severity === "error");
  if (errors.length > 0) {
    throw new JourneyLoadError(
      `journeys in ${config.journeysDir} have ${errors.length} error${errors.length === 1 ? "" : "s"}; nothing was started:\n` +
        errors.map((d) => `  ${d.file}:${d.line}:${d.column}: ${d.message}`).join("\n") +
        `\nrun "sendonce validate ${config.journeysDir}" for details`,
    );
  }
  const needLinks = loaded.journeys.filter(
    (j) => j.category === "marketing" && j.consent && j.steps.some((s) => s.kind === "email"),
  );
  if (needLinks.length > 0 && !config.secret) {
    throw new ConfigError(
      `SENDONCE_SECRET is not set: marketing emails carry signed unsubscribe links (journeys ${needLinks.map((j) => j.id).join(", ")}). ` +
        "Set it to a random string of 32 or more characters, e.g. openssl rand -hex 32",
    );
  }
  const db = await openMigrated(opts.databaseUrl, opts.poolSize ?? 10);
  await ready?.().catch(async (error: unknown) => {
    await db.$disconnect();
    throw error;
  });
  const channels = createChannels(config);
  const tuning: Tuning = {
    ...DEFAULT_TUNING,
    timeScale: opts.timeScale ?? 1,
    claimLeaseMs: config.leaseMs,
    callLeaseMs: config.leaseMs + config.sendTimeoutMs,
    callStartWindowMs: config.leaseMs,
    retryBaseMs: config.retryBaseMs,
    inDoubtGraceMs: config.inDoubtGraceMs,
  };
  // Before this deploy makes the new versions the latest: a step id gone since the last one
  // changes keys (the same warning `sendonce validate` gives with DATABASE_URL set).
  for (const d of await stepIdChanges(db, loaded.journeys, (j) => j.file)) {
    opts.log.warn("journey changed keys", { file: d.file, problem: d.message });
  }
  const engine: Engine = {
    db,
    catalog: deploy
      ? await JourneyCatalog.deploy(db, loaded.journeys, loaded.policies)
      : JourneyCatalog.preview(db, loaded.journeys, loaded.policies),
    clock: opts.clock ?? systemClock,
    workerId: `${hostname()}-${process.pid}-${randomBytes(2).toString("hex")}`,
    channels,
    messageIdDomain: addressOf(config.emailFrom).split("@")[1]!,
    ...(config.secret && { links: { secret: config.secret, publicBaseUrl: config.publicBaseUrl } }),
    tuning,
    log: opts.log,
    ...(config.failpoint && { failpoint: failpoint(config.failpoint, opts.log) }),
  };
  return {
    db,
    engine,
    async close() {
      await Promise.all([channels.email.close(), channels.sms.close()]);
      await db.$disconnect();
    },
  };
}

function createChannels(config: Config): { email: EmailChannel; sms: SmsChannel } {
  if (config.recordOnly) return createRecorder(config.recordOnly);
  return {
    email: config.smtpUrl
      ? createSmtpChannel({
          url: config.smtpUrl,
          from: config.emailFrom,
          timeoutMs: config.sendTimeoutMs,
        })
      : createEmailOutbox(outboxDir(config, "email"), config.emailFrom),
    sms: config.twilio
      ? createTwilioChannel({
          ...config.twilio,
          publicBaseUrl: config.publicBaseUrl,
          timeoutMs: config.sendTimeoutMs,
        })
      : createSmsOutbox(outboxDir(config, "sms")),
  };
}

/**
 * Stops the process dead at the named point, so a test or the chaos suite can SIGKILL it there.
 * `before_call` stops it as a paused machine stops (SIGSTOP): SIGCONT lets it go on.
 */
export function failpoint(armed: FailpointName, log: Logger): Engine["failpoint"] {
  return async (name, actionKey) => {
    if (name !== armed) return;
    log.warn(`failpoint ${name} reached`, { key: actionKey });
    if (name === "before_call") {
      process.kill(process.pid, "SIGSTOP");
      return;
    }
    await new Promise<never>(() => {});
  };
}

export interface RunningEngine {
  stop(): Promise<void>;
}

/** Starts the queue workers and the repair sweep of one process. */
export function runEngine(
  app: App,
  config: Config,
  redisUrl: string,
  concurrency: number,
): RunningEngine {
  const workers = startWorkers(app.engine, app.queues, redisUrl, {
    concurrency,
    lockMs: config.leaseMs,
  });
  const sweeper = startSweeper(app.engine, app.queues, {
    intervalMs: config.sweepIntervalMs,
    graceMs: config.sweepIntervalMs,
  });
  return {
    async stop() {
      await sweeper.stop();
      await workers.close();
    },
  };
}
