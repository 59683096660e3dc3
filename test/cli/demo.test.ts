// The README's main job: `sendonce demo` on an embedded Postgres, twice. The second run finds
// every sample event already stored and sends nothing new.
import { chmodSync, mkdtempSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { runCli } from "../support/cli";
import { REDIS_URL, flushPrefix, uniquePrefix } from "../support/redis";

describe("sendonce demo", () => {
  const stateDir = mkdtempSync(join(tmpdir(), "sendonce-demo-"));
  // As root the embedded server runs as "postgres", which must be able to enter the directory.
  chmodSync(stateDir, 0o755);
  const prefix = uniquePrefix("demo");
  // Redis comes from the test server (the redis-server child is tested in infra/embedded).
  const env = {
    SENDONCE_STATE_DIR: join(stateDir, "state"),
    REDIS_URL,
    SENDONCE_QUEUE_PREFIX: prefix,
    DATABASE_URL: "",
  };
  afterAll(() => flushPrefix(prefix));

  const value = (stdout: string, label: string) =>
    new RegExp(`^\\s+${label}\\s+(.+)$`, "m").exec(stdout)?.[1];

  it("runs the sample on embedded Postgres and finds no duplicate sends, then resends nothing", () => {
    const first = runCli(["demo", "--timeout", "90", "--verbose"], env, 150_000);
    expect(first.code).toBe(0);
    // --verbose: one log line per decision, by ids, with no address or content in it.
    const log = first.stderr.trim().split("\n");
    expect(log.every((l) => /^\S+Z (debug|info) /.test(l))).toBe(true);
    expect(
      log.some((l) => / debug sent customer=c_\d+ .* channel=email key=[0-9a-f]{64}$/.test(l)),
    ).toBe(true);
    expect(log.some((l) => / debug skipped .* reason=no_consent$/.test(l))).toBe(true);
    expect(log.some((l) => / debug enrollment exited customer=c_1002 /.test(l))).toBe(true);
    expect(first.stderr).not.toMatch(/@|\+\d{6,}/);
    expect(value(first.stdout, "events stored")).toBe("10");
    expect(value(first.stdout, "duplicate deliveries dropped")).toBe("27");
    expect(value(first.stdout, "conflicts rejected \\(same id, other payload\\)")).toBe("1");
    expect(value(first.stdout, "enrollments exited early")).toBe("1");
    expect(value(first.stdout, "duplicate sends found in outbox")).toBe("0");
    expect(value(first.stdout, "skipped: no_consent")).toBeDefined();
    const emails = readdirSync(join(stateDir, "state", "outbox", "email"));
    expect(emails.length).toBeGreaterThan(0);

    const second = runCli(["demo", "--timeout", "90"], env, 150_000);
    expect(second.code).toBe(0);
    expect(value(second.stdout, "events stored")).toBe("0");
    expect(value(second.stdout, "duplicate sends found in outbox")).toBe("0");
    expect(readdirSync(join(stateDir, "state", "outbox", "email"))).toHaveLength(emails.length);

    const story = runCli(["explain", "--customer", "c_1002", "--journey", "cart-abandonment"], env);
    expect(story.code).toBe(0);
    expect(story.stdout).toMatch(
      /exited\s+cart-abandonment enrollment \d+: exit event order\.completed shop\/evt_order_ben_77/,
    );
  }, 300_000);
});
