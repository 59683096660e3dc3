// The API's and the importer's path for events: store each (its row commits first), then put
// the stored rows on the queue in one round trip. A crash or a Redis outage between the two
// loses nothing: the workers' sweep enqueues every stored event that is not processed yet.
import type { Db } from "../db/client";
import type { Logger } from "../log";
import type { Queues } from "../queue/queues";
import { enqueueStoredEvents } from "../queue/queues";
import type { ParsedEvent } from "./event";
import type { Via } from "./store";
import { storeEvent } from "./store";

export type IngestStatus = "accepted" | "duplicate" | "conflict";

export interface IngestResult {
  id: string;
  source: string;
  status: IngestStatus;
}

export interface IngestOptions {
  now: Date;
  log: Logger;
  /** Test and chaos hook: runs after the rows committed, before they are enqueued. */
  afterCommit?: () => Promise<void>;
}

/** Stores events in order, one transaction each, then enqueues those not processed yet. */
export async function ingestEvents(
  db: Db,
  queues: Queues,
  events: ParsedEvent[],
  via: Via,
  opts: IngestOptions,
): Promise<IngestResult[]> {
  const results: IngestResult[] = [];
  const toEnqueue = new Set<bigint>();
  // One by one and in order: a batch may carry one event twice, and profiles apply in order.
  for (const event of events) {
    const stored = await storeEvent(db, event, via, opts.now);
    // A redelivery of an event stored but never processed (its first request died before
    // enqueueing, or Redis lost the job) is put on the queue again: the job id is the row's.
    if (stored.status === "new" || (stored.status === "duplicate" && !stored.processed))
      toEnqueue.add(stored.eventRowId);
    results.push({
      id: event.id,
      source: event.source,
      status: stored.status === "new" ? "accepted" : stored.status,
    });
  }
  await opts.afterCommit?.();
  if (toEnqueue.size > 0) await enqueue(db, queues, [...toEnqueue], opts.log);
  return results;
}

/** One event: `ingestEvents` for a batch of one. */
export async function ingestEvent(
  db: Db,
  queues: Queues,
  event: ParsedEvent,
  via: Via,
  opts: IngestOptions,
): Promise<IngestResult> {
  const [result] = await ingestEvents(db, queues, [event], via, opts);
  return result!;
}

async function enqueue(db: Db, queues: Queues, rowIds: bigint[], log: Logger): Promise<void> {
  try {
    await enqueueStoredEvents(queues, rowIds);
    await db.event.updateMany({ where: { id: { in: rowIds } }, data: { enqueuedAt: new Date() } });
  } catch (error) {
    // Stored is what counts: the sweep enqueues them once Redis is back.
    log.warn("events stored but not enqueued; the sweep will enqueue them", {
      events: rowIds.length,
      firstRow: String(rowIds[0]),
      error: (error as Error).message,
    });
  }
}
