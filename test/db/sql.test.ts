// Statements sent together in one round trip (pipelined over the extended protocol) bind their
// values as single statements do, and must read back exactly the same, whatever quotes,
// backslashes or JSON they hold.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDb } from "../../src/db/client";
import { poolOf, stmt } from "../../src/db/sql";
import type { TestSchema } from "../support/db";
import { createTestSchema } from "../support/db";

let schema: TestSchema;
beforeAll(async () => {
  schema = await createTestSchema("sql");
});
afterAll(() => schema.drop());

const AWKWARD = [
  "plain",
  "it's",
  "back\\slash",
  "both ' and \\ and \\'",
  '\'; DROP TABLE "Action"; --',
  "ünïcødé ✓ 🎉",
  "",
  "line\nbreak\ttab",
];

describe("statements in one round trip", () => {
  it("read back exactly as bind parameters do: strings, numbers, dates, arrays, JSON, NULL", async () => {
    const { sql } = poolOf(schema.db);
    const at = new Date("2026-11-23T18:20:00.123Z");
    const json = JSON.stringify({ quote: "it's", slash: "a\\b", nested: ["x'y"] });
    for (const text of AWKWARD) {
      const bound = await sql<Record<string, unknown>>`
        SELECT ${text}::text AS t, ${42}::int AS n, ${9007199254740993n}::bigint AS b, ${true}::boolean AS f,
               ${at}::timestamptz AS d, ${[text, "a,b", 'q"uote']}::text[] AS a, ${json}::jsonb AS j, ${null}::text AS z`;
      const [, together] = await sql.many(
        stmt`SELECT 1`,
        stmt`
        SELECT ${text}::text AS t, ${42}::int AS n, ${9007199254740993n}::bigint AS b, ${true}::boolean AS f,
               ${at}::timestamptz AS d, ${[text, "a,b", 'q"uote']}::text[] AS a, ${json}::jsonb AS j, ${null}::text AS z`,
      );
      expect(together).toEqual(bound);
      expect(bound[0]).toMatchObject({ t: text, n: 42, b: 9007199254740993n, d: at, z: null });
    }
  });

  it("run in order inside a transaction: the lock is taken before the read that follows it", async () => {
    const { tx, sql } = poolOf(schema.db);
    await sql`INSERT INTO "Customer" (id, "updatedAt") VALUES ('c1', now())`;
    const seen = await tx(async (t) => {
      const [locked, read] = await t.many(
        stmt`SELECT id FROM "Customer" WHERE id = ${"c1"} FOR UPDATE`,
        stmt`SELECT count(*) AS n FROM "Customer"`,
      );
      return { locked, read };
    });
    expect(seen).toEqual({ locked: [{ id: "c1" }], read: [{ n: 1n }] });
  });

  it("roll back with the transaction when a later statement fails", async () => {
    const { tx, sql } = poolOf(schema.db);
    await expect(
      tx(async (t) => {
        await t.many(
          stmt`INSERT INTO "Customer" (id, "updatedAt") VALUES (${"c2"}, now())`,
          stmt`SELECT 1 / ${0}::int`,
        );
      }),
    ).rejects.toThrow(/division by zero/);
    expect(await sql`SELECT id FROM "Customer" WHERE id = 'c2'`).toEqual([]);
  });

  it("shared: statements of one turn get their own rows, and one's error is not another's", async () => {
    const { shared } = poolOf(schema.db);
    const results = await Promise.allSettled([
      shared<{ n: number }>`SELECT ${1}::int AS n`,
      shared<{ n: number }>`SELECT 1 / ${0}::int AS n`,
      shared<{ n: number }>`SELECT ${3}::int AS n`,
      shared.run`INSERT INTO "Customer" (id, "updatedAt") VALUES (${"c3"}, now())`,
    ]);
    expect(results.map((r) => (r.status === "fulfilled" ? r.value : "failed"))).toEqual([
      [{ n: 1 }],
      "failed",
      [{ n: 3 }],
      1,
    ]);
    // The insert is there once, though its first run was rolled back with the failed batch.
    expect(await shared`SELECT id FROM "Customer" WHERE id = 'c3'`).toEqual([{ id: "c3" }]);
  });
});

describe("sharedFor", () => {
  it("runs the statements of one round trip in customer order, the order group transactions lock in", async () => {
    const { sharedFor, sql } = poolOf(schema.db);
    await sql`CREATE SEQUENCE IF NOT EXISTS order_probe`;
    const [c, a, b] = await Promise.all(
      ["c", "a", "b"].map(
        (key) => sharedFor(key)<{ n: bigint }>`SELECT nextval('order_probe') AS n`,
      ),
    );
    expect([a![0]!.n, b![0]!.n, c![0]!.n]).toEqual([1n, 2n, 3n]);
  });
});

describe("prepared statements", () => {
  it("are prepared once per connection, and a trip that failed after a parse does not break the next", async () => {
    // One connection, so every trip below reuses it.
    const db = createDb(schema.url, { poolSize: 1 });
    try {
      const { tx, sql } = poolOf(db);
      const TEXTS = ["/* prep */", "1 / $1", "SELECT $1::int"];
      const prepared = async () =>
        (await sql<{ statement: string }>`SELECT statement FROM pg_prepared_statements`)
          .map((r) => r.statement)
          .filter((t) => TEXTS.some((mine) => t.includes(mine)));
      expect(await prepared()).toEqual([]);
      // A statement text this connection has not seen, first in a trip that fails after it.
      const insert = (id: string) =>
        stmt`INSERT INTO "Customer" (id, "updatedAt") VALUES (${id}, now()) RETURNING id /* prep */`;
      await expect(tx((t) => t.many(insert("p1"), stmt`SELECT 1 / ${0}::int`))).rejects.toThrow(
        /division by zero/,
      );
      // The parses stand after the rollback; the next trip must neither parse them again (an
      // error: the name exists) nor lose the insert.
      const [rows] = await tx((t) => t.many(insert("p2"), stmt`SELECT ${1}::int`));
      expect(rows).toEqual([{ id: "p2" }]);
      const [again] = await sql.many(insert("p3"), stmt`SELECT ${2}::int`);
      expect(again).toEqual([{ id: "p3" }]);
      // And as a single statement, the name pg's own query uses is the same.
      expect(await sql`SELECT ${3}::int`).toEqual([{ int4: 3 }]);
      expect(await prepared()).toHaveLength(3); // the insert, 1 / $1, and SELECT $1
      expect(await sql`SELECT id FROM "Customer" WHERE id LIKE 'p%' ORDER BY id`).toEqual([
        { id: "p2" },
        { id: "p3" },
      ]);
    } finally {
      await db.$disconnect();
    }
  });

  it("leave the connection usable when a value cannot be converted", async () => {
    const db = createDb(schema.url, { poolSize: 1 });
    try {
      const { tx, sql } = poolOf(db);
      const unconvertible = {
        toPostgres() {
          throw new Error("cannot convert this value");
        },
      };
      // Nothing of the trip may go out: a half-written one would hold the connection (and
      // the transaction's locks) until the socket died.
      await expect(
        tx((t) => t.many(stmt`SELECT ${1}::int`, stmt`SELECT ${unconvertible}::text`)),
      ).rejects.toThrow(/cannot convert/);
      await expect(
        sql.many(stmt`SELECT ${2}::int`, stmt`SELECT ${unconvertible}::text`),
      ).rejects.toThrow(/cannot convert/);
      expect(await sql.many(stmt`SELECT ${3}::int AS n`, stmt`SELECT 4 AS m`)).toEqual([
        [{ n: 3 }],
        [{ m: 4 }],
      ]);
    } finally {
      await db.$disconnect();
    }
  });

  it("are parsed again after an error that came before their parse", async () => {
    const db = createDb(schema.url, { poolSize: 1 });
    try {
      const { sql } = poolOf(db);
      // The failing statement comes first: Postgres skips the new text's parse, so the next
      // trip must parse it rather than believe it prepared.
      await expect(
        sql.many(stmt`SELECT 1 / ${0}::int AS first`, stmt`SELECT ${"x"}::text AS fresh`),
      ).rejects.toThrow(/division by zero/);
      expect(await sql.many(stmt`SELECT 1`, stmt`SELECT ${"y"}::text AS fresh`)).toEqual([
        [{ "?column?": 1 }],
        [{ fresh: "y" }],
      ]);
    } finally {
      await db.$disconnect();
    }
  });
});
