// `sendonce api`: the HTTP API until SIGTERM or SIGINT, then it stops accepting and finishes
// the requests in flight.
import { buildApi } from "../api/app";
import { reapKeys } from "../api/idempotency";
import { failpoint } from "../app";
import {
  ConfigError,
  loadConfig,
  warnOfPublicBaseUrl,
  requireDatabaseUrl,
  requireRedisUrl,
} from "../config";
import { openMigrated } from "../db/migrate";
import { systemClock } from "../engine/engine";
import { createLogger } from "../log";
import { openQueues } from "../queue/queues";

/** Expired idempotency keys are deleted this often. */
const REAP_EVERY_MS = 10 * 60_000;

export async function runApi(opts: { port: number; host: string }): Promise<void> {
  const config = loadConfig();
  const databaseUrl = requireDatabaseUrl(config);
  const redisUrl = requireRedisUrl(config);
  if (config.apiKeys.length === 0) {
    throw new ConfigError(
      "SENDONCE_API_KEYS is not set: give one or more comma-separated keys of 16+ characters (e.g. openssl rand -hex 24)",
    );
  }
  const log = createLogger();
  warnOfPublicBaseUrl(config, log);
  const db = await openMigrated(databaseUrl, config.dbPoolSize ?? 20);
  const queues = await openQueues(redisUrl, config.queuePrefix, log, { producer: true }).catch(
    async (error: unknown) => {
      await db.$disconnect();
      throw error;
    },
  );
  const stop =
    config.failpoint === "api_after_commit" ? failpoint("api_after_commit", log) : undefined;
  const app = await buildApi({
    db,
    queues,
    redis: queues.connection,
    apiKeys: config.apiKeys,
    bodyLimitBytes: config.bodyLimitBytes,
    idempotency: { ttlMs: config.idempotencyTtlMs, inFlightLeaseMs: config.leaseMs },
    clock: systemClock,
    log,
    publicBaseUrl: config.publicBaseUrl,
    ...(config.twilio && { twilioAuthToken: config.twilio.authToken }),
    ...(config.secret && { secret: config.secret }),
    ...(stop && { afterCommit: () => stop("api_after_commit", "") }),
  });
  const reaper = setInterval(() => {
    reapKeys(db, new Date()).then(
      (n) => n > 0 && log.info("expired idempotency keys deleted", { count: n }),
      (e: Error) => log.error("idempotency reaper failed", { error: e.message }),
    );
  }, REAP_EVERY_MS);
  reaper.unref();
  await app.listen({ port: opts.port, host: opts.host });
  // What the socket is bound to (0.0.0.0: every interface), not one of its addresses.
  const bound = app.server.address();
  const address = typeof bound === "object" && bound ? `${bound.address}:${bound.port}` : bound;
  log.info("api listening", { address, keys: config.apiKeys.length });
  await new Promise<void>((resolve) => {
    process.once("SIGTERM", resolve);
    process.once("SIGINT", resolve);
  });
  clearInterval(reaper);
  await app.close();
  await queues.close();
  await db.$disconnect();
  log.info("api stopped");
}
