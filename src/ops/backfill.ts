// Backfills: replay stored events (or a file of them) through one journey with the same keys
// as live traffic, so nothing already sent is sent again. A dry run says, per step, what would
// be sent and what suppressed and why; a real run enrolls (the workers do the steps), keeps
// to a rate, records its cursor, and resumes after a crash.
import { randomBytes } from "node:crypto";
import { createReadStream, existsSync, statSync } from "node:fs";
import { createInterface } from "node:readline";
import type { EngineApp } from "../app";
import type { Queues } from "../queue/queues";
import type { Prisma } from "../generated/prisma/client";
import type { CustomerView, EventView } from "../engine/context";
import { enrollInJourney } from "../engine/intake";
import { loadCustomer, loadEvent } from "../engine/rows";
import type { Db, Tx } from "../db/client";
import { TX_OPTIONS } from "../db/client";
import { sqlOf } from "../db/sql";
import { parseEvent } from "../ingest/event";
import type { ParsedEvent } from "../ingest/event";
import { CONSENT_EVENTS, payloadHash } from "../ingest/event";
import { lineProblem } from "../ingest/ndjson";
import { applyEventChanges, storeEvent } from "../ingest/store";
import type { CompiledJourney } from "../journeys/compile";
import { enqueueSteps } from "../queue/queues";
import type { Tally } from "./simulate";
import { emptyHypothetical, emptyTally, simulateEvent } from "./simulate";

export interface BackfillParams {
  journeyId: string;
  since?: string;
  until?: string;
  file?: string;
  /** Events per second; unlimited when unset. */
  rate?: number;
}

export interface BackfillProgress {
  id: string;
  done: number;
  total: number;
  enrolled: number;
  ratePerSecond: number;
  etaSeconds: number | undefined;
}

export interface BackfillResult {
  id?: string;
  dryRun: boolean;
  tally: Tally;
  badLines: { line: number; message: string }[];
  /** The file read (a resumed run's is the one it was started with). */
  file?: string;
}

export class BackfillError extends Error {
  override readonly name = "BackfillError";
}

interface Source {
  total: number;
  /** Events after the cursor, in order; each with the cursor to record once it is done. */
  events(): AsyncIterable<Item | { bad: string; line: number }>;
}

interface Item {
  event: EventView;
  customer: CustomerView;
  cursor: Cursor;
  /**
   * A dry run's file event that changes its customer (profile traits, consents, a consent
   * event), as the real run would store it. The dry run applies it, and the earlier ones of the
   * same customer, in a transaction it rolls back.
   */
  changes?: ParsedEvent;
}

/** Thrown to roll a dry run's transaction back once it has read what it needs. */
class RolledBack extends Error {}

/** Runs `fn` in a transaction that is always rolled back: a dry run changes nothing. */
async function rolledBack(db: Db, fn: (tx: Tx) => Promise<void>): Promise<void> {
  try {
    await db.$transaction(async (tx) => {
      await fn(tx);
      throw new RolledBack();
    }, TX_OPTIONS);
  } catch (error) {
    if (!(error instanceof RolledBack)) throw error;
  }
}

type Cursor = { at: Date; id: bigint } | { line: number };

export async function runBackfill(
  app: EngineApp & { queues?: Queues },
  opts: {
    params: BackfillParams;
    dryRun: boolean;
    resume?: string;
    onStart?: (id: string) => void;
    onProgress?: (p: BackfillProgress) => void;
  },
): Promise<BackfillResult> {
  const { engine, db } = app;
  const queues = app.queues;
  if (!opts.dryRun && !queues) throw new BackfillError("a backfill that enrolls needs the queues");
  let params = opts.params;
  let id = opts.resume;
  let cursor: Cursor | undefined;
  if (opts.resume) {
    const row = await db.backfill.findUnique({ where: { id: opts.resume } });
    if (!row) throw new BackfillError(`no backfill "${opts.resume}" to resume`);
    if (row.status === "completed") throw new BackfillError(`backfill ${row.id} already completed`);
    if (opts.dryRun) throw new BackfillError("a dry run cannot resume a backfill");
    // Stored with the row; a rate given again applies to this run.
    params = {
      ...(row.params as unknown as BackfillParams),
      ...(opts.params.rate !== undefined && { rate: opts.params.rate }),
    };
    if (row.cursorLine !== null) cursor = { line: row.cursorLine };
    else if (row.cursorAt && row.cursorId !== null) cursor = { at: row.cursorAt, id: row.cursorId };
  }
  const cj = engine.catalog.current.find((c) => c.journey.id === params.journeyId);
  if (!cj) {
    throw new BackfillError(
      `journey "${params.journeyId}" is not deployed here; journeys: ${engine.catalog.current.map((c) => c.journey.id).join(", ")}`,
    );
  }
  if (params.file && !(existsSync(params.file) && statSync(params.file).isFile())) {
    // Before a backfill row exists: nothing is left "running" that never ran.
    throw new BackfillError(`cannot read ${params.file}: no such file`);
  }
  const source = params.file
    ? fileSource(app, params.file, cursor, opts.dryRun)
    : await storedSource(app, cj, params, cursor);
  if (!opts.dryRun && !id) {
    id = `bf_${Date.now().toString(36)}_${randomBytes(3).toString("hex")}`;
    await db.backfill.create({
      data: {
        id,
        journeyId: cj.journey.id,
        params: params as unknown as Prisma.InputJsonObject,
        total: source.total,
      },
    });
  }
  if (id) opts.onStart?.(id);
  const tally = emptyTally(cj);
  const hypothetical = emptyHypothetical();
  // The real run stores every line before the workers run the steps, so an exit event
  // anywhere in the file ends the enrollments it applies to: the dry run reads them first.
  if (opts.dryRun && params.file)
    hypothetical.exits = await exitEventsIn(
      params.file,
      cj.exits.map((e) => e.event),
    );
  // A dry run of a file: each customer's changes from the lines so far (the real run stores
  // each line before the next; the dry run stores nothing).
  const changed = new Map<string, ParsedEvent[]>();
  const badLines: BackfillResult["badLines"] = [];
  const started = Date.now();
  let done = 0;
  let enrolled = 0;
  let savedDone = 0;
  let savedEnrolled = 0;
  let lastSaved = Date.now();
  const save = async (c: Cursor, status?: "completed") => {
    if (!id) return;
    await db.backfill.update({
      where: { id },
      data: {
        ...("line" in c ? { cursorLine: c.line } : { cursorAt: c.at, cursorId: c.id }),
        done: { increment: done - savedDone },
        enrolled: { increment: enrolled - savedEnrolled },
        ...(status && { status, finishedAt: new Date() }),
      },
    });
    savedDone = done;
    savedEnrolled = enrolled;
  };
  let last: Cursor | undefined;
  for await (const item of source.events()) {
    if ("bad" in item) {
      badLines.push({ line: item.line, message: item.bad });
      continue;
    }
    if (opts.dryRun) {
      if (item.changes) {
        const list = changed.get(item.customer.id) ?? [];
        list.push(item.changes);
        changed.set(item.customer.id, list);
      }
      const changes = changed.get(item.customer.id);
      await rolledBack(db, async (tx) => {
        let customer = item.customer;
        if (changes) {
          // As the real run would have stored them by now: newer traits win, consents in
          // occurredAt order.
          for (const e of changes) await applyEventChanges(sqlOf(tx), e);
          customer = await loadCustomer(tx, customer.id);
        }
        await simulateEvent(engine, tx, cj, item.event, customer, tally, hypothetical);
      });
    } else {
      const result = await enrollInJourney(engine, cj, item.event.rowId);
      tally.events += 1;
      const outcome = result.enrolled ? "enrolled" : (result.rule ?? "refused");
      tally.entry[outcome] = (tally.entry[outcome] ?? 0) + 1;
      if (result.enrolled) {
        enrolled += 1;
        await enqueueSteps(
          queues!,
          [{ ...result.enrolled, at: engine.clock.now() }],
          engine.clock.now(),
        );
      }
    }
    done += 1;
    last = item.cursor;
    if (Date.now() - lastSaved > 1_000) {
      await save(last);
      lastSaved = Date.now();
    }
    const elapsed = (Date.now() - started) / 1000;
    if (params.rate) {
      // Keep to the rate: event n is due at n / rate seconds after the start.
      const ahead = done / params.rate - elapsed;
      if (ahead > 0) await new Promise((r) => setTimeout(r, ahead * 1000));
    }
    const rate = done / Math.max(0.001, (Date.now() - started) / 1000);
    opts.onProgress?.({
      id: id ?? "dry-run",
      done,
      total: source.total,
      enrolled,
      ratePerSecond: rate,
      etaSeconds: source.total > done ? (source.total - done) / rate : 0,
    });
  }
  if (id) await save(last ?? cursor ?? { line: 0 }, "completed");
  return {
    ...(id && { id }),
    dryRun: opts.dryRun,
    tally,
    badLines,
    ...(params.file && { file: params.file }),
  };
}

async function storedSource(
  app: EngineApp,
  cj: CompiledJourney,
  params: BackfillParams,
  cursor: Cursor | undefined,
): Promise<Source> {
  const since = params.since ? new Date(params.since) : new Date(0);
  const until = params.until ? new Date(params.until) : new Date("9999-01-01T00:00:00Z");
  const type = cj.journey.trigger.event;
  const after = cursor && "at" in cursor ? cursor : { at: new Date(0), id: 0n };
  const [count] = await app.db.$queryRaw<{ n: bigint }[]>`
    SELECT count(*) AS n FROM "Event" WHERE type = ${type} AND "occurredAt" >= ${since} AND "occurredAt" < ${until}
      AND ("occurredAt", id) > (${after.at}::timestamptz, ${after.id}::bigint)`;
  return {
    total: Number(count?.n ?? 0),
    async *events() {
      let from = after;
      for (;;) {
        const page = await app.db.$queryRaw<{ id: bigint; occurredAt: Date }[]>`
          SELECT id, "occurredAt" FROM "Event"
          WHERE type = ${type} AND "occurredAt" >= ${since} AND "occurredAt" < ${until}
            AND ("occurredAt", id) > (${from.at}::timestamptz, ${from.id}::bigint)
          ORDER BY "occurredAt", id LIMIT 500`;
        if (page.length === 0) return;
        for (const row of page) {
          const event = (await loadEvent(app.db, row.id))!;
          yield {
            event,
            customer: await loadCustomer(app.db, event.customerId),
            cursor: { at: row.occurredAt, id: row.id },
          };
        }
        const lastRow = page[page.length - 1]!;
        from = { at: lastRow.occurredAt, id: lastRow.id };
      }
    },
  };
}

function fileSource(
  app: EngineApp,
  file: string,
  cursor: Cursor | undefined,
  dryRun: boolean,
): Source {
  const skip = cursor && "line" in cursor ? cursor.line : 0;
  return {
    total: 0,
    async *events() {
      for await (const l of fileLines(file)) {
        const n = l.line;
        if (n <= skip) continue;
        if ("bad" in l) {
          yield { line: n, bad: l.bad };
          continue;
        }
        const { parsed } = l;
        // As `import` says it: an id stored before with another payload is not this event, and
        // enrolling the stored one would send what the file does not say.
        const conflict = `conflict: event ${parsed.source}/${parsed.id} was stored before with a different payload; this line was not stored or enrolled`;
        let event: EventView;
        if (dryRun) {
          const [stored] = await app.db.$queryRaw<{ payloadHash: string }[]>`
            SELECT "payloadHash" FROM "Event" WHERE source = ${parsed.source} AND "eventId" = ${parsed.id}`;
          if (stored && stored.payloadHash !== payloadHash(parsed)) {
            yield { line: n, bad: conflict };
            continue;
          }
          event = unstoredView(parsed);
        } else {
          // Stored as processed: this file feeds the one journey, not every journey.
          const stored = await storeEvent(app.db, parsed, "backfill", app.engine.clock.now(), {
            processed: true,
          });
          if (stored.status === "conflict") {
            yield { line: n, bad: conflict };
            continue;
          }
          event = (await loadEvent(app.db, stored.eventRowId))!;
        }
        const existing = await app.db.customer.findUnique({ where: { id: parsed.customerId } });
        const customer: CustomerView = existing
          ? await loadCustomer(app.db, parsed.customerId)
          : { id: parsed.customerId, email: null, phone: null, timezone: null, attributes: {} };
        yield {
          event,
          customer,
          cursor: { line: n },
          ...(dryRun && (parsed.customer || parsed.type in CONSENT_EVENTS) && { changes: parsed }),
        };
      }
    },
  };
}

/**
 * The lines of an NDJSON file, numbered from 1, each parsed as an event or with what is wrong
 * with it; blank lines are skipped.
 */
async function* fileLines(
  file: string,
): AsyncGenerator<{ line: number } & ({ parsed: ParsedEvent } | { bad: string })> {
  const lines = createInterface({
    input: createReadStream(file, { encoding: "utf8" }),
    crlfDelay: Infinity,
  });
  let line = 0;
  for await (const text of lines) {
    line += 1;
    if (text.trim() === "") continue;
    let parsed: ParsedEvent;
    try {
      parsed = parseEvent(JSON.parse(text));
    } catch (error) {
      yield { line, bad: lineProblem(error) };
      continue;
    }
    yield { line, parsed };
  }
}

/** The events of these types in an NDJSON file, per customer; lines that do not parse are skipped. */
async function exitEventsIn(file: string, types: string[]): Promise<Map<string, EventView[]>> {
  const byCustomer = new Map<string, EventView[]>();
  if (types.length === 0) return byCustomer;
  for await (const l of fileLines(file)) {
    if ("bad" in l || !types.includes(l.parsed.type)) continue;
    const list = byCustomer.get(l.parsed.customerId) ?? [];
    list.push(unstoredView(l.parsed));
    byCustomer.set(l.parsed.customerId, list);
  }
  return byCustomer;
}

/** A file's event as the engine sees it, for a dry run that stores nothing. */
function unstoredView(parsed: ParsedEvent): EventView {
  const { id, source, type, customerId, occurredAt, properties } = parsed;
  return { rowId: 0n, id, source, type, customerId, occurredAt, properties };
}
