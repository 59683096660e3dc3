import { spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import { describe, expect, it } from "vitest";
import { migrate } from "../../src/db/migrate";
import { startEmbeddedPostgres, startRedisServer } from "../../src/infra/embedded";
import { query } from "../support/db";

describe("embedded defaults", () => {
  it("run a real Postgres under the state directory that keeps its data across restarts", async () => {
    const stateDir = mkdtempSync(join(tmpdir(), "sendonce-state-"));
    // mkdtemp makes a private directory; as root the server runs as "postgres" and must enter it.
    chmodSync(stateDir, 0o755);
    const first = await startEmbeddedPostgres(stateDir);
    try {
      expect((await migrate(first.url)).applied.length).toBeGreaterThan(0);
      await query(first.url, `INSERT INTO "Customer" (id, "updatedAt") VALUES ('c_1', now())`);
    } finally {
      await first.stop();
    }
    const second = await startEmbeddedPostgres(stateDir);
    try {
      expect((await migrate(second.url)).applied).toEqual([]);
      expect(await query(second.url, `SELECT id FROM "Customer"`)).toEqual([{ id: "c_1" }]);
    } finally {
      await second.stop();
    }
  }, 120_000);

  it("take the redis-server child down with a process that dies without stopping it", async () => {
    const stateDir = mkdtempSync(join(tmpdir(), "sendonce-state-"));
    const module = new URL("../../src/infra/embedded.ts", import.meta.url).pathname;
    const script = `
      const { startRedisServer } = await import(${JSON.stringify(module)});
      const redis = await startRedisServer(${JSON.stringify(stateDir)});
      console.log(redis.url);
      throw new Error("died");`;
    const run = spawnSync(
      process.execPath,
      ["--import", "tsx", "--input-type=module", "-e", script],
      {
        encoding: "utf8",
        timeout: 30_000,
      },
    );
    expect(run.stderr).toContain("died");
    const url = run.stdout.trim();
    expect(url).toMatch(/^redis:\/\/127\.0\.0\.1:\d+$/);
    const probe = new Redis(url, {
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
      lazyConnect: true,
    });
    probe.on("error", () => {});
    await new Promise((r) => setTimeout(r, 500));
    await expect(probe.connect()).rejects.toThrow();
    probe.disconnect();
  }, 60_000);

  it("run redis-server as a child with noeviction and an append-only file", async () => {
    const stateDir = mkdtempSync(join(tmpdir(), "sendonce-state-"));
    const first = await startRedisServer(stateDir);
    let redis = new Redis(first.url, { maxRetriesPerRequest: 1 });
    try {
      expect(await redis.config("GET", "maxmemory-policy")).toEqual([
        "maxmemory-policy",
        "noeviction",
      ]);
      await redis.set("sendonce:probe", "kept");
    } finally {
      redis.disconnect();
      await first.stop();
    }
    const second = await startRedisServer(stateDir);
    redis = new Redis(second.url, { maxRetriesPerRequest: 1 });
    try {
      expect(await redis.get("sendonce:probe")).toBe("kept");
    } finally {
      redis.disconnect();
      await second.stop();
    }
  }, 60_000);

  it.runIf(process.getuid?.() === 0)(
    "explain, as root, a data directory the server cannot enter",
    async () => {
      const stateDir = mkdtempSync(join(tmpdir(), "sendonce-state-"));
      await expect(startEmbeddedPostgres(join(stateDir, ".sendonce"))).rejects.toThrow(
        `the embedded Postgres runs as the "postgres" user when started by root, and that user cannot enter ${stateDir}.`,
      );
    },
  );

  it("say how to get Redis when there is no redis-server binary", async () => {
    const stateDir = mkdtempSync(join(tmpdir(), "sendonce-state-"));
    await expect(startRedisServer(stateDir, "/nonexistent/redis-server")).rejects.toThrow(
      /no "\/nonexistent\/redis-server" binary found on PATH\. Install Redis 7 .*apt-get install redis-server.* or set REDIS_URL/,
    );
  });
});
