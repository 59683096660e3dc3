// `sendonce import FILE.ndjson`: a progress bar on a terminal (a line every few seconds
// otherwise), bad lines as FILE:LINE: message, a summary, exit code 1 if any line was bad.
import { existsSync, statSync } from "node:fs";
import { ConfigError, loadConfig, requireDatabaseUrl, requireRedisUrl } from "../config";
import { openMigrated } from "../db/migrate";
import type { ImportProgress } from "../ingest/ndjson";
import { importNdjson } from "../ingest/ndjson";
import { createLogger } from "../log";
import { openQueues } from "../queue/queues";

export async function runImport(
  file: string,
  opts: { source?: string; onError: "skip" | "abort" },
): Promise<number> {
  const config = loadConfig();
  if (!existsSync(file)) throw new ConfigError(`${file}: no such file`);
  if (!statSync(file).isFile()) throw new ConfigError(`${file}: not a file`);
  const redisUrl = requireRedisUrl(config);
  const log = createLogger();
  const db = await openMigrated(requireDatabaseUrl(config), 4);
  const queues = await openQueues(redisUrl, config.queuePrefix, log, { producer: true }).catch(
    async (error: unknown) => {
      await db.$disconnect();
      throw error;
    },
  );
  const started = Date.now();
  const tty = process.stderr.isTTY;
  let lastLine = 0;
  const show = (p: ImportProgress) => {
    const pct =
      p.totalBytes === 0 ? 100 : Math.min(100, Math.round((p.bytesRead / p.totalBytes) * 100));
    const rate = Math.round(p.line / Math.max(0.001, (Date.now() - started) / 1000));
    const text = `${pct}% line ${p.line} · ${p.counts.accepted} accepted, ${p.counts.duplicate} duplicate, ${p.counts.conflict} conflict, ${p.counts.bad} bad · ${rate} lines/s`;
    if (tty) {
      const width = 24;
      const filled = Math.round((pct / 100) * width);
      process.stderr.write(`\r[${"#".repeat(filled)}${"-".repeat(width - filled)}] ${text}`);
    } else if (Date.now() - lastLine > 5_000) {
      lastLine = Date.now();
      process.stderr.write(`${text}\n`);
    }
  };
  try {
    const result = await importNdjson(
      db,
      queues,
      file,
      {
        ...(opts.source && { source: opts.source }),
        onError: opts.onError,
        onBadLine: (line, message) =>
          process.stderr.write(`${tty ? "\n" : ""}${file}:${line}: ${message}\n`),
        onProgress: show,
      },
      log,
    );
    if (tty) process.stderr.write("\n");
    const c = result.counts;
    console.log(
      `${result.aborted ? `aborted at line ${result.line}` : `imported ${file}`}: ${c.accepted} accepted, ${c.duplicate} duplicates, ${c.conflict} conflicts, ${c.bad} bad line${c.bad === 1 ? "" : "s"}`,
    );
    return c.bad > 0 || c.conflict > 0 ? 1 : 0;
  } finally {
    await queues.close();
    await db.$disconnect();
  }
}
