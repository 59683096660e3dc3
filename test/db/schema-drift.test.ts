// Fails when prisma/schema.prisma and prisma/migrations disagree: a schema change without its
// migration would pass every test that builds its database from the schema, then break deploys.
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";

import pg from "pg";
import { describe, expect, it } from "vitest";

import { diffMigrationsToSchema } from "../../scripts/schema-engine.ts";
import { SERVER_URL as DATABASE_URL } from "../support/db";

const SCHEMA_PATH = path.resolve(import.meta.dirname, "../../prisma/schema.prisma");
// Loading and compiling the wasm engine takes a few seconds on a cold machine.
const TIMEOUT_MS = 60_000;

/** Runs a diff and proves that every shadow database it created is gone afterwards. */
async function diffAndCheckCleanup(
  opts: Parameters<typeof diffMigrationsToSchema>[0] = {},
): Promise<string> {
  const shadowDatabases: string[] = [];
  const sql = await diffMigrationsToSchema({
    databaseUrl: DATABASE_URL,
    ...opts,
    onShadowDatabase: (name) => shadowDatabases.push(name),
  });

  expect(shadowDatabases.length).toBeGreaterThan(0);
  const client = new pg.Client({ connectionString: DATABASE_URL });
  await client.connect();
  try {
    const { rows } = await client.query<{ datname: string }>(
      "SELECT datname FROM pg_database WHERE datname = ANY($1::text[])",
      [shadowDatabases],
    );
    expect(rows).toEqual([]);
  } finally {
    await client.end();
  }
  return sql;
}

describe("schema drift", () => {
  it(
    "the committed migrations produce exactly prisma/schema.prisma",
    async () => {
      const drift = await diffAndCheckCleanup();
      // On failure the message is the SQL of the missing migration: `npm run db:new -- <name>`.
      expect(drift).toBe("");
    },
    TIMEOUT_MS,
  );

  it(
    "reports a model and a column the migrations lack",
    async () => {
      const dir = await mkdtemp(path.join(tmpdir(), "sendonce-schema-drift-"));
      try {
        const schema = (await readFile(SCHEMA_PATH, "utf8"))
          .replace(/^(model Customer \{\n)/m, "$1  driftProbeColumn String?\n")
          .concat("\nmodel DriftProbe {\n  id Int @id\n}\n");
        const schemaPath = path.join(dir, "schema.prisma");
        await writeFile(schemaPath, schema);

        const drift = await diffAndCheckCleanup({ schemaPath });

        expect(drift).toContain('CREATE TABLE "DriftProbe"');
        expect(drift).toMatch(/ALTER TABLE "Customer" ADD COLUMN\s+"driftProbeColumn" TEXT/);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },
    TIMEOUT_MS,
  );
});
