// A missing or malformed setting is named, with what to do, before anything starts; the value
// itself is never printed (it may be a secret).
import { redactUrl } from "../../src/db/url";
import { describe, expect, it } from "vitest";
import { createServer } from "node:net";
import type { AddressInfo } from "node:net";
import { runCli, runCliAsync } from "../support/cli";
import { SERVER_URL, createTestSchema, uniqueName } from "../support/db";
import { REDIS_URL } from "../support/redis";

const URLS = {
  DATABASE_URL: "postgresql://u:hunter2@127.0.0.1:1/x",
  REDIS_URL: "redis://127.0.0.1:1",
};

/** Everything else a worker and an API need, so that the database is what they stop at. */
const READY = {
  SENDONCE_API_KEYS: "k".repeat(16),
  SENDONCE_SECRET: "s".repeat(32),
  PUBLIC_BASE_URL: "https://hooks.example",
};

describe("configuration errors", () => {
  it("names SENDONCE_API_KEYS when the API has no keys", () => {
    const r = runCli(["api"], { ...URLS, SENDONCE_API_KEYS: "" });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/SENDONCE_API_KEYS is not set/);
  });

  it("refuses short API keys without printing them", () => {
    const r = runCli(["api"], { ...URLS, SENDONCE_API_KEYS: "short-key" });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/SENDONCE_API_KEYS: each key must be at least 16 characters/);
    expect(r.stderr).not.toContain("short-key");
  });

  it("says what is wrong with a number: not a number, not whole, or out of range", () => {
    const r = runCli(["worker"], {
      ...URLS,
      SENDONCE_LEASE_MS: "0",
      SENDONCE_RETRY_BASE_MS: "1.5",
      SENDONCE_SWEEP_INTERVAL_MS: "often",
      SENDONCE_DB_POOL_SIZE: "0",
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("SENDONCE_LEASE_MS: must be at least 1000 milliseconds");
    expect(r.stderr).toContain("SENDONCE_RETRY_BASE_MS: must be a whole number of milliseconds");
    expect(r.stderr).toContain(
      "SENDONCE_SWEEP_INTERVAL_MS: must be a whole number of milliseconds",
    );
    for (const sloppy of ["1e3", "0x10", " 5000"]) {
      const loose = runCli(["worker"], { ...URLS, SENDONCE_SEND_TIMEOUT_MS: sloppy });
      expect(loose.stderr).toContain("SENDONCE_SEND_TIMEOUT_MS: must be a whole number");
    }
    expect(r.stderr).toContain("SENDONCE_DB_POOL_SIZE: must be at least 1");
  });

  it("names SENDONCE_SECRET when marketing emails need signed unsubscribe links", () => {
    const r = runCli(["worker"], { ...URLS, SENDONCE_SECRET: "" });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /SENDONCE_SECRET is not set: marketing emails carry signed unsubscribe links/,
    );
    expect(r.stderr).not.toContain("hunter2");
  });

  it("names what a partial Twilio configuration lacks, and EMAIL_FROM beside SMTP_URL", () => {
    const twilio = runCli(["worker"], { ...URLS, TWILIO_ACCOUNT_SID: `AC${"0".repeat(32)}` });
    expect(twilio.code).toBe(1);
    expect(twilio.stderr).toMatch(/TWILIO_AUTH_TOKEN: required when any TWILIO_\* variable is set/);
    expect(twilio.stderr).toMatch(
      /TWILIO_FROM: set a sender number, or TWILIO_MESSAGING_SERVICE_SID/,
    );
    const smtp = runCli(["worker"], {
      ...URLS,
      SMTP_URL: "smtp://mail:pw@127.0.0.1:1",
      EMAIL_FROM: "",
    });
    expect(smtp.stderr).toMatch(/EMAIL_FROM: required when SMTP_URL is set/);
    expect(smtp.stderr).not.toContain("pw@");
    const proxied = runCli(["worker"], {
      ...URLS,
      SMTP_URL: "smtp://mail:pw@127.0.0.1:1?proxy=socks5://127.0.0.1:1080",
      EMAIL_FROM: "shop@example.com",
    });
    expect(proxied.code).toBe(1);
    expect(proxied.stderr).toMatch(/SMTP_URL: a proxy= parameter is not supported/);
    expect(proxied.stderr).not.toContain("pw@");
  });

  it("names an unreachable database, and one without its migrations, before starting", () => {
    const commands = [
      ["worker"],
      ["api"],
      ["report"],
      ["reconcile"],
      ["explain", "--customer", "c"],
    ];
    for (const command of commands) {
      const unreachable = runCli(command, { ...URLS, ...READY });
      expect(unreachable.code).toBe(1);
      expect(unreachable.stderr).toContain(
        "sendonce: cannot reach the database at postgresql://u:***@127.0.0.1:1/x: Can't reach database server at 127.0.0.1:1",
      );
      expect(unreachable.stderr).not.toContain("hunter2");
      expect(unreachable.stderr).not.toMatch(/^\s+at /m);
    }
    const unmigrated = new URL(SERVER_URL);
    unmigrated.searchParams.set("schema", uniqueName("unmigrated"));
    for (const command of ["worker", "api"]) {
      const r = runCli([command], {
        DATABASE_URL: unmigrated.toString(),
        REDIS_URL: "redis://127.0.0.1:1",
        ...READY,
      });
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(
        /lacks \d+ migrations \(the first: \d+_init\w*\): run "sendonce db migrate" first/,
      );
    }
  });

  it("warns, naming what it affects, when PUBLIC_BASE_URL is left at its local default", () => {
    const { PUBLIC_BASE_URL: _set, ...unsetEnv } = READY;
    const unset = runCli(["api"], { ...URLS, ...unsetEnv });
    expect(unset.stderr).toContain(
      "PUBLIC_BASE_URL is not set: unsubscribe links use http://localhost:8080",
    );
    const set = runCli(["api"], { ...URLS, ...READY });
    expect(set.stderr).not.toContain("PUBLIC_BASE_URL");
  });

  it("hides a password given as a URL parameter too", () => {
    expect(redactUrl("postgresql://app@db:5432/prod?password=hunter2&sslmode=require")).toBe(
      "postgresql://app@db:5432/prod?password=***&sslmode=require",
    );
    expect(redactUrl("postgresql://app:hunter2@db/prod?sslpassword=hunter3")).toBe(
      "postgresql://app:***@db/prod?sslpassword=***",
    );
  });

  it("names an unreachable Redis in one line, for every command that needs it", async () => {
    const schema = await createTestSchema("redis");
    try {
      for (const command of [["worker"], ["api"], ["import", "package.json"]]) {
        const r = runCli(command, {
          DATABASE_URL: schema.url,
          REDIS_URL: "redis://:hunter2@127.0.0.1:1",
          ...READY,
        });
        expect(r.code).toBe(1);
        expect(r.stderr.trim()).toBe(
          "sendonce: cannot reach Redis at redis://:***@127.0.0.1:1: connect ECONNREFUSED 127.0.0.1:1",
        );
      }
    } finally {
      await schema.drop();
    }
  });

  it("names a port in use in one line, with no stack trace", async () => {
    const schema = await createTestSchema("port");
    const taken = createServer();
    await new Promise<void>((r) => taken.listen(0, "127.0.0.1", r));
    const { port } = taken.address() as AddressInfo;
    try {
      const r = await runCliAsync(["api", "--port", String(port), "--host", "127.0.0.1"], {
        DATABASE_URL: schema.url,
        REDIS_URL,
        ...READY,
      });
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(
        `sendonce: listen EADDRINUSE: address already in use 127.0.0.1:${port}`,
      );
      expect(r.stderr).not.toMatch(/^\s+at /m);
    } finally {
      taken.close();
      await schema.drop();
    }
  });
});
