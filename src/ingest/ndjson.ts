// Importing a file of events, one JSON object per line, through the same path as the API:
// stored (deduplicated on source and id) before it is enqueued. Streams, so a large file
// never sits in memory.
import { createReadStream, statSync } from "node:fs";
import { createInterface } from "node:readline";
import type { Db } from "../db/client";
import type { Logger } from "../log";
import type { Queues } from "../queue/queues";
import type { ParsedEvent } from "./event";
import { EventValidationError, parseEvent } from "./event";
import type { IngestStatus } from "./ingest";
import { ingestEvents } from "./ingest";

/** Valid lines stored and enqueued together. */
const CHUNK = 100;

export interface ImportProgress {
  line: number;
  bytesRead: number;
  totalBytes: number;
  counts: Record<IngestStatus | "bad", number>;
}

export interface ImportOptions {
  source?: string;
  onError: "skip" | "abort";
  /** A bad or conflicting line, with its 1-based number and what is wrong. */
  onBadLine: (line: number, message: string) => void;
  onProgress?: (p: ImportProgress) => void;
}

export async function importNdjson(
  db: Db,
  queues: Queues,
  file: string,
  opts: ImportOptions,
  log: Logger,
): Promise<ImportProgress & { aborted: boolean }> {
  const totalBytes = statSync(file).size;
  const stream = createReadStream(file, { encoding: "utf8" });
  const lines = createInterface({ input: stream, crlfDelay: Infinity });
  const progress: ImportProgress = {
    line: 0,
    bytesRead: 0,
    totalBytes,
    counts: { accepted: 0, duplicate: 0, conflict: 0, bad: 0 },
  };
  // Valid lines are stored in order and enqueued a chunk at a time: one Redis round trip per
  // chunk instead of one per line.
  let pending: ParsedEvent[] = [];
  let lineOf: number[] = [];
  const flush = async () => {
    if (pending.length === 0) return;
    const results = await ingestEvents(db, queues, pending, "import", { now: new Date(), log });
    results.forEach((r, i) => {
      progress.counts[r.status] += 1;
      // As the API's 409: the id was stored before with another payload; this line is not.
      if (r.status === "conflict") {
        opts.onBadLine(
          lineOf[i]!,
          `conflict: event ${pending[i]!.source}/${pending[i]!.id} was stored before with a different payload; this line was not stored`,
        );
      }
    });
    pending = [];
    lineOf = [];
    opts.onProgress?.(progress);
  };
  for await (const text of lines) {
    progress.line += 1;
    progress.bytesRead += Buffer.byteLength(text) + 1;
    if (text.trim() === "") continue;
    try {
      const raw = JSON.parse(text) as unknown;
      const withSource =
        opts.source && raw && typeof raw === "object" && !("source" in raw)
          ? { ...raw, source: opts.source }
          : raw;
      pending.push(parseEvent(withSource));
      lineOf.push(progress.line);
    } catch (error) {
      const message = lineProblem(error);
      progress.counts.bad += 1;
      opts.onBadLine(progress.line, message);
      if (opts.onError === "abort") {
        lines.close();
        stream.destroy();
        // The lines before the bad one are stored; nothing of the bad one or after it.
        await flush();
        return { ...progress, aborted: true };
      }
      continue;
    }
    if (pending.length >= CHUNK) await flush();
  }
  await flush();
  opts.onProgress?.(progress);
  return { ...progress, aborted: false };
}

/**
 * What is wrong with a line that did not parse as an event: the event's problems by field, or
 * JSON.parse's message without the text it quotes (V8 quotes the line around the error,
 * `Unexpected token '+', ..."phone":+4915..." is not valid JSON`, a customer's address or
 * number among it, and bad lines are printed).
 */
export function lineProblem(error: unknown): string {
  if (error instanceof EventValidationError) return error.message;
  const message = (error as Error).message.replace(
    /, (?:\.\.\.)?".* is not valid JSON$/s,
    " (not valid JSON)",
  );
  return `not JSON: ${message}`;
}
