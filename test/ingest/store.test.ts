// Profile traits carried by events: stored with the event in one statement, applied only by an
// event that is new and not older than the profile, whatever order the deliveries arrive in.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { poolOf } from "../../src/db/sql";
import { parseEvent } from "../../src/ingest/event";
import { storeEvent } from "../../src/ingest/store";
import type { TestSchema } from "../support/db";
import { createTestSchema } from "../support/db";

let schema: TestSchema;
beforeAll(async () => {
  schema = await createTestSchema("store");
});
afterAll(() => schema.drop());

const NOW = new Date("2026-12-01T12:00:00Z");

function deliver(id: string, occurredAt: string, customer: Record<string, unknown>) {
  const event = parseEvent({
    id,
    type: "profile.updated",
    customerId: "c_traits",
    occurredAt,
    customer,
  });
  return storeEvent(schema.db, event, "test", NOW);
}

async function profile() {
  const [row] = await poolOf(schema.db).sql<{
    email: string | null;
    phone: string | null;
    attributes: Record<string, unknown>;
    profileOccurredAt: Date | null;
  }>`SELECT email, phone, attributes, "profileOccurredAt" FROM "Customer" WHERE id = 'c_traits'`;
  return row;
}

describe("event-borne profile traits", () => {
  it("create the customer with them, merge newer ones, and ignore older, duplicate or conflicting deliveries", async () => {
    expect(
      await deliver("e1", "2026-12-01T10:00:00Z", {
        email: "first@example.com",
        attributes: { tier: "gold" },
      }),
    ).toMatchObject({ status: "new" });
    expect(await profile()).toMatchObject({
      email: "first@example.com",
      phone: null,
      attributes: { tier: "gold" },
    });

    // Newer: the email changes, the phone is added, attributes merge.
    await deliver("e2", "2026-12-01T11:00:00Z", {
      email: "second@example.com",
      phone: "+15550100",
      attributes: { city: "Lyon" },
    });
    expect(await profile()).toMatchObject({
      email: "second@example.com",
      phone: "+15550100",
      attributes: { tier: "gold", city: "Lyon" },
      profileOccurredAt: new Date("2026-12-01T11:00:00Z"),
    });

    // Older, arriving later: stored as an event, changes no profile field.
    expect(
      await deliver("e0", "2026-12-01T09:00:00Z", {
        email: "stale@example.com",
        attributes: { tier: "bronze" },
      }),
    ).toMatchObject({ status: "new" });
    // A redelivery of e2 and a conflicting delivery under e2's id: neither applies again.
    expect(
      await deliver("e2", "2026-12-01T11:00:00Z", {
        email: "second@example.com",
        phone: "+15550100",
        attributes: { city: "Lyon" },
      }),
    ).toMatchObject({ status: "duplicate" });
    expect(
      await deliver("e2", "2026-12-01T11:30:00Z", { email: "conflict@example.com" }),
    ).toMatchObject({ status: "conflict" });
    expect(await profile()).toMatchObject({
      email: "second@example.com",
      attributes: { tier: "gold", city: "Lyon" },
      profileOccurredAt: new Date("2026-12-01T11:00:00Z"),
    });
  });

  it("carrying consents: the profile and the consent go in together", async () => {
    await deliver("e3", "2026-12-01T12:00:00Z", {
      email: "third@example.com",
      consents: { email: { promotions: "granted" } },
    });
    expect(await profile()).toMatchObject({ email: "third@example.com" });
    const consents = await poolOf(schema.db).sql`
      SELECT channel::text, topic, status::text FROM "Consent" WHERE "customerId" = 'c_traits'`;
    expect(consents).toEqual([{ channel: "email", topic: "promotions", status: "granted" }]);
  });
});
