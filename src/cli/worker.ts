// `sendonce worker`: runs journeys from the queues until SIGTERM or SIGINT, then finishes the
// jobs in flight (a job cut short is safe too: its claim expires and another worker takes it).
import { createApp, runEngine } from "../app";
import { loadConfig, warnOfPublicBaseUrl, requireDatabaseUrl, requireRedisUrl } from "../config";
import { createLogger } from "../log";

export async function runWorker(opts: { concurrency: number }): Promise<void> {
  const config = loadConfig();
  const databaseUrl = requireDatabaseUrl(config);
  const redisUrl = requireRedisUrl(config);
  const log = createLogger();
  warnOfPublicBaseUrl(config, log);
  const app = await createApp(config, {
    databaseUrl,
    redisUrl,
    log,
    poolSize: config.dbPoolSize ?? Math.min(20, Math.max(4, Math.ceil(opts.concurrency / 4) + 2)),
  });
  const running = runEngine(app, config, redisUrl, opts.concurrency);
  log.info("worker started", {
    worker: app.engine.workerId,
    concurrency: opts.concurrency,
    journeys: app.engine.catalog.current.length,
    email: config.recordOnly ? "record-only" : config.smtpUrl ? "smtp" : "outbox",
    sms: config.recordOnly ? "record-only" : config.twilio ? "twilio" : "outbox",
  });
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      log.info("stopping: finishing jobs in flight", { signal });
      resolve();
    };
    process.once("SIGTERM", () => stop("SIGTERM"));
    process.once("SIGINT", () => stop("SIGINT"));
  });
  // Finishing needs Redis and Postgres; if either is gone, a stop would wait for good. Past
  // the deadline the worker exits anyway: a job cut short is safe (its claim expires).
  const deadline = setTimeout(() => {
    log.warn("jobs still in flight after the shutdown deadline: exiting without them", {
      worker: app.engine.workerId,
      seconds: SHUTDOWN_DEADLINE_MS / 1000,
    });
    process.exit(1);
  }, SHUTDOWN_DEADLINE_MS);
  deadline.unref();
  await running.stop();
  await app.close();
  clearTimeout(deadline);
  log.info("worker stopped", { worker: app.engine.workerId });
}

/** How long a stopping worker waits for its jobs in flight (Kubernetes grants 30 s). */
const SHUTDOWN_DEADLINE_MS = 20_000;
