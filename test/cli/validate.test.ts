import { cpSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ROOT, runCli } from "../support/cli";
import { createTestSchema } from "../support/db";

describe("the sendonce validate command", () => {
  it("accepts the bundled journeys with exit code 0", () => {
    const result = runCli(["validate", "journeys"]);
    expect(result.code).toBe(0);
    expect(result.stdout.trim()).toBe("ok: 5 valid journeys, 0 errors, 0 warnings");
  });

  it("prints one line per problem with file:line:column and exits 1", () => {
    const dir = mkdtempSync(join(tmpdir(), "sendonce-cli-"));
    cpSync(join(ROOT, "journeys"), dir, { recursive: true });
    const file = join(dir, "cart-abandonment.yaml");
    const broken = readFileSync(file, "utf8")
      .replace("  - id: reminder_email\n    email:", "  - id: reminder_email\n    emial:")
      .replace("goto: vip_sms", "goto: vip_smss")
      .replace("{{ event.properties.total }} EUR", "{% if event.properties.total %} EUR");
    writeFileSync(file, broken);
    const lineOf = (text: string) => broken.split("\n").findIndex((l) => l.includes(text)) + 1;

    const result = runCli(["validate", dir]);
    expect(result.code).toBe(1);
    expect(result.stdout.trim().split("\n")).toEqual([
      `${file}:${lineOf("emial:")}:5: error: step "reminder_email": unknown step kind "emial" — did you mean "email"? (steps are wait, email, sms, points, branch, or exit: true)`,
      `${file}:${lineOf("goto: vip_smss")}:15: error: goto "vip_smss": no step has this id — did you mean "vip_sms"?`,
      `${file}:${lineOf("{% if event")}:27: error: Liquid: tag {% if event.properties.total %} not closed`,
      "failed: 4 valid journeys, 3 errors, 0 warnings",
    ]);

    const json = runCli(["validate", dir, "--format", "json"]);
    expect(json.code).toBe(1);
    const report = JSON.parse(json.stdout) as {
      ok: boolean;
      diagnostics: { code: string; line: number }[];
    };
    expect(report.ok).toBe(false);
    expect(report.diagnostics.map((d) => d.code)).toEqual([
      "unknown_step_kind",
      "missing_goto_target",
      "bad_template",
    ]);
  });

  it("refuses a directory without journeys, and so does a worker pointed at it", () => {
    const dir = mkdtempSync(join(tmpdir(), "sendonce-empty-"));
    writeFileSync(join(dir, "policies.yaml"), "on_cap: skip\n");
    const result = runCli(["validate", dir]);
    expect(result.code).toBe(1);
    expect(result.stdout).toContain(
      `${dir}:1:1: error: no journey files (*.yaml) in this directory`,
    );
    // It would consume every event and enroll no one: it does not start.
    const worker = runCli(["worker"], {
      DATABASE_URL: "postgresql://postgres@127.0.0.1:1/x",
      REDIS_URL: "redis://127.0.0.1:1",
      SENDONCE_JOURNEYS_DIR: dir,
    });
    expect(worker.code).toBe(1);
    expect(worker.stderr).toContain("no journey files (*.yaml) in this directory");
    expect(worker.stderr).toContain("nothing was started");
  });

  it("warns, with DATABASE_URL set, of a step id the deployed version has and the file lost", async () => {
    const schema = await createTestSchema("validate");
    try {
      await schema.db.$executeRaw`
        INSERT INTO "JourneyVersion" ("journeyId", version, name, definition, "stepIds")
        VALUES ('thanks', 'v-old', 'Thanks', '{}'::jsonb, ARRAY['thank_you', 'bonus'])`;
      const dir = mkdtempSync(join(tmpdir(), "sendonce-renamed-"));
      writeFileSync(
        join(dir, "thanks.yaml"),
        `id: thanks\nname: Thanks\ncategory: transactional\ntrigger: { event: order.completed }\nsteps:\n` +
          `  - id: thank_you_v2\n    email: { subject: "Thanks", text: "Thank you" }\n` +
          `  - id: bonus\n    points: { amount: 10, reason: thanks }\n`,
      );
      const result = runCli(["validate", dir], { DATABASE_URL: schema.url });
      expect(result.code).toBe(0);
      expect(result.stdout).toContain(
        `${dir}/thanks.yaml:1:1: warning: step "thank_you" of journey "thanks" is in the deployed version (v-old,`,
      );
      expect(result.stdout).toContain('(renamed to "thank_you_v2"?)');
      expect(result.stdout).toContain("ok: 1 valid journeys, 0 errors, 1 warning");
      // Without a database to ask, it says nothing of it.
      expect(runCli(["validate", dir]).stdout).toContain("0 warnings");
      // The journey's own id changed in its file: every key is new.
      await schema.db.$executeRaw`
        INSERT INTO "JourneyVersion" ("journeyId", version, name, definition, "stepIds")
        VALUES ('thank-you', 'v-older', 'Thanks', '{"file": "thanks.yaml"}'::jsonb, ARRAY['thank_you_v2', 'bonus'])`;
      const renamed = runCli(["validate", dir], { DATABASE_URL: schema.url });
      expect(renamed.stdout).toContain(
        `${dir}/thanks.yaml:1:1: warning: journey "thanks" in thanks.yaml was deployed as "thank-you" (last `,
      );
      expect(renamed.stdout).toContain("so a renamed journey sends everything anew");
    } finally {
      await schema.drop();
    }
  });

  it("says so when the directory does not exist", () => {
    const result = runCli(["validate", "no/such/dir"]);
    expect(result.code).toBe(1);
    expect(result.stdout).toContain("no/such/dir:1:1: error: journeys directory not found");
    const file = runCli(["validate", "journeys/welcome-series.yaml"]);
    expect(file.code).toBe(1);
    expect(file.stdout).toContain(
      "journeys/welcome-series.yaml:1:1: error: not a directory: give the journeys directory",
    );
  });
});
