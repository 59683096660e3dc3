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
  /** Runs statements in order in one round trip; the rows of each. */
  many(...statements: Statement[]): Promise<unknown[][]>;
  /**
   * In a transaction: runs its last statement and commits in the same round trip; nothing may
   * run in the transaction after it. Elsewhere, the same as a plain call.
   */
  last: <T = Record<string, unknown>>(
    strings: TemplateStringsArray,
    ...values: unknown[]
  ) => Promise<T[]>;
}

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
  /** Runs `fn` in one transaction: committed when it returns, rolled back when it throws. */
  tx: <T>(fn: (sql: Sql) => Promise<T>) => Promise<T>;
}

type Queryable = Pick<pg.Pool | pg.PoolClient, "query">;

/** Runs `fn` on one connection of the pool (a lost connection is dropped by the pool). */
async function onClient<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    return await fn(client);
  } finally {
    client.release();
  }
}

const INT8 = 20;
const parseInt8 = (value: string) => BigInt(value);
const TYPES = {
  getTypeParser: (oid: number): ((value: string) => unknown) =>
    oid === INT8 ? parseInt8 : (pg.types.getTypeParser(oid, "text") as (value: string) => unknown),
};

/**
 * A statement, or a piece of one: sent with others in one round trip (`sql.many`), or spliced
 * into another statement as a value, its own values still bound as values.
 */
export class Statement {
  constructor(
    readonly strings: TemplateStringsArray,
    readonly values: readonly unknown[],
  ) {}
}

export function stmt(strings: TemplateStringsArray, ...values: unknown[]): Statement {
  return new Statement(strings, values);
}

/** The text with `render` applied to each value, pieces spliced in place. */
function expand({ strings, values }: Statement, render: (value: unknown) => string): string {
  let text = strings[0]!;
  values.forEach((value, i) => {
    text += value instanceof Statement ? expand(value, render) : render(value);
    text += strings[i + 1]!;
  });
  return text;
}

/**
 * Every statement text gets a number, and every connection prepares it once: Postgres parses
 * and plans it there once, not on every run. The texts are the program's own (values are never
 * part of them), so there are few; past this many, new ones simply run unprepared.
 */
const MAX_PREPARED = 1_000;
const numbers = new Map<string, number>();

function numberOf(text: string): number | undefined {
  let n = numbers.get(text);
  if (n === undefined && numbers.size < MAX_PREPARED) {
    n = numbers.size;
    numbers.set(text, n);
  }
  return n;
}

/** The text with `$n` for each value, and the values in order. */
function parameterised(s: Statement): { text: string; params: unknown[] } {
  const params: unknown[] = [];
  const text = expand(s, (v) => `$${params.push(v)}`);
  return { text, params };
}

/** One statement over the extended protocol, as a named prepared statement. */
function statement(strings: TemplateStringsArray, values: readonly unknown[]): pg.QueryConfig {
  const { text, params } = parameterised(new Statement(strings, values));
  const n = numberOf(text);
  return { ...(n !== undefined && { name: `p${n}` }), text, values: params, types: TYPES };
}

/**
 * What a connection has prepared with SQL PREPARE (names `q<n>`), or "unknown" after a round
 * trip that failed part-way: PREPARE is not undone by a rollback, so the truth is then read
 * back from the server.
 */
const preparedOn = new WeakMap<object, Set<string> | "unknown">();

async function preparedSet(client: Queryable): Promise<Set<string>> {
  const known = preparedOn.get(client);
  if (known instanceof Set) return known;
  const names = new Set<string>();
  if (known === "unknown") {
    const { rows } = await client.query<{ name: string }>(
      "SELECT name FROM pg_prepared_statements WHERE name LIKE 'q%'",
    );
    for (const { name } of rows) names.add(name);
  }
  preparedOn.set(client, names);
  return names;
}

/**
 * Several statements as one simple query on `client`: each an EXECUTE of its prepared form
 * (preceded, the first time on this connection, by its PREPARE), its values inlined as quoted
 * literals — untyped, exactly as bind parameters are, and escaped the way libpq does it.
 * Returns the results of `head` texts and statements, in order; `tail` texts (a COMMIT) follow.
 */
async function trip(
  client: Queryable,
  head: string[],
  statements: readonly Statement[],
  tail: string[] = [],
): Promise<pg.QueryResult[]> {
  const prepared = await preparedSet(client);
  const parts = [...head];
  const wanted = head.map((_, i) => i);
  const fresh: string[] = [];
  for (const s of statements) {
    const { text, params } = parameterised(s);
    const n = numberOf(text);
    if (n === undefined) {
      wanted.push(parts.push(inline(s)) - 1);
      continue;
    }
    const name = `q${n}`;
    if (!prepared.has(name) && !fresh.includes(name)) {
      parts.push(`PREPARE ${name} AS ${text}`);
      fresh.push(name);
    }
    const args = params.length > 0 ? `(${params.map(literal).join(", ")})` : "";
    wanted.push(parts.push(`EXECUTE ${name}${args}`) - 1);
  }
  let results: pg.QueryResult | pg.QueryResult[];
  try {
    // pg returns an array of results for several statements, though its type says one.
    results = (await client.query({ text: [...parts, ...tail].join(";\n"), types: TYPES })) as
      pg.QueryResult | pg.QueryResult[];
  } catch (error) {
    if (fresh.length > 0) preparedOn.set(client, "unknown");
    throw error;
  }
  for (const name of fresh) prepared.add(name);
  const all: pg.QueryResult[] = Array.isArray(results) ? results : [results];
  return wanted.map((i) => all[i]!);
}

/** A statement with its values inlined: past MAX_PREPARED texts. */
function inline(statement: Statement): string {
  return expand(statement, literal);
}

function literal(value: unknown): string {
  if (value === null || value === undefined) return "NULL";
  if (value instanceof Date) return quote(value.toISOString());
  if (Array.isArray(value)) {
    const items = (value as (string | number | null)[]).map((v) =>
      v === null ? "NULL" : `"${String(v).replace(/[\\"]/g, (c) => `\\${c}`)}"`,
    );
    return quote(`{${items.join(",")}}`);
  }
  switch (typeof value) {
    case "object":
      return quote(JSON.stringify(value));
    case "string":
      return quote(value);
    case "number":
    case "bigint":
    case "boolean":
      return quote(value.toString());
    default:
      throw new TypeError(`a ${typeof value} cannot be a SQL value`);
  }
}

function quote(text: string): string {
  const body = text.replace(/'/g, "''");
  return body.includes("\\") ? ` E'${body.replace(/\\/g, "\\\\")}'` : `'${body}'`;
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
  const sql = async <T>(strings: TemplateStringsArray, ...values: unknown[]) =>
    (await many([new Statement(strings, values)]))[0]!.rows as T[];
  sql.run = async (strings: TemplateStringsArray, ...values: unknown[]) =>
    (await many([new Statement(strings, values)]))[0]!.rowCount ?? 0;
  sql.many = async (...statements: Statement[]) =>
    (await many(statements)).map((r) => r.rows as unknown[]);
  sql.last = async <T>(strings: TemplateStringsArray, ...values: unknown[]) =>
    (await many([new Statement(strings, values)], true))[0]!.rows as T[];
  return sql;
}

/** At most this many statements share a round trip. */
const SHARED_BATCH = 64;

function coalescing(pool: pg.Pool): Sql {
  type Waiting = {
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
  const one = (strings: TemplateStringsArray, values: unknown[]) =>
    new Promise<pg.QueryResult>((resolve, reject) => {
      pending.push({ statement: new Statement(strings, values), resolve, reject });
      if (pending.length >= SHARED_BATCH) void flush();
      else if (!scheduled) {
        scheduled = true;
        setImmediate(() => void flush());
      }
    });
  const sql = async <T>(strings: TemplateStringsArray, ...values: unknown[]) =>
    (await one(strings, values)).rows as T[];
  sql.run = async (strings: TemplateStringsArray, ...values: unknown[]) =>
    (await one(strings, values)).rowCount ?? 0;
  sql.many = async (...statements: Statement[]) => {
    const rows: unknown[][] = [];
    for (const { strings, values } of statements) rows.push((await one(strings, [...values])).rows);
    return rows;
  };
  sql.last = sql;
  return sql;
}

export function sqlPool(pool: pg.Pool): SqlPool {
  return {
    sql: sqlOn(pool),
    shared: coalescing(pool),
    async tx(fn) {
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
