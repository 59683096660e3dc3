// Each test file gets its own Postgres schema (or database), migrated from scratch, so files
// run in parallel without seeing each other's rows.
import { randomBytes } from "node:crypto";
import pg from "pg";
import { createDb } from "../../src/db/client";
import type { Db } from "../../src/db/client";
import { migrate, quoteIdent } from "../../src/db/migrate";

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
