// What conditions and templates see: plain data built from stored rows.
import type { ConditionContext } from "../journeys/expressions";

/** An event as the engine reads it. */
export interface EventView {
  rowId: bigint;
  id: string;
  source: string;
  type: string;
  customerId: string;
  occurredAt: Date;
  properties: Record<string, unknown>;
}

/** A customer as the engine reads it. */
export interface CustomerView {
  id: string;
  email: string | null;
  phone: string | null;
  timezone: string | null;
  attributes: Record<string, unknown>;
}

export interface EnrollmentView {
  id: bigint;
  reference: string;
}

export function eventData(e: EventView): Record<string, unknown> {
  return {
    id: e.id,
    source: e.source,
    type: e.type,
    customerId: e.customerId,
    occurredAt: e.occurredAt.toISOString(),
    properties: e.properties,
  };
}

/** Absent profile fields are left out, so `has(customer.phone)` means what it says. */
export function customerData(c: CustomerView): Record<string, unknown> {
  return {
    id: c.id,
    ...(c.email !== null && { email: c.email }),
    ...(c.phone !== null && { phone: c.phone }),
    ...(c.timezone !== null && { timezone: c.timezone }),
    attributes: c.attributes,
  };
}

export function conditionContext(
  event: EventView,
  customer: CustomerView,
  enrollment?: EnrollmentView,
): ConditionContext {
  return {
    event: eventData(event),
    customer: customerData(customer),
    ...(enrollment && { enrollment: { reference: enrollment.reference } }),
  };
}
