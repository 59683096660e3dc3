// Group transactions: concurrent transactions of different customers share one transaction's
// round trips and commit, yet each behaves as if it ran alone — its error is its own, and
// transactions of the same customer never share.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Sql } from "../../src/db/sql";
import { poolOf, stmt } from "../../src/db/sql";
import type { TestSchema } from "../support/db";
import { createTestSchema } from "../support/db";

let schema: TestSchema;
beforeAll(async () => {
  schema = await createTestSchema("group");
  const { sql } = poolOf(schema.db);
  await sql`INSERT INTO "Customer" (id, "updatedAt", attributes)
            SELECT 'g' || i, now(), '{"n": 0}' FROM generate_series(0, 19) i`;
});
afterAll(() => schema.drop());

const grouped = <T>(key: string, fn: (sql: Sql) => Promise<T>) =>
  poolOf(schema.db).grouped(key, fn);

/** Locks customer `id`, as the engine's transactions do first, and returns the transaction id. */
const lockAndTxid = async (sql: Sql, id: string) => {
  const [, rows] = await sql.many(
    stmt`SELECT 1 FROM "Customer" WHERE id = ${id} FOR UPDATE`,
    stmt`SELECT txid_current()::text AS txid`,
  );
  return (rows![0] as { txid: string }).txid;
};

/** "ok" for each member that succeeded, its error message for each that failed. */
const outcomes = (results: PromiseSettledResult<unknown>[]) =>
  results.map((r) => (r.status === "fulfilled" ? "ok" : String((r.reason as Error).message)));

describe("grouped transactions", () => {
  it("of different customers, started together, share one transaction", async () => {
    const txids = await Promise.all(
      ["g1", "g2", "g3", "g4"].map((id) => grouped(id, (sql) => lockAndTxid(sql, id))),
    );
    expect(new Set(txids).size).toBe(1);
  });

  it("of the same customer never share one", async () => {
    const txids = await Promise.all(
      ["g5", "g5", "g5"].map((id) => grouped(id, (sql) => lockAndTxid(sql, id))),
    );
    expect(new Set(txids).size).toBe(3);
  });

  it("keep one member's failure to itself: the others commit once, the failing one rolls back", async () => {
    const { sql } = poolOf(schema.db);
    const bump = (id: string) => (s: Sql) =>
      s.many(
        stmt`SELECT 1 FROM "Customer" WHERE id = ${id} FOR UPDATE`,
        stmt`UPDATE "Customer" SET attributes = jsonb_build_object('n', (attributes->>'n')::int + 1) WHERE id = ${id}`,
      );
    const results = await Promise.allSettled([
      grouped("g6", bump("g6")),
      grouped("g7", async (s) => {
        await bump("g7")(s);
        await s`SELECT 1 / ${0}::int`; // a database error, after a write
      }),
      grouped("g8", async (s) => {
        await bump("g8")(s);
        throw new Error("the member's own mistake");
      }),
      grouped("g9", bump("g9")),
    ]);
    expect(outcomes(results)).toEqual([
      "ok",
      expect.stringMatching(/division by zero/),
      expect.stringMatching(/own mistake/),
      "ok",
    ]);
    const rows = await sql<{ id: string; n: number }>`
      SELECT id, (attributes->>'n')::int AS n FROM "Customer" WHERE id IN ('g6', 'g7', 'g8', 'g9') ORDER BY id`;
    expect(rows).toEqual([
      { id: "g6", n: 1 },
      { id: "g7", n: 0 },
      { id: "g8", n: 0 },
      { id: "g9", n: 1 },
    ]);
  });

  it("survive a member that throws before its first statement, or runs one after its last", async () => {
    const results = await Promise.allSettled([
      grouped("g10", (sql) => lockAndTxid(sql, "g10")),
      grouped("g11", () => {
        throw new Error("thrown at once");
      }),
      grouped("g12", async (sql) => {
        await sql.last`SELECT 1`;
        await sql`SELECT 2`;
      }),
      grouped("g13", (sql) => lockAndTxid(sql, "g13")),
    ]);
    expect(outcomes(results)).toEqual([
      "ok",
      expect.stringMatching(/thrown at once/),
      expect.stringMatching(/after the transaction's last/),
      "ok",
    ]);
  });

  it("under contention: 400 locked increments over 20 customers, none lost, none doubled, no deadlock", async () => {
    const { sql } = poolOf(schema.db);
    await sql`UPDATE "Customer" SET attributes = '{"n": 0}' WHERE id LIKE 'g%'`;
    await Promise.all(
      Array.from({ length: 400 }, (_, i) => {
        const id = `g${(i * 7) % 20}`;
        return grouped(id, async (s) => {
          const [, rows] = await s.many(
            stmt`SELECT 1 FROM "Customer" WHERE id = ${id} FOR UPDATE`,
            stmt`SELECT (attributes->>'n')::int AS n FROM "Customer" WHERE id = ${id}`,
          );
          const n = (rows![0] as { n: number }).n;
          await s.last`UPDATE "Customer" SET attributes = jsonb_build_object('n', ${n + 1}::int) WHERE id = ${id}`;
        });
      }),
    );
    const [total] = await sql<{ sum: bigint; min: number; max: number }>`
      SELECT sum((attributes->>'n')::int) AS sum, min((attributes->>'n')::int) AS min, max((attributes->>'n')::int) AS max
      FROM "Customer" WHERE id LIKE 'g%'`;
    expect(total).toEqual({ sum: 400n, min: 20, max: 20 });
  });
});
