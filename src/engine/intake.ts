// Processing a stored event: match it against the deployed journeys, enroll per entry policy,
// and end enrollments it exits. One transaction with the customer locked, so concurrent or
// duplicate events never enroll twice and cooldowns hold.
import type { Sql, Statement } from "../db/sql";
import { poolOf, stmt, withCtes } from "../db/sql";
import type { ParsedEvent } from "../ingest/event";
import type { Via } from "../ingest/store";
import { eventInsert, recordDuplicate } from "../ingest/store";
import type { CompiledJourney } from "../journeys/compile";
import { actionInsert, claimWritten, decideClaim, newActionRow } from "../ledger/actions";
import type { AuditRecord } from "../ledger/audit";
import { auditInsert, recordAudit } from "../ledger/audit";
import { endEnrollment } from "../ledger/enrollments";
import type { CustomerView, EventView } from "./context";
import type { EntryDecision } from "./decide";
import { decideEntry, findExit } from "./decide";
import type { Engine } from "./engine";
import type { CustomerRow, EventRow } from "./rows";
import type { RunRow } from "./run";
import { claimOptions, runOf } from "./run";
import { loadEvent, lockedCustomer, toCustomerView, toEventView } from "./rows";
import type { SendClaim } from "./send";
import { prepareSend } from "./send";

/**
 * An enrollment whose first step is due now; `row` as written, when the caller has it, and the
 * first step's claim when it was made in the enrolling transaction.
 */
export interface NewEnrollment {
  enrollmentId: bigint;
  stepSeq: number;
  row?: RunRow;
  claimed?: SendClaim;
}

/**
 * Matches and enrolls once per event; a second call for the same event does nothing. Given the
 * event's customer, concurrent events of other customers share the transaction's round trips.
 */
export async function processEvent(
  engine: Engine,
  eventRowId: bigint,
  customerId?: string,
): Promise<NewEnrollment[]> {
  const pool = poolOf(engine.db);
  const run = (fn: (tx: Sql) => Promise<NewEnrollment[]>) =>
    customerId === undefined ? pool.tx(fn) : pool.grouped(customerId, fn);
  return run(async (tx) => {
    // One round trip (with the BEGIN): lock the event's customer, then read the event. The
    // lock serialises every processing of this customer's events, so the processedAt read
    // after it is the truth.
    const [customers, events] = await tx.many(
      lockedCustomer(stmt`(SELECT "customerId" FROM "Event" WHERE id = ${eventRowId})`),
      stmt`SELECT id, "eventId", source, type, "customerId", "occurredAt", properties, "processedAt"
           FROM "Event" WHERE id = ${eventRowId}`,
    );
    const row = events![0] as (EventRow & { processedAt: Date | null }) | undefined;
    if (!row || row.processedAt || !customers![0]) return [];
    const customer = toCustomerView(customers![0] as CustomerRow);
    return matchEvent(tx, engine, toEventView(row), customer, { stored: "unprocessed" });
  });
}

/**
 * A delivery from the events queue (an event that changes no consent), stored and processed in
 * one transaction: stored as processed, with its profile traits, its customer locked, matched
 * and enrolled, and the first send claimed. Until it commits nothing of it is visible, so a
 * crash leaves the delivery to its job's retry. A second delivery of a stored event is recorded
 * as a duplicate or conflict, and processes the stored event if nothing has yet.
 */
export async function intakeDelivery(
  engine: Engine,
  event: ParsedEvent,
  via: Via,
): Promise<NewEnrollment[]> {
  const now = engine.clock.now();
  return poolOf(engine.db).grouped(event.customerId, async (tx) => {
    // One round trip (with the BEGIN): the event and its customer written, then the customer
    // locked and read with the traits applied.
    const [inserted, customers] = await tx.many(
      eventInsert(event, via, now, now),
      lockedCustomer(event.customerId),
    );
    const customer = toCustomerView(customers![0] as CustomerRow);
    const row = inserted![0] as { id: bigint } | undefined;
    if (row) {
      const view: EventView = { ...event, rowId: row.id };
      return matchEvent(tx, engine, view, customer, { stored: "processed" });
    }
    const stored = await recordDuplicate(tx, event, via, now);
    if (stored.status !== "duplicate" || stored.processed) return [];
    const first = await loadEvent(tx, stored.eventRowId);
    return matchEvent(tx, engine, first!, customer, { stored: "unprocessed" });
  });
}

/**
 * Matches a stored event against the deployed journeys with its customer locked: ends the
 * enrollments it exits, enrolls per entry policy, claims the first send, and marks the event
 * processed (unless it was stored so) with every audit entry in the transaction's last statement.
 */
async function matchEvent(
  tx: Sql,
  engine: Engine,
  event: EventView,
  customer: CustomerView,
  opts: { stored: "processed" | "unprocessed" },
): Promise<NewEnrollment[]> {
  const { clock, workerId } = engine;
  const now = clock.now();
  const audits: AuditRecord[] = [];
  const enrolled: NewEnrollment[] = [];
  // At most one claim is made here: a second journey's would not see the first's action row
  // (written with the last statement) when it counts the customer's sends against a cap.
  let claimMade = false;
  let claimWrite: Statement | undefined;
  for (const cj of engine.catalog.current) {
    const base = { at: now, customerId: customer.id, journeyId: cj.journey.id, workerId };
    if (cj.exits.some((rule) => rule.event === event.type)) {
      audits.push(
        ...(await exitEnrollments(tx, cj, event, customer, now)).map((a) => ({ ...base, ...a })),
      );
    }
    if (cj.journey.trigger.event !== event.type) continue;
    const result = await enroll(tx, cj, event, customer, now);
    audits.push({ ...base, ...result.audit });
    if (!("enrollmentId" in result)) continue;
    const { enrollmentId } = result;
    const row = newRunRow(cj, result.reference, event, customer);
    const first = claimMade ? undefined : await claimFirstSend(tx, engine, cj, enrollmentId, row);
    if (first) {
      claimMade = true;
      claimWrite = first.write;
      audits.push(...first.audits);
    }
    enrolled.push({ enrollmentId, stepSeq: 0, row, ...(first && { claimed: first.claimed }) });
  }
  await tx.last`${withCtes(
    [
      ...(opts.stored === "unprocessed"
        ? [stmt`u AS (UPDATE "Event" SET "processedAt" = ${now} WHERE id = ${event.rowId})`]
        : []),
      ...(claimWrite ? [stmt`c AS (${claimWrite})`] : []),
    ],
    auditInsert(audits),
  )}`;
  return enrolled;
}

/**
 * The claim of a new enrollment's first step when it is a send, made with the customer already
 * locked: the same re-check and decision as the step's own claim (claimAction), saving that
 * transaction. Its action row and audit entries are written by the caller's last statement.
 * Undefined when the step is not a send, or when its key already has a row (an earlier
 * enrollment's): then the step claims as usual.
 */
async function claimFirstSend(
  tx: Sql,
  engine: Engine,
  cj: CompiledJourney,
  enrollmentId: bigint,
  row: RunRow,
): Promise<{ claimed: SendClaim; write?: Statement; audits: AuditRecord[] } | undefined> {
  const cs = cj.steps.get(row.currentStepId!)!;
  const step = cs.step;
  if (step.kind !== "email" && step.kind !== "sms") return undefined;
  const prepared = prepareSend(runOf(engine, cj, { enrollmentId, row }), cs, step);
  const { intent } = prepared;
  // The policy facts, and whether the key has a row already, in one statement.
  const facts = await tx<{ keyTaken: boolean }>`
    SELECT f.*, EXISTS (SELECT 1 FROM "Action" WHERE key = ${intent.key}) AS "keyTaken"
    FROM (${prepared.ahead.statement}) f`;
  if (facts.length === 0 || facts[0]!.keyTaken) return undefined;
  const opts = claimOptions(engine);
  const verdict = decideClaim(intent, opts, await prepared.recheck(tx, facts), undefined);
  const audits = verdict.audit ? [verdict.audit] : [];
  if (verdict.kind === "result") return { claimed: { prepared, claim: verdict.result }, audits };
  const { state, reason } = verdict;
  return {
    claimed: { prepared, claim: claimWritten(state, reason, newActionRow(state)) },
    write: actionInsert(intent, opts, state, reason),
    audits,
  };
}

/** A new enrollment as runStep would read it back: at its first step, nothing run yet. */
function newRunRow(
  cj: CompiledJourney,
  reference: string,
  event: EventView,
  customer: CustomerView,
): RunRow {
  return {
    status: "active",
    stepSeq: 0,
    currentStepId: cj.journey.steps[0]!.id,
    journeyId: cj.journey.id,
    journeyVersion: cj.journey.version,
    reference,
    customerId: customer.id,
    triggerEventId: event.rowId,
    eventId: event.id,
    source: event.source,
    type: event.type,
    occurredAt: event.occurredAt,
    properties: event.properties,
    email: customer.email,
    phone: customer.phone,
    timezone: customer.timezone,
    attributes: customer.attributes,
  };
}

type Audit = Pick<AuditRecord, "kind" | "rule" | "enrollmentId" | "detail">;

/**
 * The entry policy for one event and journey: the reference to enroll under, or the rule that
 * refuses it (trigger condition, empty reference, cooldown, already enrolled). Read-only, so a
 * backfill's dry run decides exactly as the real run will.
 */
export async function checkEntry(
  tx: Sql,
  cj: CompiledJourney,
  event: EventView,
  customer: CustomerView,
): Promise<{ reference: string } | { audit: Audit }> {
  const { journey } = cj;
  const detail = { eventId: event.id, source: event.source };
  const decision = entryOf(decideEntry(cj, event, customer), event);
  if ("audit" in decision) return decision;
  const { reference } = decision;
  const [existing] = await tx<{ id: bigint }>`
    SELECT id FROM "Enrollment"
    WHERE "journeyId" = ${journey.id} AND "customerId" = ${customer.id} AND reference = ${reference}`;
  if (existing) {
    return {
      audit: {
        kind: "not_enrolled",
        rule: `already_enrolled_${journey.entry.once}`,
        enrollmentId: existing.id,
        detail: { ...detail, reference },
      },
    };
  }
  if (journey.entry.cooldownMs !== undefined) {
    // Cooldown counts in event time, so a backfill of old events decides as live traffic did.
    const [recent] = await tx<{ id: bigint }>`
      SELECT e.id FROM "Enrollment" e JOIN "Event" t ON t.id = e."triggerEventId"
      WHERE e."journeyId" = ${journey.id} AND e."customerId" = ${customer.id} AND e.reference <> ${reference}
        AND abs(extract(epoch FROM (t."occurredAt" - ${event.occurredAt}::timestamptz))) * 1000 < ${journey.entry.cooldownMs}
      LIMIT 1`;
    if (recent) {
      return {
        audit: {
          kind: "not_enrolled",
          rule: "cooldown",
          enrollmentId: recent.id,
          detail: { ...detail, reference },
        },
      };
    }
  }
  return { reference };
}

function entryOf(
  decision: EntryDecision,
  event: EventView,
): { reference: string } | { audit: Audit } {
  if (decision.enroll) return { reference: decision.reference };
  return {
    audit: {
      kind: "not_enrolled",
      rule: decision.rule,
      detail: { eventId: event.id, source: event.source, why: decision.detail },
    },
  };
}

async function enroll(
  tx: Sql,
  cj: CompiledJourney,
  event: EventView,
  customer: CustomerView,
  now: Date,
): Promise<{ enrollmentId: bigint; reference: string; audit: Audit } | { audit: Audit }> {
  const { journey } = cj;
  const detail = { eventId: event.id, source: event.source };
  // Without a cooldown, the insert itself is the check: one round trip in the common case.
  const entry =
    journey.entry.cooldownMs === undefined
      ? entryOf(decideEntry(cj, event, customer), event)
      : await checkEntry(tx, cj, event, customer);
  if ("audit" in entry) return entry;
  const { reference } = entry;
  const first = journey.steps[0]!.id;
  // The unique index settles a race that checkEntry's read could not see.
  const [row] = await tx<{ id: bigint }>`
    INSERT INTO "Enrollment" ("journeyId", "journeyVersion", "customerId", reference, "triggerEventId",
                              status, "currentStepId", "stepSeq", "nextRunAt", "enrolledAt", "updatedAt")
    VALUES (${journey.id}, ${journey.version}, ${customer.id}, ${reference}, ${event.rowId},
            'active', ${first}, 0, ${now}, ${now}, ${now})
    ON CONFLICT ("journeyId", "customerId", reference) DO NOTHING
    RETURNING id`;
  if (!row) {
    const [existing] = await tx<{ id: bigint }>`
      SELECT id FROM "Enrollment"
      WHERE "journeyId" = ${journey.id} AND "customerId" = ${customer.id} AND reference = ${reference}`;
    return {
      audit: {
        kind: "not_enrolled",
        rule: `already_enrolled_${journey.entry.once}`,
        ...(existing && { enrollmentId: existing.id }),
        detail: { ...detail, reference },
      },
    };
  }
  return {
    enrollmentId: row.id,
    reference,
    audit: {
      kind: "enrolled",
      enrollmentId: row.id,
      detail: { ...detail, reference, version: journey.version.slice(0, 12) },
    },
  };
}

/** A backfill's enrollment: one stored event into one journey, with the customer locked. */
export async function enrollInJourney(
  engine: Engine,
  cj: CompiledJourney,
  eventRowId: bigint,
): Promise<{ enrolled?: NewEnrollment; rule?: string }> {
  return poolOf(engine.db).tx(async (tx) => {
    const event = await loadEvent(tx, eventRowId);
    if (!event) return { rule: "event_missing" };
    // The event's foreign key keeps its customer.
    const [locked] = await tx<CustomerRow>`${lockedCustomer(event.customerId)}`;
    const customer = toCustomerView(locked!);
    const now = engine.clock.now();
    const result = await enroll(tx, cj, event, customer, now);
    await recordAudit(tx, {
      at: now,
      customerId: customer.id,
      journeyId: cj.journey.id,
      workerId: engine.workerId,
      ...result.audit,
      detail: { ...result.audit.detail, via: "backfill" },
    });
    return "enrollmentId" in result
      ? { enrolled: { enrollmentId: result.enrollmentId, stepSeq: 0 } }
      : { ...(result.audit.rule && { rule: result.audit.rule }) };
  });
}

/** Ends this customer's active enrollments in the journey that the event exits. */
async function exitEnrollments(
  tx: Sql,
  cj: CompiledJourney,
  event: EventView,
  customer: CustomerView,
  now: Date,
): Promise<Audit[]> {
  const active = await tx<{ id: bigint; reference: string; triggerAt: Date }>`
    SELECT e.id, e.reference, t."occurredAt" AS "triggerAt"
    FROM "Enrollment" e JOIN "Event" t ON t.id = e."triggerEventId"
    WHERE e."journeyId" = ${cj.journey.id} AND e."customerId" = ${customer.id} AND e.status = 'active'`;
  const audits: Audit[] = [];
  for (const enrollment of active) {
    if (event.occurredAt < enrollment.triggerAt) continue;
    if (!findExit(cj, [event], customer, enrollment)) continue;
    const ended = await endEnrollment(tx, {
      enrollmentId: enrollment.id,
      status: "exited",
      reason: `exit event ${event.type} ${event.source}/${event.id}`,
      now,
    });
    // It may have completed since it was read (its last outcome ends it without this lock).
    if (!ended) continue;
    audits.push({
      kind: "exited",
      enrollmentId: enrollment.id,
      rule: event.type,
      detail: { eventId: event.id, source: event.source },
    });
  }
  return audits;
}
