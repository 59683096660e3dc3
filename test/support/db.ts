// Each test file gets its own Postgres schema (or database), migrated from scratch, so files
// run in parallel without seeing each other's rows.
import { randomBytes } from "node:crypto";
import pg from "pg";
import { createDb } from "../../src/db/client";
import type { Db } from "../../src/db/client";
import { migrate, quoteIdent } from "../../src/db/migrate";
import { connectionOptions } from "../../src/db/url";
import { eventually } from "./workers";

/** The server tests run against; CI starts one on 127.0.0.1:5432 when none answers. */
export const SERVER_URL =
  process.env.TEST_DATABASE_URL ?? "postgresql://postgres@127.0.0.1:5432/postgres";

export function uniqueName(prefix: string): string {
  return `${prefix}_${Date.now().toString(36)}_${randomBytes(3).toString("hex")}`;
}

function withDatabase(url: string, database: string, schema?: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  if (schema) u.searchParams.set("schema", schema);
  return u.toString();
}

async function withClient<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

function admin<T>(fn: (client: pg.Client) => Promise<T>): Promise<T> {
  return withClient(SERVER_URL, fn);
}

/** Runs one statement on its own connection and returns the rows. */
export function query<T extends pg.QueryResultRow>(url: string, sql: string): Promise<T[]> {
  return withClient(url, async (client) => (await client.query<T>(sql)).rows);
}

/** A connection of its own to the schema of `url`, outside any pool. */
async function connect(url: string): Promise<pg.Client> {
  const { connectionString, schema } = connectionOptions(url);
  const client = new pg.Client({ connectionString, options: `-c search_path=${schema}` });
  await client.connect();
  return client;
}

/** A transaction that holds rows locked, for the code under test to queue behind. */
export interface RowHolder {
  /** How many backends wait behind the holder, directly or behind one that waits for it. */
  queued(): Promise<number>;
  /** Resolves once `n` backends wait behind the holder, directly or behind one that waits for it. */
  waiting(n: number, what: string): Promise<void>;
  /** Rolls the holder back: those waiting go on, in the order they queued. */
  release(): Promise<void>;
}

/** Locks the rows `lock` selects (with FOR UPDATE or the like) until release(). */
export async function holdRows(url: string, lock: string, params: unknown[]): Promise<RowHolder> {
  const holder = await connect(url);
  // Another connection watches: inside the holder's transaction, pg_stat_activity would show
  // the same snapshot on every read.
  const watcher = await connect(url);
  let pid: number;
  try {
    await holder.query("BEGIN");
    await holder.query(lock, params);
    pid = (await holder.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")).rows[0]!.pid;
  } catch (error) {
    await Promise.all([holder.end(), watcher.end()]);
    throw error;
  }
  const queued = async () => {
    const r = await watcher.query<{ n: number }>(
      `WITH direct AS (
         SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid)))
       SELECT count(*)::int AS n FROM pg_stat_activity s
       WHERE s.pid IN (SELECT pid FROM direct)
          OR EXISTS (SELECT 1 FROM direct d WHERE d.pid = ANY(pg_blocking_pids(s.pid)))`,
      [pid],
    );
    return r.rows[0]!.n;
  };
  let released = false;
  return {
    queued,
    async waiting(n, what) {
      await eventually(async () => ((await queued()) >= n ? true : undefined), 10_000, what);
    },
    async release() {
      if (released) return;
      released = true;
      try {
        await holder.query("ROLLBACK");
      } finally {
        await Promise.all([holder.end(), watcher.end()]);
      }
    },
  };
}

export interface TestSchema {
  url: string;
  db: Db;
  drop(): Promise<void>;
}

/** A freshly migrated schema of its own, and a Prisma client bound to it. */
export async function createTestSchema(prefix = "t"): Promise<TestSchema> {
  const schema = uniqueName(prefix);
  const url = withDatabase(SERVER_URL, new URL(SERVER_URL).pathname.slice(1) || "postgres", schema);
  await migrate(url);
  const db = createDb(url, { poolSize: 4 });
  return {
    url,
    db,
    async drop() {
      await db.$disconnect();
      await admin((c) => c.query(`DROP SCHEMA IF EXISTS ${quoteIdent(schema)} CASCADE`));
    },
  };
}

/** An empty database of its own, for tests of what happens on a brand-new install. */
export async function createEmptyDatabase(
  prefix = "sendonce_test",
): Promise<{ url: string; drop(): Promise<void> }> {
  const name = uniqueName(prefix);
  await admin((c) => c.query(`CREATE DATABASE ${quoteIdent(name)}`));
  return {
    url: withDatabase(SERVER_URL, name),
    drop: () =>
      admin((c) => c.query(`DROP DATABASE IF EXISTS ${quoteIdent(name)} WITH (FORCE)`)).then(
        () => undefined,
      ),
  };
}
