// Statements on the wire: the tagged-template statement, its values as bind parameters or as
// libpq-escaped literals, and round trips of several statements, each prepared once per
// connection. sql.ts builds pools, transactions and coalescing on top.
import pg from "pg";

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

/**
 * The Sql over a function that runs statements in order and gives their results; `last` asks
 * it to end the transaction with them.
 */
export function sqlFrom(
  many: (statements: readonly Statement[], last?: boolean) => Promise<pg.QueryResult[]>,
): Sql {
  const one = async (strings: TemplateStringsArray, values: unknown[], last = false) =>
    (await many([new Statement(strings, values)], last))[0]!;
  const sql = async <T>(strings: TemplateStringsArray, ...values: unknown[]) =>
    (await one(strings, values)).rows as T[];
  sql.run = async (strings: TemplateStringsArray, ...values: unknown[]) =>
    (await one(strings, values)).rowCount ?? 0;
  sql.many = async (...statements: Statement[]) =>
    (await many(statements)).map((r) => r.rows as unknown[]);
  sql.last = async <T>(strings: TemplateStringsArray, ...values: unknown[]) =>
    (await one(strings, values, true)).rows as T[];
  return sql;
}

export type Queryable = Pick<pg.Pool | pg.PoolClient, "query">;

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

/** `WITH a AS (…), b AS (…) main`, for the CTEs given as `name AS (…)`; none: just `main`. */
export function withCtes(ctes: readonly Statement[], main: Statement): Statement {
  const [first, ...rest] = ctes;
  if (!first) return main;
  return stmt`WITH ${rest.reduce((list, cte) => stmt`${list}, ${cte}`, first)} ${main}`;
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
export function statement(
  strings: TemplateStringsArray,
  values: readonly unknown[],
): pg.QueryConfig {
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
export async function trip(
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
