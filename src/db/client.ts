import { PrismaPg } from "@prisma/adapter-pg";
import pg from "pg";
import { PrismaClient } from "../generated/prisma/client";
import type { Prisma } from "../generated/prisma/client";
import { registerPool, sqlPool } from "./sql";
import { connectionOptions } from "./url";

export type Db = PrismaClient;
/** A client inside an interactive transaction. */
export type Tx = Prisma.TransactionClient;

/** A Prisma client on the pg driver adapter (Prisma 7 has no query-engine binary). */
export function createDb(databaseUrl: string, opts: { poolSize?: number } = {}): Db {
  const { connectionString, schema } = connectionOptions(databaseUrl);
  // Prisma qualifies its own queries with the schema; the ledger's raw SQL relies on the
  // search path instead, so every pooled connection starts in the configured schema.
  const searchPath = `"${schema.replace(/"/g, '""')}"`.replace(/([\\ ])/g, "\\$1");
  // One pool for both: Prisma's adapter and the hot path's plain SQL (src/db/sql.ts).
  const pool = new pg.Pool({
    connectionString,
    max: opts.poolSize ?? 10,
    options: `-c search_path=${searchPath}`,
  });
  // A Postgres restart ends every connection with an error. One that reaches a checked-out
  // client between two queries has no listener of the pool's or the adapter's, and an
  // unhandled 'error' event ends the process. The next query on that client fails instead,
  // and the pool replaces it.
  pool.on("connect", (client) => client.on("error", () => {}));
  const db = new PrismaClient({
    adapter: new PrismaPg(pool, { schema, disposeExternalPool: true }),
  });
  registerPool(db, sqlPool(pool));
  return db;
}

/** Interactive transactions wait on the customer lock; Prisma's 2 s/5 s defaults are too short. */
export const TX_OPTIONS = { maxWait: 30_000, timeout: 60_000 } as const;
