// Reading the engine's views from the database (inside or outside a transaction).
import type { Db, Tx } from "../db/client";
import type { Sql } from "../db/sql";
import type { Statement } from "../db/sql";
import { sqlOf, stmt } from "../db/sql";
import type { CompiledJourney } from "../journeys/compile";
import type { CustomerView, EnrollmentView, EventView } from "./context";
import { findExit } from "./decide";

export interface EventRow {
  id: bigint;
  eventId: string;
  source: string;
  type: string;
  customerId: string;
  occurredAt: Date;
  properties: unknown;
}

export function toEventView(r: EventRow): EventView {
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

export type CustomerRow = Omit<CustomerView, "attributes"> & { attributes: unknown };

export function toCustomerView(row: CustomerRow): CustomerView {
  return { ...row, attributes: (row.attributes ?? {}) as Record<string, unknown> };
}

/**
 * The customer's row, locked FOR NO KEY UPDATE (the lock that serialises everything counted
 * for a customer) and read; `id` is a value or a subquery (a Statement).
 */
export function lockedCustomer(id: unknown): Statement {
  return stmt`SELECT id, email, phone, timezone, attributes FROM "Customer" WHERE id = ${id} FOR NO KEY UPDATE`;
}

export async function loadCustomer(on: Sql | Db | Tx, id: string): Promise<CustomerView> {
  const [row] = await sqlOf(on)<CustomerRow>`
    SELECT id, email, phone, timezone, attributes FROM "Customer" WHERE id = ${id}`;
  if (!row) throw new Error(`customer ${id} not found`);
  return toCustomerView(row);
}

/** Exit candidates are read this many at a time. */
const EXIT_PAGE = 500;

/**
 * The first event that ends this enrollment, if any: of an exit type, for its customer, that
 * happened no earlier than the trigger (including ones that arrived before the enrollment
 * existed), and that the journey's exit rule takes. Read a page at a time, oldest first, for a
 * customer with more events of those types than one page.
 */
export async function findExitEvent(
  on: Sql | Db | Tx,
  cj: CompiledJourney,
  customer: CustomerView,
  enrollment: EnrollmentView,
  since: Date,
): Promise<EventView | undefined> {
  const types = cj.exits.map((e) => e.event);
  if (types.length === 0) return undefined;
  let after: Statement = stmt`TRUE`;
  for (;;) {
    const rows = await sqlOf(on)<EventRow>`
      SELECT id, "eventId", source, type, "customerId", "occurredAt", properties FROM "Event"
      WHERE "customerId" = ${customer.id} AND type = ANY(${types}) AND "occurredAt" >= ${since}
        AND ${after}
      ORDER BY "occurredAt", id LIMIT ${EXIT_PAGE}`;
    const exit = findExit(cj, rows.map(toEventView), customer, enrollment);
    if (exit || rows.length < EXIT_PAGE) return exit;
    const last = rows[rows.length - 1]!;
    after = stmt`("occurredAt", id) > (${last.occurredAt}, ${last.id})`;
  }
}
