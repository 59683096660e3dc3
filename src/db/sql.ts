// Plain SQL for the hot path. The engine's per-send statements run straight on the pg pool
// that Prisma's adapter also uses: one round trip each, no query compilation, and transactions
// that are a BEGIN and a COMMIT on one pooled connection. Prisma stays for everything else.
import pg from "pg";
import { Prisma } from "../generated/prisma/client";
import type { Db, Tx } from "./client";
import { grouping } from "./group";
import type { Queryable, Sql } from "./wire";
import { Statement, sqlFrom, statement, trip } from "./wire";

export type { Sql } from "./wire";
export { Statement, stmt, withCtes } from "./wire";

/** A pool: statements on any connection, or a transaction on one. */
export interface SqlPool {
  sql: Sql;
  /**
   * Single statements that need no transaction of their own, coalesced: those issued in the
   * same turn of the event loop go to Postgres together, in one round trip and one commit.
   * Each still gets its own rows; if one fails, each is run again on its own, so one
   * statement's error is never another's.
   */
  shared: Sql;
  /**
   * `shared`, for statements that lock rows of customer `customerId` (an event stored with its
   * profile): each round trip runs them in customer order, as group transactions lock.
   */
  sharedFor: (customerId: string) => Sql;
  /** Runs `fn` in one transaction: committed when it returns, rolled back when it throws. */
  tx: <T>(fn: (sql: Sql) => Promise<T>) => Promise<T>;
  /**
   * `tx`, for a transaction that locks customer `key` first and touches only that customer's
   * rows: concurrent ones of other customers share its round trips and its commit (group.ts).
   */
  grouped: <T>(key: string, fn: (sql: Sql) => Promise<T>) => Promise<T>;
}

/** Runs `fn` on one connection of the pool (a lost connection is dropped by the pool). */
async function onClient<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    return await fn(client);
  } finally {
    client.release();
  }
}

/** A transaction's state: its BEGIN rides on its first round trip, its COMMIT may on its last. */
interface Opening {
  sent: boolean;
  committed: boolean;
}

/**
 * Plain SQL on a pool or a connection. With `opening`, the first round trip on it also carries
 * the transaction's BEGIN, so a transaction costs no round trip of its own to open, and `last`
 * carries its COMMIT.
 */
function sqlOn(target: Queryable, opening?: Opening): Sql {
  const many = async (
    statements: readonly Statement[],
    commit = false,
  ): Promise<pg.QueryResult[]> => {
    if (opening?.committed) throw new Error("a statement after the transaction's last");
    const head = opening && !opening.sent ? ["BEGIN"] : [];
    const tail = opening && commit ? ["COMMIT"] : [];
    if (opening) opening.sent = true;
    if (head.length === 0 && tail.length === 0 && statements.length === 1) {
      const { strings, values } = statements[0]!;
      return [await target.query(statement(strings, values))];
    }
    const results =
      target instanceof pg.Pool
        ? await onClient(target, (client) => trip(client, head, statements, tail))
        : await trip(target, head, statements, tail);
    if (opening && commit) opening.committed = true;
    return results.slice(head.length);
  };
  return sqlFrom(many);
}

/** At most this many statements share a round trip. */
const SHARED_BATCH = 64;

/**
 * Coalesced autocommit statements. In a `sorted` coalescer every statement has a key (the
 * customer whose rows it locks) and each round trip runs its statements in key order, the
 * order group transactions take customer locks in: a trip that must wait for one customer
 * never holds a later one, so the two cannot deadlock.
 */
function coalescing(pool: pg.Pool, sorted: boolean): (key?: string) => Sql {
  type Waiting = {
    key: string;
    statement: Statement;
    resolve: (r: pg.QueryResult) => void;
    reject: (e: unknown) => void;
  };
  let pending: Waiting[] = [];
  let scheduled = false;
  const alone = (w: Waiting) =>
    pool.query(statement(w.statement.strings, w.statement.values)).then(w.resolve, w.reject);
  const flush = async () => {
    scheduled = false;
    const batch = pending;
    pending = [];
    if (batch.length === 0) return;
    if (batch.length === 1) return alone(batch[0]!);
    // A stable sort: one key's statements stay in the order they were issued.
    if (sorted) batch.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    let results: pg.QueryResult[];
    try {
      const statements = batch.map((w) => w.statement);
      results = await onClient(pool, (client) => trip(client, [], statements));
    } catch {
      // The batch ran as one implicit transaction, so nothing of it stands: each on its own.
      await Promise.all(batch.map(alone));
      return;
    }
    batch.forEach((w, i) => w.resolve(results[i]!));
  };
  const one = (key: string, statement: Statement) =>
    new Promise<pg.QueryResult>((resolve, reject) => {
      pending.push({ key, statement, resolve, reject });
      if (pending.length >= SHARED_BATCH) void flush();
      else if (!scheduled) {
        scheduled = true;
        setImmediate(() => void flush());
      }
    });
  // Each statement in its own place in the batches: those of one call follow each other.
  return (key = "") =>
    sqlFrom(async (statements) => {
      const results: pg.QueryResult[] = [];
      for (const s of statements) results.push(await one(key, s));
      return results;
    });
}

export function sqlPool(pool: pg.Pool): SqlPool {
  const tx: SqlPool["tx"] = async (fn) => {
    const client = await pool.connect();
    const opening: Opening = { sent: false, committed: false };
    let broken: Error | undefined;
    try {
      const result = await fn(sqlOn(client, opening));
      if (opening.sent && !opening.committed) await client.query("COMMIT");
      return result;
    } catch (error) {
      try {
        if (opening.sent && !opening.committed) await client.query("ROLLBACK");
      } catch (rollback) {
        // The connection itself failed (a database restart): never hand it out again.
        broken = rollback as Error;
      }
      throw error;
    } finally {
      client.release(broken);
    }
  };
  const byCustomer = coalescing(pool, true);
  return {
    sql: sqlOn(pool),
    shared: coalescing(pool, false)(),
    sharedFor: (customerId) => byCustomer(customerId),
    tx,
    grouped: grouping(pool, tx),
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
  const prismaValues = (values: readonly unknown[]): unknown[] =>
    values.map((v) =>
      v instanceof Statement ? Prisma.sql(v.strings, ...prismaValues(v.values)) : v,
    );
  const sql = (strings: TemplateStringsArray, ...values: unknown[]) =>
    on.$queryRaw(strings, ...prismaValues(values));
  sql.run = (strings: TemplateStringsArray, ...values: unknown[]) =>
    on.$executeRaw(strings, ...prismaValues(values));
  sql.many = async (...statements: Statement[]) => {
    const rows: unknown[][] = [];
    for (const { strings, values } of statements)
      rows.push(await on.$queryRaw<unknown[]>(strings, ...prismaValues(values)));
    return rows;
  };
  sql.last = sql;
  return sql as Sql;
}
