// The API's and the importer's path for an event: store it (the row commits first), then put
// it on the queue. A crash or a Redis outage between the two loses nothing: the workers'
// sweep enqueues every stored event that is not processed yet.
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

export async function ingestEvent(
  db: Db,
  queues: Queues,
  event: ParsedEvent,
  via: Via,
  opts: { now: Date; log: Logger; afterCommit?: () => Promise<void> },
): Promise<IngestResult> {
  const stored = await storeEvent(db, event, via, opts.now);
  await opts.afterCommit?.();
  const status: IngestStatus = stored.status === "new" ? "accepted" : stored.status;
  if (stored.status === "new" || (stored.status === "duplicate" && !stored.processed)) {
    try {
      await enqueueStoredEvents(queues, [stored.eventRowId]);
      await db.event.update({ where: { id: stored.eventRowId }, data: { enqueuedAt: new Date() } });
    } catch (error) {
      // Stored is what counts: the sweep enqueues it once Redis is back.
      opts.log.warn("event stored but not enqueued; the sweep will enqueue it", {
        source: event.source,
        event: event.id,
        error: (error as Error).message,
      });
    }
  }
  return { id: event.id, source: event.source, status };
}
