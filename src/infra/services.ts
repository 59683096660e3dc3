// Where Postgres and Redis come from: the configured URLs, or (unset) the embedded defaults
// under the state directory.
import type { Config } from "../config";
import type { Db } from "../db/client";
import { migrate, openMigrated } from "../db/migrate";
import type { RunningService } from "./embedded";
import { startEmbeddedPostgres, startRedisServer } from "./embedded";

export interface Services {
  databaseUrl: string;
  redisUrl: string;
  /** Which ones were started here. */
  embedded: { postgres: boolean; redis: boolean };
  stop(): Promise<void>;
}

/** Uses DATABASE_URL and REDIS_URL when set, and starts embedded servers for what is not. */
export async function resolveServices(config: Config): Promise<Services> {
  const started: RunningService[] = [];
  try {
    const postgres = config.databaseUrl ? undefined : await startEmbeddedPostgres(config.stateDir);
    if (postgres) started.push(postgres);
    const redis = config.redisUrl ? undefined : await startRedisServer(config.stateDir);
    if (redis) started.push(redis);
    return {
      databaseUrl: config.databaseUrl ?? postgres!.url,
      redisUrl: config.redisUrl ?? redis!.url,
      embedded: { postgres: !!postgres, redis: !!redis },
      stop: () => stopAll(started),
    };
  } catch (error) {
    await stopAll(started);
    throw error;
  }
}

/** Just the database: DATABASE_URL, or the embedded one a demo left under the state directory. */
export async function resolveDatabase(
  config: Config,
): Promise<{ url: string; stop(): Promise<void> }> {
  if (config.databaseUrl) return { url: config.databaseUrl, stop: async () => {} };
  const postgres = await startEmbeddedPostgres(config.stateDir);
  return { url: postgres.url, stop: () => postgres.stop() };
}

async function stopAll(services: RunningService[]): Promise<void> {
  for (const s of services.reverse()) await s.stop();
}

/**
 * The ledger for a command that reads it (report, explain): DATABASE_URL's, which must be
 * migrated already, or the demo's embedded one, migrated here. `close` disconnects from it and
 * stops what was started.
 */
export async function openLedger(
  config: Config,
  poolSize: number,
): Promise<{ db: Db; close: () => Promise<void> }> {
  const database = await resolveDatabase(config);
  try {
    if (!config.databaseUrl) await migrate(database.url);
    const db = await openMigrated(database.url, poolSize);
    return {
      db,
      close: async () => {
        await db.$disconnect();
        await database.stop();
      },
    };
  } catch (error) {
    await database.stop();
    throw error;
  }
}
