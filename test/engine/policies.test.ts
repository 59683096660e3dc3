// Send policies enforced by real workers: a frequency cap that two journeys and four workers
// race for, and resend policies across several enrollments of one customer.
import { describe, expect, it } from "vitest";
import { actionKey } from "../../src/engine/keys";
import { verifyUnsubscribeToken } from "../../src/policies/unsubscribe";
import { SECRET, settledOutcome, useHarness } from "../support/harness";
import { journeysDir } from "../support/journeys";
import { eventually } from "../support/workers";

const marketingEmail = (id: string, trigger: string, extra = "") => `
id: ${id}
name: ${id}
category: marketing
consent: promotions
trigger: { event: ${trigger} }
entry: { once: per_reference, reference: "{{ event.properties.ref }}" }
steps:
  - id: mail
    email:
      subject: "${id} {{ event.properties.ref }}"
      html: '<p>Hello</p><a href="{{ unsubscribe_url }}">Unsubscribe</a>'
${extra}`;

function event(type: string, customerId: string, ref: string, at = "2026-11-02T10:00:00Z") {
  return {
    id: `evt_${type}_${customerId}_${ref}`,
    type,
    customerId,
    occurredAt: at,
    properties: { ref },
    customer: {
      email: `${customerId}@example.com`,
      consents: { email: { promotions: "granted" } },
    },
  };
}

describe("a frequency cap raced by two journeys and four workers", () => {
  const h = useHarness(
    journeysDir({
      "policies.yaml": "caps:\n  - id: one-a-day\n    channel: any\n    max: 1\n    per: 1d\n",
      "flash.yaml": marketingEmail("flash", "deal.published"),
      "digest.yaml": marketingEmail("digest", "deal.published"),
    }),
    { workers: 4 },
  );

  it("sends exactly one message per customer for the last slot, and skips the other with its reason", async () => {
    const customers = Array.from({ length: 20 }, (_, i) => `c_cap_${i}`);
    await Promise.all(customers.map((c) => h().deliver(event("deal.published", c, "d1"), 3)));
    const db = h().schema.db;
    await eventually(
      async () =>
        (await db.action.count({ where: { state: { in: ["sent", "skipped"] } } })) ===
        customers.length * 2
          ? true
          : undefined,
      30_000,
      "every action settled",
    );
    for (const c of customers) {
      expect(h().sink.messages.filter((m) => m.to.includes(`${c}@example.com`))).toHaveLength(1);
    }
    const skipped = await db.action.findMany({ where: { state: "skipped" } });
    expect(skipped).toHaveLength(customers.length);
    expect(new Set(skipped.map((a) => a.reason))).toEqual(new Set(["frequency_cap"]));
    const audit = await db.auditEntry.findFirstOrThrow({
      where: { kind: "skipped", rule: "frequency_cap" },
    });
    expect((audit.detail as { why: string }).why).toMatch(
      /cap "one-a-day": at most 1 messages per 1d/,
    );
  });
});

describe("resend policies across enrollments of one customer", () => {
  const yaml = (id: string, resend: string) =>
    marketingEmail(id, `${id}.requested`, `    resend: ${resend}\n`);
  const h = useHarness(
    journeysDir({
      "once.yaml": yaml("once", "never"),
      "cooling.yaml": yaml("cooling", "{ after: 3s }"),
      "reopt.yaml": yaml("reopt", "on_reopt_in"),
    }),
  );

  const state = (journeyId: string, ref: string) =>
    settledOutcome(
      h(),
      actionKey({ journeyId, stepId: "mail", customerId: "c_r", reference: ref }),
    );

  it("never: the second reference is skipped", async () => {
    await h().deliver(event("once.requested", "c_r", "a"));
    expect(await state("once", "a")).toBe("sent");
    await h().deliver(event("once.requested", "c_r", "b"));
    expect(await state("once", "b")).toBe("skipped:resend_policy");
  });

  it("after: skipped inside the cooldown, sent after it", async () => {
    await h().deliver(event("cooling.requested", "c_r", "a"));
    expect(await state("cooling", "a")).toBe("sent");
    await h().deliver(event("cooling.requested", "c_r", "b"));
    expect(await state("cooling", "b")).toBe("skipped:resend_policy");
    await new Promise((r) => setTimeout(r, 3_200));
    await h().deliver(event("cooling.requested", "c_r", "c"));
    expect(await state("cooling", "c")).toBe("sent");
  });

  it("on_reopt_in: skipped until the customer grants consent anew", async () => {
    await h().deliver(event("reopt.requested", "c_r", "a"));
    expect(await state("reopt", "a")).toBe("sent");
    await h().deliver(event("reopt.requested", "c_r", "b"));
    expect(await state("reopt", "b")).toBe("skipped:resend_policy");
    const consent = (type: string, at: string) => ({
      id: `evt_${type}_${at}`,
      type,
      customerId: "c_r",
      occurredAt: at,
      properties: { channel: "email", topic: "promotions" },
    });
    // A fresh opt-in after the last send, in real time; the two may arrive in either order.
    const now = Date.now();
    await h().deliver(consent("consent.revoked", new Date(now).toISOString()));
    await h().deliver(consent("consent.granted", new Date(now + 1_000).toISOString()));
    await eventually(async () =>
      (await h().schema.db.event.count({
        where: { customerId: "c_r", type: { startsWith: "consent." }, processedAt: { not: null } },
      })) === 2
        ? true
        : undefined,
    );
    await h().deliver(event("reopt.requested", "c_r", "c", new Date(now + 2_000).toISOString()));
    expect(await state("reopt", "c")).toBe("sent");
  });

  it("marketing emails carry one-click unsubscribe headers with a token for this customer and topic", () => {
    const mail = h().sink.messages.find((m) => m.subject === "once a")!;
    expect(mail.headers.get("list-unsubscribe-post")).toBe("List-Unsubscribe=One-Click");
    const token = /\/v1\/unsubscribe\/([\w.-]+)>/.exec(mail.headers.get("list-unsubscribe")!)![1]!;
    expect(verifyUnsubscribeToken(SECRET, token)).toEqual({
      customerId: "c_r",
      channel: "email",
      topic: "promotions",
    });
    expect(mail.raw).toContain(`/v1/unsubscribe/${token}`);
  });
});
