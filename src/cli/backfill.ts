// `sendonce backfill`: flags in, a progress bar on stderr, per-step counts out.
import { resolve } from "node:path";
import { createApp, previewApp } from "../app";
import { ConfigError, loadConfig, requireDatabaseUrl, requireRedisUrl } from "../config";
import { parseDuration, isDurationError } from "../journeys/duration";
import { createLogger } from "../log";
import type { BackfillParams, BackfillProgress } from "../ops/backfill";
import { runBackfill } from "../ops/backfill";
import type { Tally } from "../ops/simulate";

export interface BackfillFlags {
  journey?: string;
  since?: string;
  until?: string;
  file?: string;
  dryRun: boolean;
  rate?: string;
  resume?: string;
}

/** A date, or a date and time with its zone: what `--since` and `--until` take besides a duration. */
const ISO_WHEN =
  /^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?)?$/;

/**
 * `2026-11-01` (midnight UTC), `2026-11-01T09:00:00Z` (a time needs its zone: Z or +01:00), or
 * a duration back from now: `30d`. Nothing else: JavaScript's own date parsing reads "7" as
 * 2001-07-01 and "2026-02-30" as March 2nd, and a backfill from the wrong year sends.
 */
export function parseWhen(flag: string, value: string, now = new Date()): string {
  const d = parseDuration(value);
  if (!isDurationError(d)) return new Date(now.getTime() - d.ms).toISOString();
  const bad = (why: string) =>
    new ConfigError(
      `--${flag} ${value}: ${why}; use an ISO-8601 date (2026-11-01, midnight UTC), a date and time with its zone (2026-11-01T09:00:00Z) or a duration back from now (30d)`,
    );
  const m = ISO_WHEN.exec(value.trim());
  if (!m) throw bad("not a date");
  const [, y, mo, day, hh, mi, ss, zone] = m;
  if (hh !== undefined && zone === undefined) throw bad("a time needs its zone (Z or +01:00)");
  const t = Date.parse(value.trim());
  // Date.parse rolls some impossible dates over (February 30th is March 2nd).
  const calendar = new Date(Date.UTC(Number(y), Number(mo) - 1, Number(day)));
  if (
    Number.isNaN(t) ||
    calendar.getUTCMonth() !== Number(mo) - 1 ||
    calendar.getUTCDate() !== Number(day) ||
    Number(hh ?? 0) > 23 ||
    Number(mi ?? 0) > 59 ||
    Number(ss ?? 0) > 59
  )
    throw bad("no such date or time");
  // A start in the future selects nothing: most likely a typo in the year.
  if (flag === "since" && t > now.getTime())
    throw new ConfigError(`--since ${value} is in the future: nothing has happened since then`);
  return new Date(t).toISOString();
}

function parseRate(value: string): number {
  const m = /^(\d+(?:\.\d+)?)(?:\/s)?$/.exec(value.trim());
  if (!m || Number(m[1]) <= 0)
    throw new ConfigError(`--rate ${value}: use events per second, e.g. 50/s`);
  return Number(m[1]);
}

export async function runBackfillCommand(flags: BackfillFlags): Promise<number> {
  if (flags.resume) {
    // A backfill resumes as it was started: its journey, range or file are stored with it.
    const given = (["journey", "since", "until", "file"] as const).filter((f) => flags[f]);
    if (given.length > 0)
      throw new ConfigError(
        `--resume runs backfill ${flags.resume} with the flags it was started with; only --rate may be given again, not ${given.map((f) => `--${f}`).join(", ")}`,
      );
    // A dry run previews a backfill that is not recorded; a resumed one is, and a preview of
    // it would move its cursor and mark it completed with nothing enrolled.
    if (flags.dryRun)
      throw new ConfigError(
        `--dry-run cannot resume a backfill: give the flags backfill ${flags.resume} was started with and --dry-run instead`,
      );
  } else {
    if (!flags.journey) throw new ConfigError("--journey is required (or --resume ID)");
    if (!flags.since === !flags.file)
      throw new ConfigError("give either --since (stored events) or --file (an NDJSON file)");
    if (flags.until && !flags.since) throw new ConfigError("--until needs --since");
    if (
      flags.until &&
      flags.since &&
      parseWhen("until", flags.until) <= parseWhen("since", flags.since)
    )
      throw new ConfigError("--until must be after --since");
  }
  const params: BackfillParams = {
    journeyId: flags.journey ?? "",
    ...(flags.since && { since: parseWhen("since", flags.since) }),
    ...(flags.until && { until: parseWhen("until", flags.until) }),
    // Absolute: a resume may run from another directory.
    ...(flags.file && { file: resolve(flags.file) }),
    ...(flags.rate && { rate: parseRate(flags.rate) }),
  };
  const config = loadConfig();
  // A dry run changes nothing: it neither deploys the journeys nor needs Redis.
  const app = flags.dryRun
    ? await previewApp(config, { databaseUrl: requireDatabaseUrl(config), log: createLogger() })
    : await createApp(config, {
        databaseUrl: requireDatabaseUrl(config),
        redisUrl: requireRedisUrl(config),
        log: createLogger(),
      });
  const tty = process.stderr.isTTY;
  let lastLine = 0;
  const progress = (p: BackfillProgress) => {
    const eta = p.etaSeconds === undefined ? "?" : `${Math.ceil(p.etaSeconds)} s`;
    const text = `${p.done}/${p.total || "?"} events · ${p.enrolled} enrolled · ${p.ratePerSecond.toFixed(1)}/s · ETA ${eta}`;
    if (tty) {
      const pct = p.total ? p.done / p.total : 0;
      process.stderr.write(`\r[${"#".repeat(Math.round(pct * 24)).padEnd(24, "-")}] ${text}`);
    } else if (Date.now() - lastLine > 5_000) {
      lastLine = Date.now();
      process.stderr.write(`${text}\n`);
    }
  };
  try {
    const result = await runBackfill(app, {
      params,
      dryRun: flags.dryRun,
      ...(flags.resume && { resume: flags.resume }),
      onProgress: progress,
      onStart: (id) =>
        process.stderr.write(`backfill ${id} started (resume it with --resume ${id})\n`),
    });
    if (tty) process.stderr.write("\n");
    for (const bad of result.badLines)
      process.stderr.write(`${result.file ?? flags.file}:${bad.line}: ${bad.message}\n`);
    printTally(result.tally, result.dryRun);
    if (result.id) {
      console.log(
        `\nbackfill ${result.id} done: the workers run the new enrollments' steps; sendonce report --journey ${params.journeyId || "…"} shows what they sent.`,
      );
    }
    return result.badLines.length > 0 ? 1 : 0;
  } finally {
    await app.close();
  }
}

function printTally(t: Tally, dryRun: boolean): void {
  console.log(`${dryRun ? "dry run: " : ""}${t.events} events`);
  for (const [k, v] of Object.entries(t.entry).sort()) console.log(`  entry ${k.padEnd(30)} ${v}`);
  if (!dryRun) return;
  console.log(`\n  ${"step".padEnd(24)} ${"would send".padStart(10)}  suppressed`);
  for (const s of t.steps) {
    const why = Object.entries(s.suppressed)
      .sort()
      .map(([k, v]) => `${k} ${v}`)
      .join(", ");
    console.log(
      `  ${`${s.stepId} (${s.kind})`.padEnd(24)} ${String(s.wouldSend).padStart(10)}  ${why || "-"}`,
    );
  }
}
