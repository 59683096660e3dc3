// Opting out from the outside: a signed STOP reply stops later SMS and START restores them;
// status callbacks are recorded only when Twilio's signature is right; unsubscribe links
// revoke their topic only when the token is genuine.
import twilio from "twilio";
import { describe, expect, it } from "vitest";
import { actionKey } from "../../src/engine/keys";
import { signUnsubscribeToken } from "../../src/policies/unsubscribe";
import { handleInboundMessage, handleStatusCallback } from "../../src/webhooks/twilio";
import { confirmUnsubscribe, showUnsubscribe } from "../../src/webhooks/unsubscribe";
import { SECRET, settledOutcome, twilioEnv, useHarness } from "../support/harness";
import { OFFER_TEXTS, journeysDir } from "../support/journeys";
import { useTwilioServer } from "../support/twilio";
import { eventually } from "../support/workers";

const PHONE = "+4915155555555";
const key = (ref: string) =>
  actionKey({ journeyId: "texts", stepId: "offer_sms", customerId: "c_stop", reference: ref });

describe("opting out through Twilio webhooks and unsubscribe links", () => {
  const twilioServer = useTwilioServer();
  const h = useHarness(
    journeysDir({
      "texts.yaml": OFFER_TEXTS,
    }),
    { env: () => twilioEnv(twilioServer()) },
  );

  const deps = () => ({
    db: h().schema.db,
    authToken: twilioServer().authToken,
    now: () => new Date(),
  });
  const signed = (url: string, params: Record<string, string>) => ({
    url,
    params,
    signature: twilio.getExpectedTwilioSignature(twilioServer().authToken, url, params),
  });
  const request = (ref: string, withConsent: boolean) =>
    h().deliver({
      id: `evt_stop_${ref}`,
      type: "text.requested",
      customerId: "c_stop",
      occurredAt: "2026-11-02T10:00:00Z",
      properties: { ref },
      customer: { phone: PHONE, ...(withConsent && { consents: { sms: { offers: "granted" } } }) },
    });
  const settledState = (ref: string) => settledOutcome(h(), key(ref));

  it("stops later SMS after a STOP reply, and sends again after START", async () => {
    await request("r1", true);
    expect(await settledState("r1")).toBe("sent");

    const inbound = "https://hooks.shop.example/v1/webhooks/twilio/inbound";
    const forged = await handleInboundMessage(deps(), {
      url: inbound,
      params: { From: PHONE, Body: "STOP" },
      signature: "bogus",
    });
    expect(forged.status).toBe(403);
    const stop = await handleInboundMessage(
      deps(),
      signed(inbound, { From: PHONE, Body: " stop " }),
    );
    expect(stop.status).toBe(200);

    await request("r2", false);
    expect(await settledState("r2")).toBe("skipped:no_consent");

    await handleInboundMessage(deps(), signed(inbound, { From: PHONE, Body: "START" }));
    await request("r3", false);
    expect(await settledState("r3")).toBe("sent");
    expect(
      twilioServer()
        .messages.filter((m) => m.to === PHONE)
        .map((m) => m.body),
    ).toEqual(["Offer r1", "Offer r3"]);
  });

  it("holds a STOP over a grant recorded later with an earlier date, for a topic it never saw", async () => {
    const phone = "+4915155555556";
    const keyOf = (ref: string) =>
      actionKey({ journeyId: "texts", stepId: "offer_sms", customerId: "c_stop2", reference: ref });
    const text = (ref: string, grantedAt?: string) =>
      h().deliver({
        id: `evt_stop2_${ref}`,
        type: "text.requested",
        customerId: "c_stop2",
        occurredAt: grantedAt ?? "2026-11-02T10:00:00Z",
        properties: { ref },
        customer: { phone, ...(grantedAt && { consents: { sms: { offers: "granted" } } }) },
      });
    // No topic stored yet when the customer replies STOP.
    await text("s1");
    expect(await settledOutcome(h(), keyOf("s1"))).toBe("skipped:no_consent");
    const inbound = "https://hooks.shop.example/v1/webhooks/twilio/inbound";
    await handleInboundMessage(deps(), signed(inbound, { From: phone, Body: "STOP" }));
    // An import then brings a grant dated before the STOP: the STOP stands.
    await text("s2", "2026-11-03T10:00:00Z");
    expect(await settledOutcome(h(), keyOf("s2"))).toBe("skipped:no_consent");
    // START lifts it, and what the STOP held back is granted again.
    await handleInboundMessage(deps(), signed(inbound, { From: phone, Body: "START" }));
    await text("s3");
    expect(await settledOutcome(h(), keyOf("s3"))).toBe("sent");
    expect(
      twilioServer()
        .messages.filter((m) => m.to === phone)
        .map((m) => m.body),
    ).toEqual(["Offer s3"]);
  });

  it("gives back after START only what the STOP took: a topic refused before it stays refused", async () => {
    const phone = "+4915155555557";
    const db = h().schema.db;
    const consents = (id: string, sms: Record<string, "granted" | "revoked">, at: string) =>
      h().deliver({
        id,
        type: "profile.updated",
        customerId: "c_stop3",
        occurredAt: at,
        customer: { phone, consents: { sms } },
      });
    await consents(
      "evt_stop3_a",
      { newsletter: "granted", promotions: "revoked", offers: "granted" },
      "2026-11-02T10:00:00Z",
    );
    const stored = (n: number) => async () =>
      (await db.consent.count({ where: { customerId: "c_stop3" } })) >= n ? true : undefined;
    await eventually(stored(3), 10_000);
    const inbound = "https://hooks.shop.example/v1/webhooks/twilio/inbound";
    await handleInboundMessage(deps(), signed(inbound, { From: phone, Body: "STOP" }));
    expect(await db.consent.count({ where: { customerId: "c_stop3", topic: "*" } })).toBe(1);
    // Offers was refused before the STOP, but that arrives only now.
    await consents("evt_stop3_b", { offers: "revoked" }, "2026-11-03T10:00:00Z");
    await eventually(
      async () =>
        (await db.event.count({ where: { eventId: "evt_stop3_b", processedAt: { not: null } } })) >
        0
          ? true
          : undefined,
      10_000,
    );
    await handleInboundMessage(deps(), signed(inbound, { From: phone, Body: "START" }));
    const rows = await db.consent.findMany({
      where: { customerId: "c_stop3", channel: "sms" },
      orderBy: { topic: "asc" },
    });
    expect(rows.map((r) => [r.topic, r.status])).toEqual([
      ["*", "granted"],
      ["newsletter", "granted"],
      ["offers", "revoked"],
      ["promotions", "revoked"],
    ]);
  });

  it("records a delivery status only with a valid signature", async () => {
    const url = `https://hooks.shop.example/v1/webhooks/twilio/status?key=${key("r1")}`;
    const params = { MessageSid: "SM1", MessageStatus: "delivered" };
    expect((await handleStatusCallback(deps(), { url, params, signature: undefined })).status).toBe(
      403,
    );
    const altered = signed(url, params);
    expect(
      (
        await handleStatusCallback(deps(), {
          ...altered,
          params: { ...params, MessageStatus: "failed" },
        })
      ).status,
    ).toBe(403);
    expect((await handleStatusCallback(deps(), signed(url, params))).status).toBe(204);
    const entries = await h().schema.db.auditEntry.findMany({
      where: { kind: "delivery_status", actionKey: key("r1") },
    });
    expect(entries.map((e) => e.rule)).toEqual(["delivered"]);
  });

  it("unsubscribes by a genuine link only: GET asks, POST revokes, forged and altered tokens change nothing", async () => {
    const db = h().schema.db;
    await db.customer.upsert({ where: { id: "c_mail" }, create: { id: "c_mail" }, update: {} });
    await db.consent.create({
      data: {
        customerId: "c_mail",
        channel: "email",
        topic: "news",
        status: "granted",
        occurredAt: new Date(),
        source: "test",
      },
    });
    const token = signUnsubscribeToken(SECRET, {
      customerId: "c_mail",
      channel: "email",
      topic: "news",
    });
    const unsub = { db, secret: SECRET, now: () => new Date() };
    const status = async () =>
      (
        await db.consent.findUniqueOrThrow({
          where: {
            customerId_channel_topic: { customerId: "c_mail", channel: "email", topic: "news" },
          },
        })
      ).status;

    const shown = showUnsubscribe(unsub, token);
    expect(shown.status).toBe(200);
    expect(shown.html).toContain('<form method="post">');
    expect(await status()).toBe("granted");

    const forged = signUnsubscribeToken("someone-elses-secret-0123456789abcdef", {
      customerId: "c_mail",
      channel: "email",
      topic: "news",
    });
    expect((await confirmUnsubscribe(unsub, forged)).status).toBe(400);
    const [payload, mac] = token.split(".");
    const otherTopic = Buffer.from(JSON.stringify({ c: "c_mail", ch: "email", t: "all" })).toString(
      "base64url",
    );
    expect((await confirmUnsubscribe(unsub, `${otherTopic}.${mac}`)).status).toBe(400);
    expect((await confirmUnsubscribe(unsub, `${payload}.${mac!.slice(1)}`)).status).toBe(400);
    expect(await status()).toBe("granted");

    expect((await confirmUnsubscribe(unsub, token)).status).toBe(200);
    expect(await status()).toBe("revoked");
  });
});
