// Storing an event: the first delivery of (source, id) is kept; a later delivery with the same
// payload is a duplicate, with a different payload a conflict. Both are counted and dropped.
import type { Db, Tx } from "../db/client";
import { TX_OPTIONS } from "../db/client";
import { recordAudit } from "../ledger/audit";
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
  const hash = payloadHash(event);
  const processedAt = opts.processed ? now : null;
  return db.$transaction(async (tx) => {
    await ensureCustomer(tx, event.customerId);
    const inserted = await tx.$queryRaw<{ id: bigint }[]>`
      INSERT INTO "Event" (source, "eventId", type, "customerId", "occurredAt", "receivedAt",
                           properties, customer, "payloadHash", "processedAt")
      VALUES (${event.source}, ${event.id}, ${event.type}, ${event.customerId}, ${event.occurredAt},
              ${now}, ${JSON.stringify(event.properties)}::jsonb,
              ${event.customer ? JSON.stringify(event.customer) : null}::jsonb, ${hash}, ${processedAt})
      ON CONFLICT (source, "eventId") DO NOTHING
      RETURNING id`;
    const row = inserted[0];
    const audit = {
      at: now,
      customerId: event.customerId,
      detail: { source: event.source, eventId: event.id, type: event.type, via },
    };
    if (row) {
      if (event.customer)
        await applyTraits(tx, event.customerId, event.customer, event.occurredAt, event.source);
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
      await recordAudit(tx, { ...audit, kind: "event_received" });
      return { status: "new", eventRowId: row.id };
    }
    const [stored] = await tx.$queryRaw<
      { id: bigint; payloadHash: string; processedAt: Date | null }[]
    >`
      SELECT id, "payloadHash", "processedAt" FROM "Event" WHERE source = ${event.source} AND "eventId" = ${event.id}`;
    const kind = stored!.payloadHash === hash ? "duplicate" : "conflict";
    await tx.eventDuplicate.create({
      data: {
        source: event.source,
        eventId: event.id,
        kind,
        payloadHash: hash,
        via,
        receivedAt: now,
      },
    });
    await recordAudit(tx, {
      ...audit,
      kind: kind === "duplicate" ? "event_duplicate" : "event_conflict",
    });
    return kind === "duplicate"
      ? { status: "duplicate", eventRowId: stored!.id, processed: stored!.processedAt !== null }
      : { status: "conflict", eventRowId: stored!.id };
  }, TX_OPTIONS);
}

/** Makes sure a customer row exists, so it can be locked; profiles are never duplicated. */
export async function ensureCustomer(tx: Tx, customerId: string): Promise<void> {
  await tx.$executeRaw`
    INSERT INTO "Customer" (id, "updatedAt") VALUES (${customerId}, now()) ON CONFLICT (id) DO NOTHING`;
}

/** Applies profile traits as of `occurredAt`: an older update arriving late changes nothing. */
export async function applyTraits(
  tx: Tx,
  customerId: string,
  traits: CustomerTraits,
  occurredAt: Date,
  source: string,
): Promise<void> {
  await tx.$executeRaw`
    UPDATE "Customer" SET
      email = COALESCE(${traits.email ?? null}, email),
      phone = COALESCE(${traits.phone ?? null}, phone),
      timezone = COALESCE(${traits.timezone ?? null}, timezone),
      attributes = attributes || ${JSON.stringify(traits.attributes ?? {})}::jsonb,
      "profileOccurredAt" = ${occurredAt},
      "updatedAt" = now()
    WHERE id = ${customerId} AND ("profileOccurredAt" IS NULL OR "profileOccurredAt" <= ${occurredAt})`;
  for (const [channel, topics] of Object.entries(traits.consents ?? {})) {
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
