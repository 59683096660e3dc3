import { cpSync, mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MIGRATIONS_DIR, listMigrations, migrate } from "../../src/db/migrate";
import { runCli } from "../support/cli";
import { createEmptyDatabase, createTestSchema, query } from "../support/db";

describe("sendonce db migrate", () => {
  let database: { url: string; drop(): Promise<void> };
  beforeAll(async () => {
    database = await createEmptyDatabase();
  });
  afterAll(() => database.drop());

  it("migrates an empty database, then is a no-op", async () => {
    const first = runCli(["db", "migrate"], { DATABASE_URL: database.url });
    expect(first.stderr).toBe("");
    expect(first.code).toBe(0);
    expect(first.stdout).toContain(`applied ${listMigrations()[0]}`);

    const second = runCli(["db", "migrate"], { DATABASE_URL: database.url });
    expect(second.code).toBe(0);
    expect(second.stdout).toMatch(/is up to date \(\d+ migrations? applied\)/);

    const recorded = await query<{
      migration_name: string;
      checksum: string;
      finished_at: Date | null;
    }>(
      database.url,
      `SELECT migration_name, checksum, finished_at FROM "_prisma_migrations" ORDER BY migration_name`,
    );
    expect(recorded.map((r) => r.migration_name)).toEqual(listMigrations());
    expect(recorded.every((r) => /^[0-9a-f]{64}$/.test(r.checksum) && r.finished_at)).toBe(true);
  });

  it("gives a schema Prisma can use, with the ledger unique on the action key", async () => {
    // A schema of its own (DATABASE_URL ?schema=...), as every database test file gets.
    const schema = await createTestSchema();
    const db = schema.db;
    try {
      await db.customer.create({ data: { id: "c_1", email: "ana@example.com" } });
      const event = await db.event.create({
        data: {
          eventId: "evt_1",
          type: "cart.updated",
          customerId: "c_1",
          occurredAt: new Date(),
          payloadHash: "h",
        },
      });
      const enrollment = await db.enrollment.create({
        data: {
          journeyId: "cart",
          journeyVersion: "v1",
          customerId: "c_1",
          reference: "cart_1",
          triggerEventId: event.id,
        },
      });
      const action = {
        key: "k1",
        journeyId: "cart",
        stepId: "reminder_email",
        customerId: "c_1",
        reference: "cart_1",
        enrollmentId: enrollment.id,
        channel: "email" as const,
        state: "claimed" as const,
      };
      await db.action.create({ data: action });
      await expect(db.action.create({ data: action })).rejects.toMatchObject({ code: "P2002" });
      await expect(
        db.event.create({
          data: {
            eventId: "evt_1",
            type: "cart.updated",
            customerId: "c_1",
            occurredAt: new Date(),
            payloadHash: "h",
          },
        }),
      ).rejects.toMatchObject({ code: "P2002" });
    } finally {
      await schema.drop();
    }
  });

  it("refuses a migration that was edited after it was applied", async () => {
    const dir = mkdtempSync(join(tmpdir(), "sendonce-migrations-"));
    cpSync(MIGRATIONS_DIR, dir, { recursive: true });
    const [first] = listMigrations(dir);
    writeFileSync(join(dir, first!, "migration.sql"), "-- edited\n", { flag: "a" });
    await expect(migrate(database.url, dir)).rejects.toThrow(/was edited after it was applied/);
  });

  it("leaves nothing half-applied when a migration fails", async () => {
    const dir = mkdtempSync(join(tmpdir(), "sendonce-migrations-"));
    cpSync(MIGRATIONS_DIR, dir, { recursive: true });
    mkdirSync(join(dir, "29990101000000_broken"));
    writeFileSync(
      join(dir, "29990101000000_broken", "migration.sql"),
      `CREATE TABLE "Half" (id INT);\nALTER TABLE "NoSuchTable" ADD COLUMN x INT;\n`,
    );
    await expect(migrate(database.url, dir)).rejects.toThrow(
      /29990101000000_broken failed and was rolled back/,
    );
    const tables = await query(
      database.url,
      `SELECT 1 FROM information_schema.tables WHERE table_name = 'Half'`,
    );
    expect(tables).toEqual([]);
    const recorded = await query(
      database.url,
      `SELECT 1 FROM "_prisma_migrations" WHERE migration_name = '29990101000000_broken'`,
    );
    expect(recorded).toEqual([]);
  });

  it("names the missing or malformed setting instead of failing obscurely", () => {
    const missing = runCli(["db", "migrate"], { DATABASE_URL: "" });
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/DATABASE_URL is not set/);
    const bad = runCli(["db", "migrate"], { DATABASE_URL: "mysql://root:hunter2@localhost/x" });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/DATABASE_URL must be a URL starting with postgresql:\/\//);
    expect(bad.stderr).not.toContain("hunter2");
  });
});
