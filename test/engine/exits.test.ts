// Exits against the ledger: an enrollment ends on its exit event however many events of the
// exit's type its customer has (they are read a page at a time).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { compileJourney } from "../../src/journeys/compile";
import { loadJourneys } from "../../src/journeys/load";
import { findExitEvent } from "../../src/engine/rows";
import type { CustomerView } from "../../src/engine/context";
import { ROOT } from "../support/cli";
import { createTestSchema } from "../support/db";
import type { TestSchema } from "../support/db";

let t: TestSchema;
beforeAll(async () => {
  t = await createTestSchema("exits");
});
afterAll(() => t.drop());

const customer: CustomerView = {
  id: "c_orders",
  email: null,
  phone: null,
  timezone: null,
  attributes: {},
};

describe("exit events", () => {
  it("finds the order that exits a cart's series behind 1,200 orders of other carts", async () => {
    const { journeys } = loadJourneys(`${ROOT}/journeys`);
    const cart = compileJourney(journeys.find((j) => j.id === "cart-abandonment")!);
    await t.db.$executeRaw`INSERT INTO "Customer" (id, "updatedAt") VALUES (${customer.id}, now())`;
    const since = new Date("2026-11-01T00:00:00Z");
    // Other carts' orders, each a minute apart, then this cart's: the 1,201st.
    await t.db.$executeRaw`
      INSERT INTO "Event" (source, "eventId", type, "customerId", "occurredAt", properties, "payloadHash")
      SELECT 'shop', 'o' || i, 'order.completed', ${customer.id},
             ${since}::timestamptz + i * interval '1 minute',
             jsonb_build_object('cart_id', 'other_' || i), 'h' || i
      FROM generate_series(1, 1200) i`;
    const enrollment = { id: 1n, reference: "cart_9" };
    expect(await findExitEvent(t.db, cart, customer, enrollment, since)).toBeUndefined();
    await t.db.$executeRaw`
      INSERT INTO "Event" (source, "eventId", type, "customerId", "occurredAt", properties, "payloadHash")
      VALUES ('shop', 'o_mine', 'order.completed', ${customer.id}, ${new Date("2026-11-03T00:00:00Z")},
              '{"cart_id": "cart_9"}'::jsonb, 'h_mine')`;
    const exit = await findExitEvent(t.db, cart, customer, enrollment, since);
    expect(exit?.id).toBe("o_mine");
    // Before the trigger it does not count.
    expect(
      await findExitEvent(t.db, cart, customer, enrollment, new Date("2026-11-04T00:00:00Z")),
    ).toBeUndefined();
  });
});
