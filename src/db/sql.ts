// Plain SQL for the hot path. The engine's per-send statements run straight on the pg pool
// that Prisma's adapter also uses: one round trip each, no query compilation, and transactions
// that are a BEGIN and a COMMIT on one pooled connection. Prisma stays for everything else.
import pg from "pg";
import { Prisma } from "../generated/prisma/client";
import type { Db, Tx } from "./client";

/**
 * A tagged template that runs one statement: `await sql<Row>\`SELECT … WHERE id = ${id}\``.
 * Values become bind parameters, never SQL text. Rows come back with int8 as bigint, as from
 * Prisma's `$queryRaw`, so the two are interchangeable.
 */
export interface Sql {
  <T = Record<string, unknown>>(strings: TemplateStringsArray, ...values: unknown[]): Promise<T[]>;
  /** Runs a statement and returns how many rows it touched. */
  run(strings: TemplateStringsArray, ...values: unknown[]): Promise<number>;
}

/** A pool: statements on any connection, or a transaction on one. */
export interface SqlPool {
  sql: Sql;
  /** Runs `fn` in one transaction: committed when it returns, rolled back when it throws. */
  tx<T>(fn: (sql: Sql) => Promise<T>): Promise<T>;
}

const INT8 = 20;
const parseInt8 = (value: string) => BigInt(value);
const TYPES = {
  getTypeParser: (oid: number): ((value: string) => unknown) =>
    oid === INT8 ? parseInt8 : (pg.types.getTypeParser(oid, "text") as (value: string) => unknown),
};

/** SQL text to splice into a statement as it is: constants of our own, never input. */
export class Fragment {
  constructor(readonly text: string) {}
}

function statement(strings: TemplateStringsArray, values: unknown[]): pg.QueryConfig {
  let text = strings[0]!;
  const params: unknown[] = [];
  values.forEach((value, i) => {
    if (value instanceof Fragment) text += value.text;
    else text += `$${params.push(value)}`;
    text += strings[i + 1]!;
  });
  return { text, values: params, types: TYPES };
}

type Queryable = Pick<pg.Pool | pg.PoolClient, "query">;

function sqlOn(target: Queryable): Sql {
  const sql = async <T>(strings: TemplateStringsArray, ...values: unknown[]) =>
    (await target.query(statement(strings, values))).rows as T[];
  sql.run = async (strings: TemplateStringsArray, ...values: unknown[]) =>
    (await target.query(statement(strings, values))).rowCount ?? 0;
  return sql;
}

export function sqlPool(pool: pg.Pool): SqlPool {
  return {
    sql: sqlOn(pool),
    async tx(fn) {
      const client = await pool.connect();
      let broken: Error | undefined;
      try {
        await client.query("BEGIN");
        const result = await fn(sqlOn(client));
        await client.query("COMMIT");
        return result;
      } catch (error) {
        try {
          await client.query("ROLLBACK");
        } catch (rollback) {
          // The connection itself failed (a database restart): never hand it out again.
          broken = rollback as Error;
        }
        throw error;
      } finally {
        client.release(broken);
      }
    },
  };
}

const pools = new WeakMap<object, SqlPool>();

/** Called by createDb: the Prisma client and its pool, known together. */
export function registerPool(db: Db, pool: SqlPool): void {
  pools.set(db, pool);
}

/** The plain-SQL pool behind a Prisma client made by createDb. */
export function poolOf(db: Db): SqlPool {
  const pool = pools.get(db);
  if (!pool) throw new Error("this Prisma client was not made by createDb");
  return pool;
}

/**
 * Plain SQL on whatever the caller holds: a Sql already, the pool behind a Prisma client, or
 * the connection of a Prisma interactive transaction (its `$queryRaw` takes the same template).
 */
export function sqlOf(on: Sql | Db | Tx): Sql {
  if (typeof on === "function") return on;
  const pool = pools.get(on);
  if (pool) return pool.sql;
  const prismaValues = (values: unknown[]) =>
    values.map((v) => (v instanceof Fragment ? Prisma.raw(v.text) : v));
  const sql = (strings: TemplateStringsArray, ...values: unknown[]) =>
    on.$queryRaw(strings, ...prismaValues(values));
  sql.run = (strings: TemplateStringsArray, ...values: unknown[]) =>
    on.$executeRaw(strings, ...prismaValues(values));
  return sql as Sql;
}
