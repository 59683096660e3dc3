// The bench's and the chaos suite's command lines, as ops type them: a bad flag is named, with
// the usage, and the exit code says so (2) before anything is started.
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ROOT } from "../support/cli";

function script(name: "bench" | "chaos", args: string[]) {
  const r = spawnSync(join(ROOT, "node_modules/.bin/tsx"), [`scripts/${name}.ts`, ...args], {
    cwd: ROOT,
    encoding: "utf8",
    timeout: 60_000,
  });
  return { code: r.status, stderr: r.stderr };
}

describe("npm run chaos and npm run bench, given a bad flag", () => {
  it("chaos names a value out of range and an unknown option, and exits 2", () => {
    const zero = script("chaos", ["--events=0"]);
    expect(zero.stderr).toContain("chaos: --events must be a whole number ≥ 1");
    expect(zero.stderr).toContain("usage: npm run chaos -- [options]");
    // The embedded Postgres library's exit hook would turn this into 0.
    expect(zero.code).toBe(2);
    const unknown = script("chaos", ["--kill-everything"]);
    expect(unknown.stderr).toContain("Unknown option '--kill-everything'");
    expect(unknown.code).toBe(2);
  });

  it("bench names a malformed number and an unknown option, and exits 2", () => {
    const words = script("bench", ["--events", "many"]);
    expect(words.stderr).toContain('bench: --events must be a whole number ≥ 1, not "many"');
    expect(words.stderr).toContain("usage: npm run bench --");
    expect(words.code).toBe(2);
    const unknown = script("bench", ["--fast"]);
    expect(unknown.stderr).toContain("Unknown option '--fast'");
    expect(unknown.code).toBe(2);
  });
});
