// `sendonce import`: the API's dedupe for a file, bad lines reported by number, skip or abort.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../support/cli";
import type { TestSchema } from "../support/db";
import { createTestSchema } from "../support/db";
import { REDIS_URL, flushPrefix, uniquePrefix } from "../support/redis";

describe("sendonce import", () => {
  let schema: TestSchema;
  const prefix = uniquePrefix("import");
  beforeAll(async () => {
    schema = await createTestSchema("import");
  });
  afterAll(async () => {
    await flushPrefix(prefix);
    await schema.drop();
  });

  const line = (id: string, extra: object = {}) =>
    JSON.stringify({
      id,
      type: "signed_up",
      customerId: `c_${id}`,
      occurredAt: "2026-11-02T09:00:00Z",
      ...extra,
    });
  const file = (lines: string[]) => {
    const path = join(mkdtempSync(join(tmpdir(), "sendonce-import-")), "events.ndjson");
    writeFileSync(path, `${lines.join("\n")}\n`);
    return path;
  };
  const env = () => ({ DATABASE_URL: schema.url, REDIS_URL, SENDONCE_QUEUE_PREFIX: prefix });

  it("stores each event once, reports bad lines by number, and exits 1", async () => {
    const path = file([
      line("i1"),
      line("i2"),
      "{oops",
      line("i3", { occurredAt: "soon" }),
      line("i1"),
      line("i4", { source: "crm" }),
    ]);
    const result = runCli(["import", path, "--source", "shop"], env());
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`${path}:3: not JSON`);
    expect(result.stderr).toMatch(
      new RegExp(
        `${path.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}:4: occurredAt: must be an ISO-8601 timestamp`,
      ),
    );
    expect(result.stdout).toContain("3 accepted, 1 duplicates, 0 conflicts, 2 bad lines");
    const events = await schema.db.event.findMany({ orderBy: { eventId: "asc" } });
    expect(events.map((e) => `${e.source}/${e.eventId}`)).toEqual(["shop/i1", "shop/i2", "crm/i4"]);

    const again = runCli(["import", path, "--source", "shop"], env());
    expect(again.stdout).toContain("0 accepted, 4 duplicates");
  });

  it("names a line with a lone surrogate, stores the rest, and prints no customer data", async () => {
    const path = file([
      line("s1"),
      line("s2", { customer: { attributes: { name: "Frank Secretname", x: "\ud800" } } }),
      line("s3"),
    ]);
    const result = runCli(["import", path, "--source", "sur"], env());
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(
      `${path}:2: customer.attributes.x: contains a lone UTF-16 surrogate`,
    );
    expect(result.stderr + result.stdout).not.toContain("Secretname");
    expect(result.stdout).toContain("2 accepted, 0 duplicates, 0 conflicts, 1 bad line");
    const stored = await schema.db.event.findMany({ where: { source: "sur" } });
    expect(stored.map((e) => e.eventId).sort()).toEqual(["s1", "s3"]);
  });

  it("names a line that is not JSON without quoting it", async () => {
    // V8's JSON.parse message quotes the text around the error: here a phone number.
    const path = file([line("q1"), '{"id":"q2","customer":{"phone":+4915112345678}}', line("q3")]);
    const result = runCli(["import", path, "--source", "quote"], env());
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`${path}:2: not JSON: Unexpected token '+' (not valid JSON)`);
    expect(result.stderr + result.stdout).not.toContain("4915112345678");
    const stored = await schema.db.event.findMany({ where: { source: "quote" } });
    expect(stored.map((e) => e.eventId).sort()).toEqual(["q1", "q3"]);
  });

  it("names a line whose id was stored with another payload, as the API's 409 does", () => {
    const first = runCli(
      ["import", file([line("k1", { properties: { v: 1 } })]), "--source", "cf"],
      env(),
    );
    expect(first.code).toBe(0);
    const path = file([line("k2"), line("k1", { properties: { v: 2 } })]);
    const again = runCli(["import", path, "--source", "cf"], env());
    expect(again.code).toBe(1);
    expect(again.stderr).toContain(
      `${path}:2: conflict: event cf/k1 was stored before with a different payload; this line was not stored`,
    );
    expect(again.stdout).toContain("1 accepted, 0 duplicates, 1 conflicts, 0 bad lines");
  });

  it("names a path that is not a file", () => {
    const dir = mkdtempSync(join(tmpdir(), "sendonce-import-dir-"));
    const r = runCli(["import", dir], env());
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe(`sendonce: ${dir}: not a file`);
  });

  it("stops at the first bad line with --on-error abort", async () => {
    const path = file([line("a1"), "not json", line("a2")]);
    const result = runCli(["import", path, "--on-error", "abort"], env());
    expect(result.code).toBe(1);
    expect(result.stdout).toContain("aborted at line 2");
    expect(await schema.db.event.count({ where: { eventId: { in: ["a1", "a2"] } } })).toBe(1);
  });
});
