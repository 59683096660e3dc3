// Reading the engine's views from the database (inside or outside a transaction).
import type { Db, Tx } from "../db/client";
import type { Sql } from "../db/sql";
import { Fragment, sqlOf } from "../db/sql";
import type { CustomerView, EventView } from "./context";

interface EventRow {
  id: bigint;
  eventId: string;
  source: string;
  type: string;
  customerId: string;
  occurredAt: Date;
  properties: unknown;
}

function toEventView(r: EventRow): EventView {
  return {
    rowId: r.id,
    id: r.eventId,
    source: r.source,
    type: r.type,
    customerId: r.customerId,
    occurredAt: r.occurredAt,
    properties: (r.properties ?? {}) as Record<string, unknown>,
  };
}

export async function loadEvent(on: Sql | Db | Tx, rowId: bigint): Promise<EventView | undefined> {
  const [row] = await sqlOf(on)<EventRow>`
    SELECT id, "eventId", source, type, "customerId", "occurredAt", properties FROM "Event" WHERE id = ${rowId}`;
  return row && toEventView(row);
}

const FOR_UPDATE = new Fragment("FOR UPDATE");
const NOTHING = new Fragment("");

/** The customer's view; with `lock`, also locks the row until the transaction ends. */
export async function loadCustomer(
  on: Sql | Db | Tx,
  id: string,
  opts: { lock?: boolean } = {},
): Promise<CustomerView> {
  const [row] = await sqlOf(on)<Omit<CustomerView, "attributes"> & { attributes: unknown }>`
    SELECT id, email, phone, timezone, attributes FROM "Customer" WHERE id = ${id}
    ${opts.lock ? FOR_UPDATE : NOTHING}`;
  if (!row) throw new Error(`customer ${id} not found`);
  return { ...row, attributes: (row.attributes ?? {}) as Record<string, unknown> };
}

/**
 * Events that may end an enrollment: of an exit type, for this customer, that happened no
 * earlier than the trigger — including ones that arrived before the enrollment existed.
 */
export async function loadExitCandidates(
  on: Sql | Db | Tx,
  customerId: string,
  types: string[],
  since: Date,
): Promise<EventView[]> {
  if (types.length === 0) return [];
  const rows = await sqlOf(on)<EventRow>`
    SELECT id, "eventId", source, type, "customerId", "occurredAt", properties FROM "Event"
    WHERE "customerId" = ${customerId} AND type = ANY(${types}) AND "occurredAt" >= ${since}
    ORDER BY "occurredAt" LIMIT 500`;
  return rows.map(toEventView);
}
