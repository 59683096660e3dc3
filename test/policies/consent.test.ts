// A channel-wide opt-out (a STOP reply, a provider's 21610) and a consent grant at the same
// moment, with the interleaving forced on the database: whichever of the two commits first, a
// grant dated before the opt-out ends revoked by it.
import twilio from "twilio";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { poolOf } from "../../src/db/sql";
import { parseEvent } from "../../src/ingest/event";
import { storeEvent } from "../../src/ingest/store";
import { PROVIDER_OPT_OUT, STOP_OPT_OUT, revokeChannel } from "../../src/policies/consent";
import { handleInboundMessage } from "../../src/webhooks/twilio";
import type { Journey, Policies } from "../../src/journeys/types";
import { loadSendFacts, sendFactsQuery } from "../../src/ledger/facts";
import { evaluateSend } from "../../src/policies/evaluate";
import { createTestSchema, holdRows } from "../support/db";
import type { TestSchema } from "../support/db";
import { eventually } from "../support/workers";

let t: TestSchema;
beforeAll(async () => {
  t = await createTestSchema("consent");
});
afterAll(async () => {
  await t?.drop();
});

const AUTH_TOKEN = "consent-race-auth-token";
const INBOUND = "https://hooks.shop.example/v1/webhooks/twilio/inbound";
const GRANTED_AT = "2026-11-01T10:00:00Z";
const OPTED_OUT_AT = new Date("2026-11-02T10:00:00Z");

/** A text from `phone`, signed as Twilio signs it, received at `now`. */
async function inbound(phone: string, body: "STOP" | "START", now: Date): Promise<void> {
  const params = { From: phone, Body: body };
  const signature = twilio.getExpectedTwilioSignature(AUTH_TOKEN, INBOUND, params);
  const answer = await handleInboundMessage(
    { db: t.db, authToken: AUTH_TOKEN, now: () => now },
    { url: INBOUND, params, signature },
  );
  expect(answer.status).toBe(200);
}

/** An event, stored as the API or an import stores it. */
const deliver = (raw: Record<string, unknown>) =>
  storeEvent(t.db, parseEvent(raw), "test", new Date());

async function smsConsents(customerId: string): Promise<string[][]> {
  const rows = await poolOf(t.db).sql<{ topic: string; status: string; source: string }>`
    SELECT topic, status::text, source FROM "Consent"
    WHERE "customerId" = ${customerId} AND channel = 'sms' ORDER BY topic`;
  return rows.map((r) => [r.topic, r.status, r.source]);
}

interface Customer {
  id: string;
  phone: string;
}

const OPT_OUTS = [
  {
    name: "a STOP reply",
    source: STOP_OPT_OUT,
    run: (c: Customer) => inbound(c.phone, "STOP", OPTED_OUT_AT),
  },
  {
    name: "a provider's 21610",
    source: PROVIDER_OPT_OUT,
    run: (c: Customer) => revokeChannel(t.db, c.id, "sms", PROVIDER_OPT_OUT, OPTED_OUT_AT),
  },
];

for (const [i, { name, source, run }] of OPT_OUTS.entries()) {
  describe(name, () => {
    const customer = (n: number): Customer => ({
      id: `c_race_${i}_${n}`,
      phone: `+4915166600${i}${n}`,
    });

    it("revokes a grant dated before it that comes in while it is being written", async () => {
      const c = customer(1);
      await deliver({
        id: `evt_${c.id}_profile`,
        type: "profile.updated",
        customerId: c.id,
        occurredAt: "2026-10-01T00:00:00Z",
        customer: { phone: c.phone },
      });
      // An earlier STOP and START leave the opt-out's row, granted, for the holder to lock.
      await inbound(c.phone, "STOP", new Date("2026-10-01T10:00:00Z"));
      await inbound(c.phone, "START", new Date("2026-10-02T10:00:00Z"));
      const held = await holdRows(
        t.url,
        `SELECT 1 FROM "Consent" WHERE "customerId" = $1 AND topic = '*' FOR UPDATE`,
        [c.id],
      );
      // The opt-out locks the customer, then waits to write its row. The grant comes in then:
      // a consent event, with no profile to upsert, so the first thing it waits on is the
      // customer lock applyConsent takes.
      const optOut = run(c);
      let grant: Promise<unknown> = Promise.resolve();
      try {
        await held.waiting(1, "the opt-out waiting, with the customer locked");
        grant = deliver({
          id: `evt_${c.id}_grant`,
          type: "consent.granted",
          customerId: c.id,
          occurredAt: GRANTED_AT,
          properties: { channel: "sms", topic: "offers" },
        });
        await held.waiting(2, "the grant waiting behind the opt-out");
      } finally {
        await held.release();
      }
      await Promise.all([optOut, grant]);
      expect(await smsConsents(c.id)).toEqual([
        ["*", "revoked", source],
        ["offers", "revoked", source],
      ]);
    });

    it("revokes a grant dated before it that commits while it waits for the customer", async () => {
      const c = customer(2);
      // A topic refused earlier, whose row the holder locks.
      await deliver({
        id: `evt_${c.id}_profile`,
        type: "profile.updated",
        customerId: c.id,
        occurredAt: "2026-10-01T00:00:00Z",
        customer: { phone: c.phone, consents: { sms: { news: "revoked" } } },
      });
      const held = await holdRows(
        t.url,
        `SELECT 1 FROM "Consent" WHERE "customerId" = $1 AND topic = 'news' FOR UPDATE`,
        [c.id],
      );
      // The grant locks the customer, writes offers, and waits to write news; the opt-out must
      // wait for it, not read the topics it has not committed yet.
      const grant = deliver({
        id: `evt_${c.id}_grant`,
        type: "profile.updated",
        customerId: c.id,
        occurredAt: GRANTED_AT,
        customer: { consents: { sms: { offers: "granted", news: "granted" } } },
      });
      // An opt-out that does not wait finishes instead; the consents then show what it missed.
      let done = false;
      const optOut = (async () => {
        await held.waiting(1, "the grant waiting, with the customer locked");
        await run(c);
      })().finally(() => {
        done = true;
      });
      try {
        await eventually(
          async () => (done || (await held.queued()) >= 2 ? true : undefined),
          10_000,
          "the opt-out waiting behind the grant",
        );
      } finally {
        await held.release();
      }
      await Promise.all([optOut, grant]);
      expect(await smsConsents(c.id)).toEqual([
        ["*", "revoked", source],
        ["news", "revoked", source],
        ["offers", "revoked", source],
      ]);
    });
  });
}

describe("a marketing journey version without a consent topic", () => {
  // Deployed before validate refused one; enrollments keep the version they started on.
  it("still stops at a STOP: the channel-wide opt-out refuses its sends", async () => {
    const phone = "+4915100000777";
    await deliver({
      id: "evt_topicless",
      type: "x",
      customerId: "c_topicless",
      occurredAt: GRANTED_AT,
      customer: { phone },
    });
    const journey = {
      id: "old_promo",
      name: "Old promo",
      category: "marketing",
      trigger: { event: "x" },
      entry: { once: "per_customer" },
      exit: [],
      steps: [
        { id: "blast", kind: "sms", body: { source: "Sale!" }, resend: { kind: "per_reference" } },
      ],
      caps: [],
      version: "v0",
      file: "old_promo.yaml",
    } as unknown as Journey;
    const policies = { caps: [], quietHours: {}, defaultTimezone: "UTC" } as unknown as Policies;
    const verdict = async () =>
      evaluateSend(
        await loadSendFacts(
          poolOf(t.db).sql,
          sendFactsQuery(
            { key: "k_topicless", customerId: "c_topicless", stepId: "blast" },
            journey,
            policies,
            "sms",
            new Date(),
          ),
        ),
      );
    expect(await verdict()).toEqual({ allow: true });
    await inbound(phone, "STOP", OPTED_OUT_AT);
    expect(await verdict()).toMatchObject({ allow: false, reason: "no_consent" });
    await inbound(phone, "START", new Date(OPTED_OUT_AT.getTime() + 60_000));
    expect(await verdict()).toEqual({ allow: true });
  });
});
