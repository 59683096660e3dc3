// What each provider answer does to an action, against a real SMTP server and real worker
// processes: retry with backoff under the same key, refuse for good, stay in doubt — and a
// consent revoked between attempts wins over the retry.
import { describe, expect, it } from "vitest";
import { actionKey } from "../../src/engine/keys";
import { runCli } from "../support/cli";
import { actionState, messageId, settledAction, signup, useHarness } from "../support/harness";
import { HELLO_EMAIL, journeysDir } from "../support/journeys";
import { eventually, startWorker } from "../support/workers";

const JOURNEYS = journeysDir({
  "hello.yaml": HELLO_EMAIL,
  "series.yaml": `
id: series
name: Two emails
category: transactional
trigger: { event: series.started }
steps:
  - id: intro_email
    email: { subject: "Welcome", text: "Part one" }
  - id: next_email
    email: { subject: "And then", text: "Part two" }
`,
  "promo.yaml": `
id: promo
name: Promo
category: marketing
consent: promotions
trigger: { event: promo.requested }
entry: { once: per_reference, reference: "{{ event.properties.campaign }}" }
steps:
  - id: promo_email
    email:
      subject: "An offer for {{ customer.attributes.name | default: 'you' }}"
      html: "<p>Campaign {{ event.properties.campaign }}</p>"
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
  "refunds.yaml": `
id: refunds
name: Take back refunded points
category: transactional
trigger: { event: order.refunded }
entry: { once: per_reference, reference: "{{ event.properties.order_id }}" }
steps:
  - id: take_back
    points: { reverse: { journey: loyalty, step: award }, reason: order_refunded }
`,
  "tiers.yaml": `
id: tiers
name: Tier bonus, taken back for a lapsed tier
category: transactional
trigger: { event: tier.checked }
entry: { once: per_reference, reference: "{{ event.properties.check }}" }
steps:
  - id: gate
    branch:
      - when: "event.properties.lapsed == true"
        goto: take_back
      - otherwise: award
  - id: award
    points: { amount: 50, reason: tier_bonus }
    exit: true
  - id: take_back
    points: { reverse: { step: award }, reason: tier_lapsed }
`,
});

const key = (journeyId: string, stepId: string, customerId: string, reference = "") =>
  actionKey({ journeyId, stepId, customerId, reference });

function promo(
  customerId: string,
  consent: "granted" | "revoked",
  at: string,
  id = `evt_promo_${customerId}`,
) {
  return {
    id,
    type: "promo.requested",
    customerId,
    occurredAt: at,
    properties: { campaign: "spring" },
    customer: { email: `${customerId}@example.com`, consents: { email: { promotions: consent } } },
  };
}

describe("provider answers, with one worker", () => {
  const h = useHarness(JOURNEYS, { env: () => ({ SENDONCE_RETRY_BASE_MS: "1000" }) });

  it("retries a 4xx with backoff under the same key until it is sent, once", async () => {
    h().sink.fail({ kind: "reply", stage: "mail", code: 451 }, 2);
    await h().deliver(signup("c_retry"));
    const k = key("hello", "hello_email", "c_retry");
    const action = await settledAction(h(), k, "sent");
    expect(action.attempt).toBe(3);
    const attempts = await h().schema.db.actionAttempt.findMany({
      where: { actionKey: k },
      orderBy: { attempt: "asc" },
    });
    expect(attempts.map((a) => a.outcome)).toEqual([
      "failed_retryable",
      "failed_retryable",
      "sent",
    ]);
    // Backoff: each retry waited (at least half of 1 s, then of 2 s).
    expect(
      attempts[1]!.startedAt.getTime() - attempts[0]!.finishedAt!.getTime(),
    ).toBeGreaterThanOrEqual(450);
    expect(
      attempts[2]!.startedAt.getTime() - attempts[1]!.finishedAt!.getTime(),
    ).toBeGreaterThanOrEqual(950);
    expect(
      h()
        .sink.countByMessageId()
        .get(messageId("hello", "hello_email", "c_retry")),
    ).toBe(1);
  });

  it("ends a 5xx as failed_permanent without retrying, and the enrollment moves on", async () => {
    h().sink.fail({ kind: "reply", stage: "rcpt", code: 550 }, 1);
    await h().deliver(signup("c_refused"));
    const action = await settledAction(
      h(),
      key("hello", "hello_email", "c_refused"),
      "failed_permanent",
    );
    expect(action.reason).toBe("provider_refused");
    expect(action.lastError).toMatch(/SMTP 550/);
    expect(action.lastError).not.toContain("c_refused@example.com");
    await eventually(async () =>
      (await h().schema.db.enrollment.findFirst({ where: { customerId: "c_refused" } }))?.status ===
      "completed"
        ? true
        : undefined,
    );
    expect(action.attempt).toBe(1);
  });

  it("leaves a message whose reply never came in_doubt, and never sends it again", async () => {
    h().sink.fail({ kind: "drop_after_data" }, 1);
    await h().deliver(signup("c_dropped"));
    const action = await settledAction(h(), key("hello", "hello_email", "c_dropped"), "in_doubt");
    expect(action.reason).toBe("unknown_outcome");
    await h().deliver(signup("c_dropped"), 3);
    await new Promise((r) => setTimeout(r, 2_000));
    // The server did get it: that is exactly why it must not be resent.
    expect(
      h()
        .sink.countByMessageId()
        .get(messageId("hello", "hello_email", "c_dropped")),
    ).toBe(1);
  });

  it("skips the retry of a marketing email whose consent was revoked after the failed attempt", async () => {
    h().sink.fail({ kind: "reply", stage: "mail", code: 421 }, 1);
    await h().deliver(promo("c_revoked", "granted", "2026-11-02T09:00:00Z"));
    const k = key("promo", "promo_email", "c_revoked", "spring");
    await settledAction(h(), k, "failed_retryable");
    await h().deliver({
      id: "evt_unsubscribed",
      type: "profile.updated",
      customerId: "c_revoked",
      occurredAt: "2026-11-02T09:01:00Z",
      customer: { consents: { email: { promotions: "revoked" } } },
    });
    const action = await settledAction(h(), k, "skipped");
    expect(action.reason).toBe("no_consent");
    await new Promise((r) => setTimeout(r, 500));
    expect(h().sink.messages.filter((m) => m.to.includes("c_revoked@example.com"))).toHaveLength(0);
  });

  it("takes back exactly the points an order earned, however its refund is redelivered", async () => {
    const order = {
      type: "order.completed",
      customerId: "c_refund",
      properties: { order_id: "o_9" },
    };
    const refund = {
      type: "order.refunded",
      customerId: "c_refund",
      properties: { order_id: "o_9" },
    };
    // Order and refund race each other, and both are redelivered.
    await Promise.all([
      h().deliver({ ...order, id: "evt_o9", occurredAt: "2026-11-02T09:00:00Z" }, 5),
      h().deliver({ ...refund, id: "evt_r9", occurredAt: "2026-11-03T09:00:00Z" }, 5),
    ]);
    const db = h().schema.db;
    await settledAction(h(), key("refunds", "take_back", "c_refund", "o_9"), "sent");
    const entries = await db.pointsEntry.findMany({
      where: { customerId: "c_refund" },
      orderBy: { id: "asc" },
    });
    expect(entries.map((e) => e.amount)).toEqual([100, -100]);
    const balance = await db.pointsBalance.findUniqueOrThrow({ where: { customerId: "c_refund" } });
    expect(balance.balance).toBe(0);
  });

  it("grants nothing for an order whose refund was processed first", async () => {
    const refund = {
      id: "evt_r10",
      type: "order.refunded",
      customerId: "c_refund_first",
      occurredAt: "2026-11-03T09:00:00Z",
      properties: { order_id: "o_10" },
    };
    await h().deliver(refund);
    const taken = await settledAction(
      h(),
      key("refunds", "take_back", "c_refund_first", "o_10"),
      "skipped",
    );
    expect(taken.reason).toBe("nothing_to_reverse");
    // The order comes after its refund (a late webhook, a backfill of orders): no points.
    await h().deliver({
      id: "evt_o10",
      type: "order.completed",
      customerId: "c_refund_first",
      occurredAt: "2026-11-02T09:00:00Z",
      properties: { order_id: "o_10" },
    });
    const award = await settledAction(
      h(),
      key("loyalty", "award", "c_refund_first", "o_10"),
      "skipped",
    );
    expect(award.reason).toBe("reversed_before_grant");
    const db = h().schema.db;
    expect(await db.pointsEntry.count({ where: { customerId: "c_refund_first" } })).toBe(0);
    // Another order of the customer is granted as usual.
    await h().deliver({
      id: "evt_o11",
      type: "order.completed",
      customerId: "c_refund_first",
      occurredAt: "2026-11-04T09:00:00Z",
      properties: { order_id: "o_11" },
    });
    await settledAction(h(), key("loyalty", "award", "c_refund_first", "o_11"), "sent");
    const balance = await db.pointsBalance.findUniqueOrThrow({
      where: { customerId: "c_refund_first" },
    });
    expect(balance.balance).toBe(100);
  });

  it("reverses nothing, and ends, when its own run went past the grant", async () => {
    // The reversal is in the grant's own journey, whose enrollment is this run: it had waited
    // for itself, re-running every second for ever.
    await h().deliver({
      id: "evt_tier_1",
      type: "tier.checked",
      customerId: "c_tier",
      occurredAt: "2026-11-02T09:00:00Z",
      properties: { check: "2026-11", lapsed: true },
    });
    const taken = await settledAction(h(), key("tiers", "take_back", "c_tier", "2026-11"), [
      "skipped",
    ]);
    expect(taken.reason).toBe("nothing_to_reverse");
    const db = h().schema.db;
    await eventually(async () => {
      const e = await db.enrollment.findFirst({ where: { customerId: "c_tier" } });
      return e?.status === "completed" ? e : undefined;
    });
    expect(await db.pointsEntry.count({ where: { customerId: "c_tier" } })).toBe(0);
    expect(await actionState(h(), key("tiers", "award", "c_tier", "2026-11"))).toBeNull();
  });
});

describe("stopping and crashing workers", () => {
  const h = useHarness(JOURNEYS, { workers: 0, killWorkersAfterEach: true });

  it("finishes the send in flight on SIGTERM, records it, and exits 0", async () => {
    const worker = startWorker(h().env());
    h().workers.push(worker);
    await worker.waitFor(/worker started/);
    h().sink.fail({ kind: "slow", ms: 800 }, 1);
    await h().deliver(signup("c_sigterm"));
    const k = key("hello", "hello_email", "c_sigterm");
    await settledAction(h(), k, "calling");
    const code = await worker.kill("SIGTERM");
    expect(code).toBe(0);
    expect(worker.output()).toMatch(/worker stopped/);
    expect((await actionState(h(), k))?.state).toBe("sent");
    expect(
      h()
        .sink.countByMessageId()
        .get(messageId("hello", "hello_email", "c_sigterm")),
    ).toBe(1);
  });

  it("keeps a delivery whose intake failed, and sends it once when the failure has passed", async () => {
    const { db } = h().schema;
    // Enrolling c_refused fails inside the intake transaction, after the event went in.
    await db.$executeRawUnsafe(`
      CREATE FUNCTION refuse_enrollment() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF NEW."customerId" = 'c_refused' THEN RAISE EXCEPTION 'enrollment refused for the test'; END IF;
        RETURN NEW;
      END $$`);
    await db.$executeRawUnsafe(
      `CREATE TRIGGER refuse BEFORE INSERT ON "Enrollment" FOR EACH ROW EXECUTE FUNCTION refuse_enrollment()`,
    );
    const worker = startWorker(h().env());
    h().workers.push(worker);
    await worker.waitFor(/worker started/);
    await h().deliver(signup("c_refused"));
    await worker.waitFor(/enrollment refused for the test/);
    // The transaction rolled back, but the event was kept, unprocessed.
    const event = await eventually(() =>
      db.event.findFirst({ where: { customerId: "c_refused" } }).then((e) => e ?? undefined),
    );
    expect(event.processedAt).toBeNull();
    expect(await db.enrollment.count({ where: { customerId: "c_refused" } })).toBe(0);

    await db.$executeRawUnsafe(`DROP TRIGGER refuse ON "Enrollment"`);
    const k = key("hello", "hello_email", "c_refused");
    await eventually(async () =>
      (await actionState(h(), k))?.state === "sent" ? true : undefined,
    );
    expect(
      h()
        .sink.countByMessageId()
        .get(messageId("hello", "hello_email", "c_refused")),
    ).toBe(1);
    expect(await db.event.count({ where: { customerId: "c_refused" } })).toBe(1);
  });

  it("completes the run with its last send's outcome, so a worker dying right after leaves nothing to redo", async () => {
    const doomed = startWorker(h().env({ SENDONCE_FAILPOINT: "after_outcome" }));
    h().workers.push(doomed);
    await doomed.waitFor(/worker started/);
    await h().deliver(signup("c_outcome"));
    await doomed.waitFor(/failpoint after_outcome reached/);
    await doomed.kill("SIGKILL");
    const k = key("hello", "hello_email", "c_outcome");
    expect((await actionState(h(), k))?.state).toBe("sent");
    // The statement that recorded the send ended the enrollment.
    const enrollment = await h().schema.db.enrollment.findFirst({
      where: { customerId: "c_outcome" },
    });
    expect(enrollment?.status).toBe("completed");
    expect(enrollment?.endedReason).toBe('finished after step "hello_email"');

    h().workers.push(startWorker(h().env()));
    await h().deliver(signup("c_outcome_later"));
    await eventually(async () =>
      (await actionState(h(), key("hello", "hello_email", "c_outcome_later")))?.state === "sent"
        ? true
        : undefined,
    );
    expect(
      h()
        .sink.countByMessageId()
        .get(messageId("hello", "hello_email", "c_outcome")),
    ).toBe(1);
    const explain = runCli(["explain", "--customer", "c_outcome"], {
      DATABASE_URL: h().schema.url,
    });
    expect(explain.code).toBe(0);
    expect(explain.stdout).toMatch(/sent[^\n]*provider id \S+[\s\S]*completed/);
    expect(explain.stdout).not.toContain("duplicate suppressed");
  });

  it("suppresses the duplicate when a worker died after recording a send, before moving on", async () => {
    const doomed = startWorker(h().env({ SENDONCE_FAILPOINT: "after_outcome" }));
    h().workers.push(doomed);
    await doomed.waitFor(/worker started/);
    await h().deliver({
      id: "evt_series",
      type: "series.started",
      customerId: "c_series",
      occurredAt: "2026-11-02T09:00:00Z",
      customer: { email: "c_series@example.com" },
    });
    await doomed.waitFor(/failpoint after_outcome reached/);
    await doomed.kill("SIGKILL");
    const k = key("series", "intro_email", "c_series");
    expect((await actionState(h(), k))?.state).toBe("sent");

    h().workers.push(startWorker(h().env()));
    await eventually(async () =>
      (await h().schema.db.enrollment.findFirst({ where: { customerId: "c_series" } }))?.status ===
      "completed"
        ? true
        : undefined,
    );
    const received = h().sink.countByMessageId();
    expect(received.get(messageId("series", "intro_email", "c_series"))).toBe(1);
    expect(received.get(messageId("series", "next_email", "c_series"))).toBe(1);

    const explain = runCli(["explain", "--customer", "c_series"], {
      DATABASE_URL: h().schema.url,
    });
    expect(explain.code).toBe(0);
    const lines = explain.stdout.split("\n");
    const find = (label: string) => lines.find((l) => l.includes(label));
    expect(find("event received")).toMatch(/series\.started default\/evt_series/);
    expect(find("enrolled")).toMatch(/series enrollment \d+/);
    expect(find("step claimed")).toMatch(/series\.intro_email key [0-9a-f]{12}… attempt 1/);
    expect(find("sent")).toMatch(/provider id \S+/);
    expect(find("duplicate suppressed")).toContain(`series.intro_email key ${k} already sent`);
    expect(find("completed")).toBeDefined();
  });
});
