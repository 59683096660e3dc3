// The send-once guarantee against real processes: `sendonce worker` children sharing one
// Postgres schema and one Redis prefix, sending through a real SMTP server. Workers are
// SIGKILLed at the protocol's two dangerous points, and Redis loses its jobs mid-journey.
import { describe, expect, it } from "vitest";
import { actionKey } from "../../src/engine/keys";
import { actionState, messageId, signup, useHarness } from "../support/harness";
import { HELLO_EMAIL, journeysDir } from "../support/journeys";
import { flushPrefix } from "../support/redis";
import { eventually, startWorker } from "../support/workers";

const JOURNEYS = journeysDir({
  "hello.yaml": HELLO_EMAIL,
  "series.yaml": `
id: series
name: Two emails with a wait between
category: transactional
trigger: { event: series.started }
entry: { once: per_reference, reference: "{{ event.properties.ref }}" }
steps:
  - id: first
    email: { subject: "First", text: "one" }
  - id: pause
    wait: 3s
  - id: second
    email: { subject: "Second", text: "two" }
`,
  "loyalty.yaml": `
id: loyalty
name: Points per order
category: transactional
trigger: { event: order.completed }
entry: { once: per_reference, reference: "{{ event.properties.order_id }}" }
steps:
  - id: award
    points: { amount: 100, reason: order_reward }
`,
});

describe("four workers on one database and one Redis", () => {
  const h = useHarness(JOURNEYS, { workers: 4, args: ["--concurrency", "10"] });

  it("send one email for an event delivered 50 times at once", async () => {
    await h().deliver(signup("c_storm"), 50);
    const key = actionKey({
      journeyId: "hello",
      stepId: "hello_email",
      customerId: "c_storm",
      reference: "",
    });
    await eventually(
      async () => ((await actionState(h(), key))?.state === "sent" ? true : undefined),
      20_000,
      "sent",
    );
    // Let every redelivery finish before counting: one whose intake lost a race and is retried
    // waits as a delayed job, not a waiting one.
    await eventually(async () => {
      const counts = await h().queue.getJobCounts("waiting", "active", "delayed", "prioritized");
      return Object.values(counts).every((n) => n === 0) ? true : undefined;
    });

    expect(
      h()
        .sink.countByMessageId()
        .get(messageId("hello", "hello_email", "c_storm")),
    ).toBe(1);
    expect(h().sink.messages.filter((m) => m.to.includes("c_storm@example.com"))).toHaveLength(1);
    const db = h().schema.db;
    expect(await db.event.count({ where: { customerId: "c_storm" } })).toBe(1);
    expect(
      await db.eventDuplicate.count({ where: { eventId: "evt_c_storm", kind: "duplicate" } }),
    ).toBe(49);
    expect(await db.enrollment.count({ where: { customerId: "c_storm" } })).toBe(1);
    // One call that can have reached the server. On a loaded machine an SMTP greeting may time
    // out first (1.5 s here): that attempt failed before sending anything and was retried.
    const attempts = await db.actionAttempt.findMany({
      where: { actionKey: key },
      orderBy: { attempt: "asc" },
    });
    expect(attempts.filter((a) => a.outcome !== "failed_retryable").map((a) => a.outcome)).toEqual([
      "sent",
    ]);
  });

  it("grant points once for 100 concurrent triggers, and keep the balance equal to the ledger", async () => {
    const order = (id: string) => ({
      id,
      type: "order.completed",
      customerId: "c_points",
      occurredAt: "2026-11-02T10:00:00Z",
      properties: { order_id: "o_1" },
    });
    // The same event redelivered 100 times, and 100 distinct events naming the same order.
    await Promise.all([
      h().deliver(order("evt_order_1"), 100),
      ...Array.from({ length: 100 }, (_, i) => h().deliver(order(`evt_order_1_copy_${i}`))),
    ]);
    const db = h().schema.db;
    await eventually(async () =>
      (await db.event.count({ where: { customerId: "c_points", processedAt: { not: null } } })) ===
      101
        ? true
        : undefined,
    );
    await eventually(async () =>
      (await db.pointsEntry.count({ where: { customerId: "c_points" } })) > 0 ? true : undefined,
    );
    await new Promise((r) => setTimeout(r, 1_000));

    const entries = await db.pointsEntry.findMany({ where: { customerId: "c_points" } });
    expect(entries.map((e) => e.amount)).toEqual([100]);
    const balance = await db.pointsBalance.findUnique({ where: { customerId: "c_points" } });
    expect(balance?.balance).toBe(entries.reduce((sum, e) => sum + e.amount, 0));
    expect(await db.enrollment.count({ where: { customerId: "c_points" } })).toBe(1);
  });

  it("finish a journey whose wait was lost when Redis was flushed, sending nothing twice", async () => {
    const event = {
      id: "evt_series_1",
      type: "series.started",
      customerId: "c_flush",
      occurredAt: "2026-11-02T11:00:00Z",
      properties: { ref: "r1" },
      customer: { email: "c_flush@example.com" },
    };
    await h().deliver(event, 3);
    const first = messageId("series", "first", "c_flush", "r1");
    const second = messageId("series", "second", "c_flush", "r1");
    await eventually(
      () => (h().sink.countByMessageId().get(first) ? true : undefined),
      20_000,
      "first email",
    );
    const db = h().schema.db;
    // The sink sees the email before the worker records it and moves on: wait for the move.
    const waiting = await eventually(async () => {
      const e = await db.enrollment.findFirstOrThrow({ where: { customerId: "c_flush" } });
      return e.currentStepId === "second" ? e : undefined;
    });
    expect(waiting.nextRunAt!.getTime()).toBeGreaterThan(Date.now());

    // Every job of this deployment, the delayed wait included, is gone.
    expect(await flushPrefix(h().prefix)).toBeGreaterThan(0);

    await eventually(
      () => (h().sink.countByMessageId().get(second) ? true : undefined),
      20_000,
      "second email",
    );
    await eventually(async () =>
      (await db.enrollment.findFirstOrThrow({ where: { customerId: "c_flush" } })).status ===
      "completed"
        ? true
        : undefined,
    );
    await new Promise((r) => setTimeout(r, 1_500));
    const counts = h().sink.countByMessageId();
    expect([counts.get(first), counts.get(second)]).toEqual([1, 1]);
  });
});

describe("a worker killed in the middle of a send", () => {
  const h = useHarness(JOURNEYS, { workers: 0, killWorkersAfterEach: true });

  it("is retried by another worker when it died after claiming, before calling SMTP: one email", async () => {
    const doomed = startWorker(h().env({ SENDONCE_FAILPOINT: "after_claim" }));
    h().workers.push(doomed);
    await doomed.waitFor(/worker started/);
    await h().deliver(signup("c_claimed"));
    await doomed.waitFor(/failpoint after_claim reached/);
    const key = actionKey({
      journeyId: "hello",
      stepId: "hello_email",
      customerId: "c_claimed",
      reference: "",
    });
    expect((await actionState(h(), key))?.state).toBe("claimed");
    await doomed.kill("SIGKILL");
    expect(h().sink.messages).toHaveLength(0);

    const survivor = startWorker(h().env());
    h().workers.push(survivor);
    await eventually(
      async () => ((await actionState(h(), key))?.state === "sent" ? true : undefined),
      30_000,
      "sent",
    );
    await new Promise((r) => setTimeout(r, 1_000));
    expect(
      h()
        .sink.countByMessageId()
        .get(messageId("hello", "hello_email", "c_claimed")),
    ).toBe(1);
    const action = await actionState(h(), key);
    expect(action?.attempt).toBe(2);
  });

  it("is left in_doubt, never resent, when it died after SMTP took the message", async () => {
    const doomed = startWorker(h().env({ SENDONCE_FAILPOINT: "after_call" }));
    h().workers.push(doomed);
    await doomed.waitFor(/worker started/);
    await h().deliver(signup("c_calling"));
    await doomed.waitFor(/failpoint after_call reached/);
    const id = messageId("hello", "hello_email", "c_calling");
    expect(h().sink.countByMessageId().get(id)).toBe(1);
    const key = actionKey({
      journeyId: "hello",
      stepId: "hello_email",
      customerId: "c_calling",
      reference: "",
    });
    expect((await actionState(h(), key))?.state).toBe("calling");
    await doomed.kill("SIGKILL");

    const survivor = startWorker(h().env());
    h().workers.push(survivor);
    await eventually(
      async () => ((await actionState(h(), key))?.state === "in_doubt" ? true : undefined),
      30_000,
      "in_doubt",
    );
    const db = h().schema.db;
    await eventually(async () =>
      (await db.enrollment.findFirstOrThrow({ where: { customerId: "c_calling" } })).status ===
      "completed"
        ? true
        : undefined,
    );
    // Redeliver the event too: still nothing new.
    await h().deliver(signup("c_calling"), 5);
    await new Promise((r) => setTimeout(r, 3_000));
    expect(h().sink.countByMessageId().get(id)).toBe(1);
    expect((await actionState(h(), key))?.reason).toBe("call_interrupted");
  });
});
