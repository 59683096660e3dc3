// `npm run chaos`: the send-once guarantee under crashes, duplicates, an API crash, a Redis
// flush, a Redis crash and a Postgres restart, with quiet hours holding sends back through them,
// against real processes and real SMTP and Twilio-compatible servers.
// Prints a summary table; exits 1 when any invariant is violated.
//   npm run chaos -- --events 5000 --workers 4 --duplicates 0.3 --kill-every 3s --duration 90s
import { writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { parseDuration } from "../src/journeys/duration";
import type { ChaosOptions, ChaosReport } from "../test/support/chaos/run";
import { DEFAULT_CHAOS, runChaos } from "../test/support/chaos/run";
import { formatTable } from "../test/support/chaos/verify";

const USAGE = `usage: npm run chaos -- [options]
  --events N          distinct events to post (default ${DEFAULT_CHAOS.events})
  --workers N         worker processes (default ${DEFAULT_CHAOS.workers})
  --duplicates F      share of events redelivered, 0..1 (default ${DEFAULT_CHAOS.duplicates})
  --kill-every D      SIGKILL a random worker about this often (default ${DEFAULT_CHAOS.killEveryMs / 1000}s)
  --duration D        how long traffic and chaos last (default ${DEFAULT_CHAOS.durationMs / 1000}s)
  --concurrency N     jobs at once per worker (default ${DEFAULT_CHAOS.concurrency})
  --settle-timeout D  how long the system may take to settle afterwards (default ${DEFAULT_CHAOS.settleTimeoutMs / 1000}s)
  --seed N            traffic and chaos are repeatable per seed (default ${DEFAULT_CHAOS.seed})
  --no-faults         no injected SMTP and Twilio failures
  --no-quiet-hours    no quiet-hours window for marketing SMS (it is whole minutes, so with
                      quiet hours a short run waits up to a minute for the window to end)
  --json FILE         also write the report as JSON
  --quiet             no progress lines`;

class UsageError extends Error {}

function parse(argv: string[]): { options: Partial<ChaosOptions>; json?: string; quiet: boolean } {
  const { values } = parseArgs({
    args: argv,
    options: {
      events: { type: "string" },
      workers: { type: "string" },
      duplicates: { type: "string" },
      "kill-every": { type: "string" },
      duration: { type: "string" },
      concurrency: { type: "string" },
      "settle-timeout": { type: "string" },
      seed: { type: "string" },
      "no-faults": { type: "boolean", default: false },
      "no-quiet-hours": { type: "boolean", default: false },
      json: { type: "string" },
      quiet: { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const int = (name: string, v: string | undefined, min: number) => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isInteger(n) || n < min)
      throw new UsageError(`--${name} must be a whole number ≥ ${min}`);
    return n;
  };
  const ms = (name: string, v: string | undefined) => {
    if (v === undefined) return undefined;
    const d = parseDuration(v);
    if ("error" in d) throw new UsageError(`--${name}: ${d.error}`);
    return d.ms;
  };
  const duplicates = values.duplicates === undefined ? undefined : Number(values.duplicates);
  if (duplicates !== undefined && !(duplicates >= 0 && duplicates <= 1))
    throw new UsageError("--duplicates must be a number from 0 to 1");
  const options: Partial<ChaosOptions> = Object.fromEntries(
    Object.entries({
      events: int("events", values.events, 1),
      workers: int("workers", values.workers, 1),
      duplicates,
      killEveryMs: ms("kill-every", values["kill-every"]),
      durationMs: ms("duration", values.duration),
      concurrency: int("concurrency", values.concurrency, 1),
      settleTimeoutMs: ms("settle-timeout", values["settle-timeout"]),
      seed: int("seed", values.seed, 0),
      faults: !values["no-faults"],
      quietHours: !values["no-quiet-hours"],
    }).filter(([, v]) => v !== undefined),
  );
  return { options, ...(values.json && { json: values.json }), quiet: values.quiet };
}

function print(report: ChaosReport): void {
  const s = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
  console.log(
    `\nchaos run: ${s(report.chaosMs)} of chaos, ${s(report.settleMs)} to settle, ${s(report.totalMs)} in all\n`,
  );
  const width = Math.max(...Object.keys(report.stats).map((k) => k.length));
  for (const [k, v] of Object.entries(report.stats)) console.log(`  ${k.padEnd(width)}  ${v}`);
  console.log(`\n${formatTable(report.invariants)}\n`);
  if (report.ok) console.log("all invariants hold");
  else {
    console.log(`${report.violations.length} violation(s):`);
    for (const v of report.violations) console.log(`  - ${v}`);
  }
}

try {
  const { options, json, quiet } = parse(process.argv.slice(2));
  const log = quiet ? () => {} : (line: string) => console.error(`[chaos] ${line}`);
  // Ctrl-C ends the run early but still tears down every process and server it started.
  const abort = new AbortController();
  process.once("SIGINT", () => {
    console.error("[chaos] interrupted: tearing down");
    abort.abort(new Error("interrupted"));
  });
  const report = await runChaos({ ...options, log, signal: abort.signal });
  print(report);
  if (json) writeFileSync(json, `${JSON.stringify(report, null, 2)}\n`);
  process.exitCode = report.ok ? 0 : 1;
} catch (error) {
  if (
    error instanceof UsageError ||
    (error as { code?: string }).code?.startsWith("ERR_PARSE_ARGS")
  ) {
    console.error(`chaos: ${(error as Error).message}\n${USAGE}`);
    process.exitCode = 2;
  } else {
    console.error(`chaos: the run itself failed: ${(error as Error).stack ?? String(error)}`);
    process.exitCode = 1;
  }
}
// Explicitly: the embedded Postgres library (imported with the cluster) hooks `beforeExit` and
// exits with 0 there, which would hide a violation or a usage error from the shell.
process.exit(process.exitCode ?? 0);
