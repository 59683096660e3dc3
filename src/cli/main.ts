// The `sendonce` command line. Flags and environment are parsed here and handed down as
// plain values. Commands load their modules on use: the embedded Postgres library hooks
// process exit and signals as soon as it is imported, which a worker must not inherit.
import { readFileSync } from "node:fs";
import { Command, InvalidArgumentError, Option } from "commander";
import { loadConfig, requireDatabaseUrl } from "../config";
import { migrate } from "../db/migrate";
import { redactUrl } from "../db/url";
import type { BackfillFlags } from "./backfill";
import type { ResolveFlags } from "./resolve";
import { runValidate } from "./validate";

const { version } = JSON.parse(
  readFileSync(new URL("../../package.json", import.meta.url), "utf8"),
) as { version: string };

const program = new Command("sendonce")
  .description("Marketing journeys that send once: no customer gets the same thing twice.")
  .version(version)
  .showHelpAfterError();

program
  .command("validate")
  .description("check journeys and policies; one line per problem as file:line:column")
  .argument("[dir]", "journeys directory (default: $SENDONCE_JOURNEYS_DIR or ./journeys)")
  .addOption(
    new Option("--format <format>", "output format").choices(["text", "json"]).default("text"),
  )
  .action(async (dir: string | undefined, opts: { format: "text" | "json" }) => {
    process.exitCode = await runValidate(dir ?? loadConfig().journeysDir, opts);
  });

const db = program.command("db").description("database commands");
db.command("migrate")
  .description("apply pending migrations to $DATABASE_URL (a no-op when up to date)")
  .action(async () => {
    const url = requireDatabaseUrl(loadConfig());
    const result = await migrate(url);
    for (const name of result.applied) console.log(`applied ${name}`);
    console.log(
      result.applied.length === 0
        ? `database ${redactUrl(url)} is up to date (${result.alreadyApplied.length} migration${result.alreadyApplied.length === 1 ? "" : "s"} applied)`
        : `applied ${result.applied.length} migration${result.applied.length === 1 ? "" : "s"} to ${redactUrl(url)}`,
    );
  });

program
  .command("worker")
  .description(
    "run journeys from the queues ($DATABASE_URL, $REDIS_URL); any number may run at once",
  )
  .option("--concurrency <n>", "jobs run at once by this process", positiveInt, 20)
  .action(async (opts: { concurrency: number }) => {
    const { runWorker } = await import("./worker");
    await runWorker(opts);
  });

program
  .command("api")
  .description("serve the HTTP API ($DATABASE_URL, $REDIS_URL, $SENDONCE_API_KEYS)")
  .option("--port <n>", "port to listen on (1-65535)", port, 8080)
  .option("--host <host>", "address to listen on", "0.0.0.0")
  .action(async (opts: { port: number; host: string }) => {
    const { runApi } = await import("./api");
    await runApi(opts);
  });

program
  .command("import")
  .description(
    "ingest an NDJSON file of events with the API's dedupe; bad lines reported by line number",
  )
  .argument("<file>", "one JSON event per line")
  .option("--source <source>", "source for events that name none")
  .addOption(
    new Option("--on-error <mode>", "on a bad line: skip it, or stop")
      .choices(["skip", "abort"])
      .default("skip"),
  )
  .action(async (file: string, opts: { source?: string; onError: "skip" | "abort" }) => {
    const { runImport } = await import("./import");
    process.exitCode = await runImport(file, opts);
  });

program
  .command("backfill")
  .description(
    "replay stored events (or a file) through one journey with the same keys; nothing already sent is sent again",
  )
  .option("--journey <id>", "the journey to backfill")
  .option("--since <when>", "stored events from this date (ISO-8601) or this long ago (30d)")
  .option("--until <when>", "stored events before this date or this long ago")
  .option("--file <events.ndjson>", "events from a file instead of the stored ones")
  .option(
    "--dry-run",
    "print per step what would be sent and what suppressed, and why; change nothing",
    false,
  )
  .option("--rate <n/s>", "at most this many events per second")
  .option("--resume <id>", "continue a backfill that stopped, from its recorded cursor")
  .action(async (opts: BackfillFlags) => {
    const { runBackfillCommand } = await import("./backfill");
    process.exitCode = await runBackfillCommand(opts);
  });

program
  .command("reconcile")
  .description("compare the ledger with the providers and the points ledger; list every mismatch")
  .addOption(
    new Option("--channel <channel>", "only one channel").choices(["email", "sms", "points"]),
  )
  .option("--since <when>", "actions from this date (ISO-8601) or this long ago", "7d")
  .option(
    "--resolve",
    "settle what can be settled: in-doubt sends the provider confirms, balances from the ledger",
    false,
  )
  .action(
    async (opts: { channel?: "email" | "sms" | "points"; since: string; resolve: boolean }) => {
      const { runReconcile } = await import("./reconcile");
      process.exitCode = await runReconcile(opts);
    },
  );

program
  .command("resolve")
  .description(
    "settle an in-doubt send by hand, from what the provider says: it was sent, or it never was",
  )
  .argument("<key>", "the action key, or a unique start of it (reconcile and explain print it)")
  .addOption(new Option("--sent", "the provider took the message: record it sent"))
  .addOption(
    new Option(
      "--not-sent",
      "the provider never took it: its run sends it again if still on the step; else failed_permanent(not_sent)",
    ).conflicts("sent"),
  )
  .addOption(
    new Option("--provider-id <id>", "with --sent: the provider's id of the message").conflicts(
      "notSent",
    ),
  )
  .option("--note <text>", "why, for the audit trail")
  .action(async (key: string, opts: ResolveFlags, command: Command) => {
    if (!opts.sent && !opts.notSent) command.error("error: give --sent or --not-sent");
    const { runResolve } = await import("./resolve");
    process.exitCode = await runResolve(key, opts);
  });

program
  .command("report")
  .description(
    "duplicate-send and reconciliation measures: table, JSON, or a self-contained HTML file with charts",
  )
  .option("--since <when>", "from this date (ISO-8601) or this long ago", "7d")
  .option("--journey <id>", "only this journey")
  .addOption(
    new Option("--format <format>", "output format")
      .choices(["table", "json", "html"])
      .default("table"),
  )
  .option("--out <file>", "write to this file instead of stdout")
  .action(
    async (opts: {
      since: string;
      journey?: string;
      format: "table" | "json" | "html";
      out?: string;
    }) => {
      const { runReport } = await import("./report");
      process.exitCode = await runReport(opts);
    },
  );

program
  .command("demo")
  .description(
    "run the bundled journeys over sample events on embedded Postgres and Redis (under .sendonce/), then print what was sent",
  )
  .option(
    "--time-scale <n>",
    "run waits this many times faster (86400: a day per second)",
    positiveInt,
    86_400,
  )
  .option("--timeout <seconds>", "give up when not idle after this long", positiveInt, 120)
  .option("--fresh", "delete the state directory first, so every sample event is new", false)
  .option("--verbose", "print the engine's log", false)
  .action(
    async (opts: { timeScale: number; timeout: number; fresh: boolean; verbose: boolean }) => {
      const { runDemo } = await import("./demo");
      process.exitCode = await runDemo({ ...opts, timeoutSeconds: opts.timeout });
    },
  );

program
  .command("explain")
  .description(
    "print a customer's timeline: events, enrollments, claims, suppressed duplicates, skips, sends",
  )
  .requiredOption("--customer <id>", "customer id")
  .option("--journey <id>", "only this journey (events are always shown)")
  .addOption(
    new Option("--format <format>", "output format").choices(["text", "json"]).default("text"),
  )
  .action(async (opts: { customer: string; journey?: string; format: "text" | "json" }) => {
    const { runExplain } = await import("./explain");
    process.exitCode = await runExplain(opts);
  });

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1)
    throw new InvalidArgumentError("must be a whole number of at least 1");
  return n;
}

function port(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 65_535)
    throw new InvalidArgumentError("must be a port number from 1 to 65535");
  return n;
}

/** Errors that carry a message meant for the user; anything else is a bug and shows its stack. */
const USER_ERRORS = new Set([
  "ConfigError",
  "MigrationError",
  "DatabaseUnreachableError",
  "JourneyLoadError",
  "EmbeddedServiceError",
  "EventValidationError",
  "BackfillError",
  "UnknownJourneyError",
  "RedisUnreachableError",
]);

function isSystemError(error: Error): boolean {
  const { code, syscall } = error as { code?: unknown; syscall?: unknown };
  return typeof code === "string" && /^E[A-Z]+$/.test(code) && typeof syscall === "string";
}

try {
  await program.parseAsync();
} catch (error) {
  if (error instanceof Error && (USER_ERRORS.has(error.name) || isSystemError(error))) {
    // A system error (a port in use, a missing file) is the environment's, not a bug: its
    // message names it (listen EADDRINUSE: address already in use 0.0.0.0:8080).
    console.error(`sendonce: ${error.message}`);
    process.exitCode = 1;
  } else {
    throw error;
  }
}
// The embedded Postgres library (demo, explain) exits with 0 on "beforeExit", whatever the
// command decided; say the exit code explicitly.
process.exit(process.exitCode ?? 0);
