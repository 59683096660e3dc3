// Statements on the wire: the tagged-template statement, its values as bind parameters, and
// round trips of several statements pipelined over the extended protocol, each prepared once
// per connection. sql.ts builds pools, transactions and coalescing on top.
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

export type Queryable = pg.Pool | pg.PoolClient;

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

/**
 * Every statement text gets a number, and every connection prepares it once: Postgres parses
 * and plans it there once, not on every run. The texts are the program's own (values are never
 * part of them), so there are few; past this many, new ones simply run unprepared.
 */
const MAX_PREPARED = 1_000;
const numbers = new Map<string, number>();

/** The prepared name of a statement text (`p<n>`), or "" once MAX_PREPARED are named. */
function nameOf(text: string): string {
  let n = numbers.get(text);
  if (n === undefined && numbers.size < MAX_PREPARED) {
    n = numbers.size;
    numbers.set(text, n);
  }
  return n === undefined ? "" : `p${n}`;
}

/**
 * A statement's text depends only on its shape: which template each piece comes from and
 * which of its values are pieces. The shape is a short key (`3($,5($),$)`), and the text and
 * prepared name of each shape are kept, so a statement run again is neither rebuilt nor
 * hashed in full.
 */
const templateIds = new WeakMap<TemplateStringsArray, number>();
let nextTemplateId = 0;
const shapes = new Map<string, { text: string; name: string }>();
const MAX_SHAPES = 4 * MAX_PREPARED;

/** Collects the values of `s` and its pieces in order; returns the shape key. */
function shapeOf(s: Statement, params: unknown[]): string {
  let id = templateIds.get(s.strings);
  if (id === undefined) templateIds.set(s.strings, (id = nextTemplateId++));
  let key = `${id}(`;
  for (const value of s.values) {
    if (value instanceof Statement) key += shapeOf(value, params);
    else {
      params.push(value);
      key += "$";
    }
    key += ",";
  }
  return `${key})`;
}

/** The text with `$n` for each value (in the order shapeOf collects them), pieces spliced in. */
function textOf(s: Statement, counter = { n: 0 }): string {
  let text = s.strings[0]!;
  s.values.forEach((value, i) => {
    text += value instanceof Statement ? textOf(value, counter) : `$${++counter.n}`;
    text += s.strings[i + 1]!;
  });
  return text;
}

/** A statement's text, prepared name and values, its shape's text and name built once. */
function shaped(s: Statement): { text: string; name: string; params: unknown[] } {
  const params: unknown[] = [];
  const key = shapeOf(s, params);
  let known = shapes.get(key);
  if (!known) {
    const text = textOf(s);
    known = { text, name: nameOf(text) };
    if (shapes.size < MAX_SHAPES) shapes.set(key, known);
  }
  return { ...known, params };
}

/** One statement over the extended protocol, as a named prepared statement. */
export function statement(
  strings: TemplateStringsArray,
  values: readonly unknown[],
): pg.QueryConfig {
  const { text, name, params } = shaped(new Statement(strings, values));
  return { ...(name && { name }), text, values: params, types: TYPES };
}

/** The parts of pg's connection (pg/lib/connection.js) that a pipeline uses. */
interface Wire {
  stream: { cork?: () => void; uncork?: () => void };
  parse(query: { name: string; text: string; types: number[] }): void;
  bind(config: {
    statement: string;
    values: readonly unknown[];
    valueMapper: (value: unknown) => unknown;
  }): void;
  describe(message: { type: "P"; name: string }): void;
  execute(config: { portal: string; rows: number }): void;
  sync(): void;
  on(event: "parseComplete", listener: () => void): void;
  off(event: "parseComplete", listener: () => void): void;
  /** pg's record of the named statements parsed on this connection, shared with its Query. */
  parsedStatements: Record<string, string>;
  submittedNamedStatements: Record<string, string>;
}

interface Field {
  name: string;
  dataTypeID: number;
}

const asIs = (value: unknown) => value;

/** pg's own conversion of a value to its text form, as its Query binds values. */
const pgPrepareValue = (pg as unknown as { utils: { prepareValue: (v: unknown) => unknown } }).utils
  .prepareValue;

/**
 * pg's conversion, but a date in years 1–9999 as ISO 8601 in UTC, which the engine builds
 * natively (pg formats it field by field in local time; every column here is timestamptz, so
 * the two mean the same instant).
 */
function prepareValue(value: unknown): unknown {
  if (value instanceof Date) {
    const year = value.getUTCFullYear();
    if (year >= 1 && year <= 9999) return value.toISOString();
  }
  return pgPrepareValue(value);
}

/**
 * Several statements in one round trip: each bound and executed over the extended protocol,
 * under its prepared name (parsed first, the first time on this connection), then one Sync.
 * Like a multi-statement simple query they run in order in one implicit transaction (or the
 * caller's), and after an error Postgres skips the rest. pg's client runs it as a query of its
 * own (a Submittable), handing it the replies.
 */
class Pipeline {
  readonly results: pg.QueryResult[] = [];
  readonly done: Promise<pg.QueryResult[]>;
  private settle!: { resolve: (r: pg.QueryResult[]) => void; reject: (e: unknown) => void };
  private fields: Field[] = [];
  private rows: Record<string, unknown>[] = [];
  /** Names parsed by this trip, in order, and how many Postgres has confirmed. */
  private parsing: { name: string; text: string }[] = [];
  private confirmed = 0;
  private wire?: Wire;
  private readonly onParsed = () => {
    const { name, text } = this.parsing[this.confirmed++]!;
    if (name === "") return;
    this.wire!.parsedStatements[name] = text;
    delete this.wire!.submittedNamedStatements[name];
  };

  constructor(
    private readonly statements: readonly { name: string; text: string; values: unknown[] }[],
  ) {
    this.done = new Promise((resolve, reject) => (this.settle = { resolve, reject }));
  }

  submit(connection: pg.Connection): void {
    const wire = connection as unknown as Wire;
    this.wire = wire;
    const known = (name: string) =>
      name !== "" &&
      (wire.parsedStatements[name] !== undefined ||
        wire.submittedNamedStatements[name] !== undefined);
    wire.on("parseComplete", this.onParsed);
    // One write for the whole trip.
    wire.stream.cork?.();
    try {
      for (const { name, text, values } of this.statements) {
        if (!known(name)) {
          wire.parse({ name, text, types: [] });
          this.parsing.push({ name, text });
          if (name !== "") wire.submittedNamedStatements[name] = text;
        }
        wire.bind({ statement: name, values, valueMapper: asIs });
        wire.describe({ type: "P", name: "" });
        wire.execute({ portal: "", rows: 0 });
      }
      wire.sync();
    } finally {
      wire.stream.uncork?.();
    }
  }

  handleRowDescription(message: { fields: Field[] }): void {
    this.fields = message.fields;
  }

  handleDataRow(message: { fields: (string | null)[] }): void {
    const row: Record<string, unknown> = {};
    message.fields.forEach((value, i) => {
      const field = this.fields[i]!;
      row[field.name] = value === null ? null : TYPES.getTypeParser(field.dataTypeID)(value);
    });
    this.rows.push(row);
  }

  handleCommandComplete(message: { text: string }): void {
    const [command = "", ...rest] = message.text.split(" ");
    const count = Number(rest[rest.length - 1]);
    this.complete(command, Number.isNaN(count) ? null : count);
  }

  handleEmptyQuery(): void {
    this.complete("", null);
  }

  handleReadyForQuery(): void {
    this.finish();
    this.settle.resolve(this.results);
  }

  handleError(error: unknown): void {
    this.finish();
    // Parses Postgres skipped after the error did not happen.
    for (const { name } of this.parsing.slice(this.confirmed)) {
      if (name !== "") delete this.wire?.submittedNamedStatements[name];
    }
    this.settle.reject(error);
  }

  handlePortalSuspended(): void {}
  handleCopyInResponse(): void {}
  handleCopyData(): void {}

  private complete(command: string, rowCount: number | null): void {
    this.results.push({ command, rowCount, oid: 0, fields: [], rows: this.rows });
    this.fields = [];
    this.rows = [];
  }

  private finish(): void {
    this.wire?.off("parseComplete", this.onParsed);
  }
}

/**
 * The statements, then `tail` texts (a COMMIT), in one round trip on `client`, after `head`
 * texts (a BEGIN). Returns the results of `head` and the statements, in order.
 */
export async function trip(
  client: pg.ClientBase,
  head: string[],
  statements: readonly Statement[],
  tail: string[] = [],
): Promise<pg.QueryResult[]> {
  const plain = (text: string) => ({ text, name: nameOf(text), params: [] as unknown[] });
  // Values are converted here, before anything is sent: a value pg cannot convert throws now,
  // not half-way through writing the trip (which would leave the connection waiting forever).
  const all = [...head.map(plain), ...statements.map(shaped), ...tail.map(plain)].map(
    ({ text, name, params }) => ({ name, text, values: params.map(prepareValue) }),
  );
  const pipeline = new Pipeline(all);
  void client.query(pipeline);
  const results = await pipeline.done;
  return results.slice(0, head.length + statements.length);
}
