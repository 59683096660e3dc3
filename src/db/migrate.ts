// Applies prisma/migrations/<name>/migration.sql in order and records each one in
// `_prisma_migrations` exactly as `prisma migrate deploy` does (same table, same sha256
// checksum), so either tool can take over from the other. Works offline: Prisma's own
// migrate command needs a schema-engine binary that cannot be downloaded everywhere.
import { reasonOf } from "../log";
import { createHash, randomUUID } from "node:crypto";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import pg from "pg";
import type { Db } from "./client";
import { createDb } from "./client";
import { connectionOptions, redactUrl } from "./url";

export const MIGRATIONS_DIR = new URL("../../prisma/migrations/", import.meta.url).pathname;

export interface MigrationResult {
  applied: string[];
  alreadyApplied: string[];
}

export class MigrationError extends Error {
  override readonly name = "MigrationError";
}

// Any constant works; it only has to be the same for every sendonce process.
const MIGRATION_LOCK = 72_707_369;

/** Applies every pending migration, each in its own transaction; concurrent runs serialise. */
export async function migrate(databaseUrl: string, dir = MIGRATIONS_DIR): Promise<MigrationResult> {
  const { schema, ...options } = connectionOptions(databaseUrl);
  const client = new pg.Client(options);
  await client.connect();
  try {
    await client.query("SELECT pg_advisory_lock($1)", [MIGRATION_LOCK]);
    await client.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(schema)}`);
    await client.query(`SET search_path TO ${quoteIdent(schema)}`);
    await client.query(`CREATE TABLE IF NOT EXISTS "_prisma_migrations" (
      "id" VARCHAR(36) PRIMARY KEY NOT NULL,
      "checksum" VARCHAR(64) NOT NULL,
      "finished_at" TIMESTAMPTZ,
      "migration_name" VARCHAR(255) NOT NULL,
      "logs" TEXT,
      "rolled_back_at" TIMESTAMPTZ,
      "started_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
      "applied_steps_count" INTEGER NOT NULL DEFAULT 0
    )`);
    const { rows } = await client.query<{
      migration_name: string;
      checksum: string;
      finished_at: Date | null;
    }>(
      `SELECT migration_name, checksum, finished_at FROM "_prisma_migrations" WHERE rolled_back_at IS NULL`,
    );
    const done = new Map(rows.map((r) => [r.migration_name, r]));
    const result: MigrationResult = { applied: [], alreadyApplied: [] };
    for (const name of listMigrations(dir)) {
      const sql = readFileSync(join(dir, name, "migration.sql"), "utf8");
      const checksum = createHash("sha256").update(sql).digest("hex");
      const previous = done.get(name);
      if (previous?.finished_at) {
        if (previous.checksum !== checksum) {
          throw new MigrationError(
            `migration ${name} was edited after it was applied (checksum differs); add a new migration instead`,
          );
        }
        result.alreadyApplied.push(name);
        continue;
      }
      if (previous) {
        throw new MigrationError(
          `migration ${name} started earlier but did not finish; inspect the database, then mark it rolled back`,
        );
      }
      await client.query("BEGIN");
      try {
        const id = randomUUID();
        await client.query(
          `INSERT INTO "_prisma_migrations" (id, checksum, migration_name, started_at) VALUES ($1, $2, $3, now())`,
          [id, checksum, name],
        );
        await client.query(sql);
        await client.query(
          `UPDATE "_prisma_migrations" SET finished_at = now(), applied_steps_count = 1 WHERE id = $1`,
          [id],
        );
        await client.query("COMMIT");
      } catch (error) {
        // DDL is transactional in Postgres: a failed migration leaves nothing half-applied.
        await client.query("ROLLBACK");
        throw new MigrationError(
          `migration ${name} failed and was rolled back: ${(error as Error).message}`,
        );
      }
      result.applied.push(name);
    }
    return result;
  } finally {
    await client.end();
  }
}

export function listMigrations(dir = MIGRATIONS_DIR): string[] {
  return readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isDirectory() && existsSync(join(dir, e.name, "migration.sql")))
    .map((e) => e.name)
    .sort();
}

export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** The bundled migrations this database has not applied (all of them where none ever ran). */
export async function pendingMigrations(db: Db): Promise<string[]> {
  const [{ exists } = { exists: false }] = await db.$queryRaw<{ exists: boolean }[]>`
    SELECT to_regclass('"_prisma_migrations"') IS NOT NULL AS exists`;
  const applied = exists
    ? await db.$queryRaw<{ name: string }[]>`
        SELECT migration_name AS name FROM "_prisma_migrations"
        WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL`
    : [];
  const done = new Set(applied.map((a) => a.name));
  bundled ??= listMigrations();
  return bundled.filter((m) => !done.has(m));
}

/** This version's migrations, read once: /readyz asks on every probe. */
let bundled: string[] | undefined;

/** Thrown when the database cannot be reached at start-up: names where, never the password. */
export class DatabaseUnreachableError extends Error {
  override readonly name = "DatabaseUnreachableError";
}

/**
 * The database of a process about to start work (a worker, the API, a backfill): connected,
 * answering, with every migration this version needs; closed again if it is not.
 */
export async function openMigrated(databaseUrl: string, poolSize: number): Promise<Db> {
  const db = createDb(databaseUrl, { poolSize });
  try {
    await requireMigrated(db, databaseUrl);
    return db;
  } catch (error) {
    await db.$disconnect();
    throw error;
  }
}

/**
 * The database answers and has every migration this version needs: a worker or an API on a
 * schema without its tables would fail every job and request.
 */
async function requireMigrated(db: Db, databaseUrl: string): Promise<void> {
  let pending: string[];
  try {
    pending = await pendingMigrations(db);
  } catch (error) {
    throw new DatabaseUnreachableError(
      `cannot reach the database at ${redactUrl(databaseUrl)}: ${reasonOf(error)}`,
    );
  }
  if (pending.length > 0) {
    throw new MigrationError(
      `the database at ${redactUrl(databaseUrl)} lacks ${pending.length} migration${pending.length === 1 ? "" : "s"} ` +
        `(the first: ${pending[0]}): run "sendonce db migrate" first`,
    );
  }
}
