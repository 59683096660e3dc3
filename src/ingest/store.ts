// Storing an event: the first delivery of (source, id) is kept; a later delivery with the same
// payload is a duplicate, with a different payload a conflict. Both are counted and dropped.
import type { Sql, Statement } from "../db/sql";
import { poolOf, stmt } from "../db/sql";
import type { Db } from "../db/client";
import type { AuditKind } from "../ledger/audit";
import { auditInsert } from "../ledger/audit";
import { applyConsent } from "../policies/consent";
import type { CustomerTraits, ParsedEvent } from "./event";
import { CONSENT_EVENTS, payloadHash } from "./event";

export type StoreResult =
  | { status: "new"; eventRowId: bigint }
  | { status: "duplicate"; eventRowId: bigint; processed: boolean }
  | { status: "conflict"; eventRowId: bigint };

/** Where an event came in: api, import, backfill, queue, demo. */
export type Via = string;

/** Stores one event, or records it as a duplicate or conflict of the stored one. */
export async function storeEvent(
  db: Db,
  event: ParsedEvent,
  via: Via,
  now: Date,
  /** Stored as already processed: a backfill from a file feeds one journey, not all of them. */
  opts: { processed?: boolean } = {},
): Promise<StoreResult> {
  const pool = poolOf(db);
  // An event that changes no consent is stored in one statement, with its profile traits; one
  // that does is stored with its changes in one transaction, so a redelivery never finds the
  // event without them.
  // In a round trip shared with other customers' events, taken in customer order: the order
  // group transactions lock customers in, so neither waits for the other holding a later one.
  if (!changesConsent(event)) return store(pool.sharedFor(event.customerId), event, via, now, opts);
  return pool.tx(async (tx) => {
    const result = await store(tx, event, via, now, opts);
    if (result.status !== "new") return result;
    // The profile fields went in with the event; the consents in them go in here.
    await applyConsentChanges(tx, event);
    return result;
  });
}

/** The consent changes an event makes: those its traits carry, and a consent event's own. */
async function applyConsentChanges(tx: Sql, event: ParsedEvent): Promise<void> {
  if (event.customer?.consents) {
    await applyConsents(
      tx,
      event.customerId,
      event.customer.consents,
      event.occurredAt,
      event.source,
    );
  }
  const consent = CONSENT_EVENTS[event.type as keyof typeof CONSENT_EVENTS];
  if (consent) {
    const { channel, topic } = event.properties as { channel: "email" | "sms"; topic: string };
    await applyConsent(tx, {
      customerId: event.customerId,
      channel,
      topic,
      status: consent,
      occurredAt: event.occurredAt,
      source: event.source,
    });
  }
}

/**
 * What storing the event changes about its customer (profile traits and consents), without
 * storing the event: a dry run applies this in a transaction it rolls back.
 */
export async function applyEventChanges(tx: Sql, event: ParsedEvent): Promise<void> {
  if (event.customer) {
    await tx.run`${traitsUpsert(event.customerId, event.customer, event.occurredAt)}`;
  } else {
    await tx.run`${customerUpsert(event)}`;
  }
  await applyConsentChanges(tx, event);
}

/** Whether storing the event changes a consent: a consent event, or traits that carry consents. */
export function changesConsent(event: ParsedEvent): boolean {
  return (
    Object.hasOwn(CONSENT_EVENTS, event.type) ||
    Object.keys(event.customer?.consents ?? {}).length > 0
  );
}

/** The event row and its audit entry (with the customer row it needs), or the duplicate's. */
async function store(
  sql: Sql,
  event: ParsedEvent,
  via: Via,
  now: Date,
  opts: { processed?: boolean },
): Promise<StoreResult> {
  const [row] = await sql<{
    id: bigint;
  }>`${eventInsert(event, via, now, opts.processed ? now : null)}`;
  if (row) return { status: "new", eventRowId: row.id };
  return recordDuplicate(sql, event, via, now);
}

/**
 * The insert of a new event with its audit entry and the customer row it needs; it returns the
 * row's id, or no row when (source, id) is stored already (see recordDuplicate).
 */
export function eventInsert(
  event: ParsedEvent,
  via: Via,
  now: Date,
  processedAt: Date | null,
): Statement {
  return stmt`
    WITH e AS (
      INSERT INTO "Event" (source, "eventId", type, "customerId", "occurredAt", "receivedAt",
                           properties, customer, "payloadHash", "processedAt")
      VALUES (${event.source}, ${event.id}, ${event.type}, ${event.customerId}, ${event.occurredAt},
              ${now}, ${JSON.stringify(event.properties)}::jsonb,
              ${event.customer ? JSON.stringify(event.customer) : null}::jsonb, ${payloadHash(event)},
              ${processedAt})
      ON CONFLICT (source, "eventId") DO NOTHING
      RETURNING id),
    c AS (${customerUpsert(event)}),
    a AS (${eventAudit(event, via, now, "event_received")}, e)
    SELECT id FROM e`;
}

/** A second delivery of a stored event, recorded as a duplicate or, with another payload, a conflict. */
export async function recordDuplicate(
  sql: Sql,
  event: ParsedEvent,
  via: Via,
  now: Date,
): Promise<Exclude<StoreResult, { status: "new" }>> {
  const hash = payloadHash(event);
  const [stored] = await sql<{ id: bigint; payloadHash: string; processedAt: Date | null }>`
    SELECT id, "payloadHash", "processedAt" FROM "Event" WHERE source = ${event.source} AND "eventId" = ${event.id}`;
  const kind = stored!.payloadHash === hash ? "duplicate" : "conflict";
  await sql`
    WITH d AS (
      INSERT INTO "EventDuplicate" (source, "eventId", kind, "payloadHash", via, "receivedAt")
      VALUES (${event.source}, ${event.id}, ${kind}::"DuplicateKind", ${hash}, ${via}, ${now}))
    ${eventAudit(event, via, now, kind === "duplicate" ? "event_duplicate" : "event_conflict")}`;
  return kind === "duplicate"
    ? { status: "duplicate", eventRowId: stored!.id, processed: stored!.processedAt !== null }
    : { status: "conflict", eventRowId: stored!.id };
}

function eventAudit(event: ParsedEvent, via: Via, now: Date, kind: AuditKind): Statement {
  return auditInsert([
    {
      kind,
      at: now,
      customerId: event.customerId,
      detail: { source: event.source, eventId: event.id, type: event.type, via },
    },
  ]);
}

/**
 * The customer row the event needs (the foreign key is checked at the end of the statement),
 * with the event's profile traits when the event is new (CTE `e` inserted it).
 */
function customerUpsert(event: ParsedEvent): Statement {
  if (!event.customer) {
    return stmt`INSERT INTO "Customer" (id, "updatedAt") VALUES (${event.customerId}, now())
      ON CONFLICT (id) DO NOTHING`;
  }
  return traitsUpsert(
    event.customerId,
    event.customer,
    event.occurredAt,
    stmt`EXISTS (SELECT 1 FROM e)`,
  );
}

/**
 * The customer with profile traits as of `occurredAt`, created if need be, field by field:
 * each of email, phone, timezone and every attribute takes this update's value unless a newer
 * update set it ("traitTimes" keeps when each was set). An older update arriving late
 * so changes nothing a newer one set, and still sets what none did (a late signup's email).
 * Nothing changes where `when` is false.
 */
function traitsUpsert(
  customerId: string,
  t: CustomerTraits,
  occurredAt: Date,
  when: Statement = stmt`TRUE`,
): Statement {
  const attributes = t.attributes ?? {};
  const fields = [
    ...PROFILE_FIELDS.filter((field) => t[field] !== undefined),
    ...Object.keys(attributes).map((key) => `a:${key}`),
  ];
  // Dated by Postgres, as every update compares them: JavaScript writes year 0 as "0000-…",
  // which Postgres would refuse to read back.
  const times = stmt`(SELECT COALESCE(jsonb_object_agg(f, to_jsonb(${occurredAt}::timestamptz)), '{}'::jsonb)
                      FROM unnest(${fields}::text[]) f)`;
  // The usual case, cheaply: the update is no older than any applied before (every trait's
  // time is at most "profileOccurredAt"), so each trait it carries takes its value.
  const latest = stmt`EXCLUDED."profileOccurredAt" >= COALESCE("Customer"."profileOccurredAt", '-infinity')`;
  // Whether this update is not older than the one that set `field` (a SQL text expression).
  const newer = (field: Statement) =>
    stmt`COALESCE(("Customer"."traitTimes"->>(${field}))::timestamptz, '-infinity') <= EXCLUDED."profileOccurredAt"`;
  const takes = (field: (typeof PROFILE_FIELDS)[number]) =>
    stmt`(EXCLUDED.${RAW[field]} IS NOT NULL AND ${newer(stmt`${field}::text`)})`;
  const freshAttributes = stmt`(SELECT jsonb_object_agg(k, v) FROM jsonb_each(EXCLUDED.attributes) x(k, v)
                                WHERE ${newer(stmt`'a:' || k`)})`;
  const freshTimes = stmt`(SELECT jsonb_object_agg('a:' || k, to_jsonb(EXCLUDED."profileOccurredAt"))
                           FROM jsonb_each(EXCLUDED.attributes) x(k, v) WHERE ${newer(stmt`'a:' || k`)})`;
  return stmt`
    INSERT INTO "Customer" (id, email, phone, timezone, attributes, "traitTimes", "profileOccurredAt", "updatedAt")
    VALUES (${customerId}, ${t.email ?? null}, ${t.phone ?? null}, ${t.timezone ?? null},
            ${JSON.stringify(attributes)}::jsonb, ${times}, ${occurredAt}, now())
    ON CONFLICT (id) DO UPDATE SET
      email = CASE WHEN ${latest} THEN COALESCE(EXCLUDED.email, "Customer".email)
                   WHEN ${takes("email")} THEN EXCLUDED.email ELSE "Customer".email END,
      phone = CASE WHEN ${latest} THEN COALESCE(EXCLUDED.phone, "Customer".phone)
                   WHEN ${takes("phone")} THEN EXCLUDED.phone ELSE "Customer".phone END,
      timezone = CASE WHEN ${latest} THEN COALESCE(EXCLUDED.timezone, "Customer".timezone)
                      WHEN ${takes("timezone")} THEN EXCLUDED.timezone ELSE "Customer".timezone END,
      attributes = "Customer".attributes
        || CASE WHEN ${latest} THEN EXCLUDED.attributes ELSE COALESCE(${freshAttributes}, '{}'::jsonb) END,
      "traitTimes" = "Customer"."traitTimes"
        || CASE WHEN ${latest} THEN EXCLUDED."traitTimes"
           ELSE jsonb_strip_nulls(jsonb_build_object(
                  'email', CASE WHEN ${takes("email")} THEN to_jsonb(EXCLUDED."profileOccurredAt") END,
                  'phone', CASE WHEN ${takes("phone")} THEN to_jsonb(EXCLUDED."profileOccurredAt") END,
                  'timezone', CASE WHEN ${takes("timezone")} THEN to_jsonb(EXCLUDED."profileOccurredAt") END))
                || COALESCE(${freshTimes}, '{}'::jsonb) END,
      "profileOccurredAt" = GREATEST("Customer"."profileOccurredAt", EXCLUDED."profileOccurredAt"),
      "updatedAt" = now()
    WHERE ${when}`;
}

/** The profile's own fields, each set as of the update that carried it. */
const PROFILE_FIELDS = ["email", "phone", "timezone"] as const;
const RAW = { email: stmt`email`, phone: stmt`phone`, timezone: stmt`timezone` };

/**
 * Applies profile traits as of `occurredAt`, creating the customer if need be: an older update
 * arriving late changes nothing.
 */
export async function applyTraits(
  tx: Sql,
  customerId: string,
  traits: CustomerTraits,
  occurredAt: Date,
  source: string,
): Promise<void> {
  await tx.run`${traitsUpsert(customerId, traits, occurredAt)}`;
  if (traits.consents) await applyConsents(tx, customerId, traits.consents, occurredAt, source);
}

/** The consents a profile update carries, each as of `occurredAt`. */
async function applyConsents(
  tx: Sql,
  customerId: string,
  consents: NonNullable<CustomerTraits["consents"]>,
  occurredAt: Date,
  source: string,
): Promise<void> {
  for (const [channel, topics] of Object.entries(consents)) {
    for (const [topic, status] of Object.entries(topics ?? {})) {
      await applyConsent(tx, {
        customerId,
        channel: channel as "email" | "sms",
        topic,
        status,
        occurredAt,
        source,
      });
    }
  }
}
