// Points against the ledger alone: a refund processed before its order leaves its mark in the
// audit trail, and the order's grant that comes later finds it there, with no journey
// catalog involved (the refund journey need not be deployed where the order is granted).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { actionKey } from "../../src/engine/keys";
import type { ActionIntent } from "../../src/ledger/actions";
import { grantPoints } from "../../src/ledger/points";
import { createTestSchema } from "../support/db";
import type { TestSchema } from "../support/db";

let t: TestSchema;
beforeAll(async () => {
  t = await createTestSchema("points");
  await t.db.$executeRaw`INSERT INTO "Customer" (id, "updatedAt") VALUES ('c_p', now())`;
});
afterAll(() => t?.drop());

/** An enrollment of customer c_p in `journeyId` for `reference`, and the intent of its step. */
async function intentOf(
  journeyId: string,
  stepId: string,
  reference: string,
): Promise<ActionIntent> {
  const [row] = await t.db.$queryRaw<{ id: bigint }[]>`
    WITH e AS (
      INSERT INTO "Event" ("eventId", type, "customerId", "occurredAt", "payloadHash")
      VALUES (${`${journeyId}_${reference}`}, ${journeyId}, 'c_p', now(), 'h') RETURNING id)
    INSERT INTO "Enrollment" ("journeyId", "journeyVersion", "customerId", reference, "triggerEventId",
                              "currentStepId", "updatedAt")
    SELECT ${journeyId}, 'v1', 'c_p', ${reference}, id, ${stepId}, now() FROM e
    RETURNING id`;
  return {
    key: actionKey({ journeyId, stepId, customerId: "c_p", reference }),
    journeyId,
    stepId,
    customerId: "c_p",
    reference,
    enrollmentId: row!.id,
    stepSeq: 0,
    channel: "points",
    eventOccurredAt: new Date(),
  };
}

const opts = () => ({ now: new Date(), workerId: "w" });
const go = () => Promise.resolve({ go: true as const });

describe("a refund before its order", () => {
  it("settles the reversal with nothing to take back, and the order's grant is not made", async () => {
    const refund = await intentOf("refunds", "take_back", "o_1");
    const grantKey = actionKey({
      journeyId: "loyalty",
      stepId: "award",
      customerId: "c_p",
      reference: "o_1",
    });
    const reversed = await grantPoints(
      t.db,
      refund,
      {
        kind: "reverse",
        reverses: grantKey,
        reason: "refund",
        target: { journeyId: "loyalty", stepId: "award" },
      },
      opts(),
      go,
    );
    expect(reversed).toMatchObject({
      kind: "settled",
      state: "skipped",
      reason: "nothing_to_reverse",
    });
    const order = await intentOf("loyalty", "award", "o_1");
    const granted = await grantPoints(
      t.db,
      order,
      { kind: "grant", amount: 100, reason: "order" },
      opts(),
      go,
    );
    expect(granted).toMatchObject({
      kind: "settled",
      state: "skipped",
      reason: "reversed_before_grant",
    });
    // Another order is granted as usual.
    const other = await intentOf("loyalty", "award", "o_2");
    expect(
      await grantPoints(t.db, other, { kind: "grant", amount: 100, reason: "order" }, opts(), go),
    ).toMatchObject({ kind: "settled", state: "sent" });
    const [balance] = await t.db.$queryRaw<{ balance: number }[]>`
      SELECT balance FROM "PointsBalance" WHERE "customerId" = 'c_p'`;
    expect(balance!.balance).toBe(100);
  });
});
