// SMS through the twilio library against a real HTTP server that speaks Twilio's Messages
// API: each answer Twilio can give, and in-doubt sends resolved from the provider's list.
import { describe, expect, it } from "vitest";
import { actionKey } from "../../src/engine/keys";
import { UNMATCHED } from "../../src/ledger/provider-match";
import { handleInboundMessage, handleStatusCallback } from "../../src/webhooks/twilio";
import { actionState, settledAction, twilioEnv, useHarness } from "../support/harness";
import { OFFER_TEXTS, journeysDir, textRequest } from "../support/journeys";
import { signedRequest, smartEncode, useTwilioServer } from "../support/twilio";
import { eventually, startWorker } from "../support/workers";

const JOURNEYS = journeysDir({
  "texts.yaml": OFFER_TEXTS,
  "reminders.yaml": `
id: reminders
name: The same text for every reminder
category: transactional
trigger: { event: reminder.requested }
entry: { once: per_reference, reference: "{{ event.properties.ref }}" }
steps:
  - id: reminder_sms
    sms: { body: "Your order is ready for pickup" }
`,
});

/** An inbound message as Twilio posts it, signed with the account's auth token. */
const signedInbound = (authToken: string, params: Record<string, string>) =>
  signedRequest(authToken, "https://hooks.shop.example/v1/webhooks/twilio/inbound", params);

const key = (customerId: string, ref: string) =>
  actionKey({ journeyId: "texts", stepId: "offer_sms", customerId, reference: ref });

describe("SMS through a Twilio-compatible API", () => {
  const twilio = useTwilioServer();
  const h = useHarness(JOURNEYS, {
    env: () => ({ ...twilioEnv(twilio()), SENDONCE_RETRY_BASE_MS: "300" }),
  });

  let n = 0;
  async function text(
    customerId: string,
    ref: string,
    phone = `+49151000${String(++n).padStart(5, "0")}`,
  ) {
    await h().deliver(textRequest(customerId, ref, phone));
  }
  const settled = (k: string, state: string) => settledAction(h(), k, state);

  it("sends once, with the action key in the status callback", async () => {
    await text("c_ok", "r1");
    const action = await settled(key("c_ok", "r1"), "sent");
    const sent = twilio().messages.find((m) => m.actionKey === key("c_ok", "r1"))!;
    expect(action.providerId).toBe(sent.sid);
    expect(sent.statusCallback).toBe(
      `https://hooks.shop.example/v1/webhooks/twilio/status?key=${key("c_ok", "r1")}&attempt=1`,
    );
    expect(sent.body).toBe("Offer r1");
  });

  it("retries 429 and 503 with backoff, then sends once", async () => {
    twilio().fail({ kind: "error", status: 429, code: 20429 }, 1);
    await text("c_busy", "r1");
    await settled(key("c_busy", "r1"), "sent");
    twilio().fail({ kind: "error", status: 503, code: 20503 }, 1);
    await text("c_busy", "r2");
    const action = await settled(key("c_busy", "r2"), "sent");
    expect(action.attempt).toBe(2);
    expect(twilio().countByKey().get(key("c_busy", "r2"))).toBe(1);
  });

  it("gives up on an invalid number (21211)", async () => {
    twilio().fail({ kind: "error", status: 400, code: 21211 }, 1);
    await text("c_invalid", "r1");
    const action = await settled(key("c_invalid", "r1"), "failed_permanent");
    expect(action.lastError).toMatch(/21211/);
    expect(twilio().countByKey().get(key("c_invalid", "r1"))).toBeUndefined();
  });

  it("revokes SMS consent on 21610 (the recipient replied STOP), so later texts are skipped", async () => {
    twilio().fail({ kind: "error", status: 400, code: 21610 }, 1);
    await text("c_stopped", "r1", "+4915199999999");
    const action = await settled(key("c_stopped", "r1"), "failed_permanent");
    expect(action.reason).toBe("recipient_opted_out");
    const consent = await h().schema.db.consent.findUniqueOrThrow({
      where: {
        customerId_channel_topic: { customerId: "c_stopped", channel: "sms", topic: "offers" },
      },
    });
    expect([consent.status, consent.source]).toEqual(["revoked", "provider_21610"]);
    // A later text: its event carries no consent, so the revocation stands.
    await h().deliver({
      id: "evt_c_stopped_r2",
      type: "text.requested",
      customerId: "c_stopped",
      occurredAt: "2026-11-02T09:00:00Z",
      properties: { ref: "r2" },
    });
    expect((await settled(key("c_stopped", "r2"), "skipped")).reason).toBe("no_consent");
    // A text dated before the opt-out that grants consent again does not undo it.
    await text("c_stopped", "r3", "+4915199999999");
    expect((await settled(key("c_stopped", "r3"), "skipped")).reason).toBe("no_consent");
    // The person replies START: Twilio lifts its block, and so does sendonce.
    const started = await handleInboundMessage(
      { db: h().schema.db, authToken: twilio().authToken, now: () => new Date() },
      signedInbound(twilio().authToken, { From: "+4915199999999", Body: "START" }),
    );
    expect(started.status).toBe(200);
    await h().deliver({
      id: "evt_c_stopped_r4",
      type: "text.requested",
      customerId: "c_stopped",
      occurredAt: "2026-11-02T09:00:00Z",
      properties: { ref: "r4" },
    });
    await settled(key("c_stopped", "r4"), "sent");
  });

  it("resolves an in-doubt send from the provider's list: the message was created → sent, not resent", async () => {
    twilio().fail({ kind: "drop_after_create" }, 1);
    await text("c_lost_answer", "r1");
    await settled(key("c_lost_answer", "r1"), "in_doubt");
    const action = await settled(key("c_lost_answer", "r1"), "sent");
    expect(action.reason).toBe("found_at_provider");
    const created = twilio().messages.filter((m) => m.actionKey === key("c_lost_answer", "r1"));
    expect(created).toHaveLength(1);
    expect(action.providerId).toBe(created[0]!.sid);
  });

  it("releases an in-doubt send the provider never created for one retry: sent once", async () => {
    twilio().fail({ kind: "drop" }, 1);
    await text("c_never_made", "r1");
    await settled(key("c_never_made", "r1"), "in_doubt");
    const action = await settled(key("c_never_made", "r1"), "sent");
    expect(action.attempt).toBe(2);
    expect(twilio().countByKey().get(key("c_never_made", "r1"))).toBe(1);
    const attempts = await h().schema.db.actionAttempt.findMany({
      where: { actionKey: key("c_never_made", "r1") },
      orderBy: { attempt: "asc" },
    });
    expect(attempts.map((a) => a.outcome)).toEqual(["released", "sent"]);
  });

  it("treats an answer slower than the timeout as in doubt, then finds the message", async () => {
    twilio().fail({ kind: "slow", ms: 2_500 }, 1);
    await text("c_slow", "r1");
    await settled(key("c_slow", "r1"), "in_doubt");
    const action = await settled(key("c_slow", "r1"), "sent");
    expect(action.reason).toBe("found_at_provider");
    expect(action.lastError).toMatch(/no answer from the SMS provider/);
    expect(twilio().countByKey().get(key("c_slow", "r1"))).toBe(1);
  });

  it("does not take an earlier text alike to the same number for an in-doubt one", async () => {
    const phone = "+4915100099901";
    const remind = (ref: string) =>
      h().deliver({
        id: `evt_twin_${ref}`,
        type: "reminder.requested",
        customerId: "c_twin",
        occurredAt: "2026-11-02T10:00:00Z",
        properties: { ref },
        customer: { phone, timezone: "UTC" },
      });
    const reminder = (ref: string) =>
      actionKey({
        journeyId: "reminders",
        stepId: "reminder_sms",
        customerId: "c_twin",
        reference: ref,
      });
    await remind("r1");
    const first = await settled(reminder("r1"), "sent");
    // The second reminder, the same body to the same number, never reaches Twilio: the message
    // of the first is in the list, but it is the first's.
    twilio().fail({ kind: "drop" }, 1);
    await remind("r2");
    await settled(reminder("r2"), "in_doubt");
    const second = await settled(reminder("r2"), "sent");
    expect(second.attempt).toBe(2);
    expect(second.providerId).not.toBe(first.providerId);
    expect(twilio().messages.filter((m) => m.to === phone)).toHaveLength(2);
    expect(twilio().countByKey().get(reminder("r2"))).toBe(1);
  });

  it("looks an in-doubt text up by the number it went to, after the customer's number changed", async () => {
    twilio().fail({ kind: "error_after_create", status: 500 }, 1);
    await text("c_moved", "r1", "+4915100099911");
    await settled(key("c_moved", "r1"), "in_doubt");
    // A profile update moves the customer to a new number before the look-up.
    await h().schema.db.customer.update({
      where: { id: "c_moved" },
      data: { phone: "+4915100099912" },
    });
    const action = await settled(key("c_moved", "r1"), "sent");
    expect(action.reason).toBe("found_at_provider");
    expect(twilio().messages.filter((m) => m.to === "+4915100099912")).toHaveLength(0);
    expect(twilio().countByKey().get(key("c_moved", "r1"))).toBe(1);
  });

  it("finds an in-doubt text that Twilio's Smart Encoding rewrote: sent, not resent", async () => {
    // The reference goes into the body: typographic quotes, an apostrophe, a dash, an ellipsis.
    const ref = "r1 \u201Cwe\u2019re open\u201D \u2014 see you\u2026";
    twilio().rewriteBodies(smartEncode);
    twilio().fail({ kind: "drop_after_create" }, 1);
    try {
      await text("c_smart", ref);
      await settled(key("c_smart", ref), "in_doubt");
      const action = await settled(key("c_smart", ref), "sent");
      const created = twilio().messages.filter((m) => m.actionKey === key("c_smart", ref));
      expect(created.map((m) => m.body)).toEqual([`Offer r1 "we're open" - see you...`]);
      expect([action.reason, action.providerId]).toEqual(["found_at_provider", created[0]!.sid]);
    } finally {
      twilio().rewriteBodies(undefined);
    }
  });

  it("takes a signed status callback's word for an in-doubt text its look-up cannot match", async () => {
    // Twilio changed the body beyond typography; its status callback, whose URL carries the
    // action key, still names the message.
    const authToken = twilio().authToken;
    const answers: number[] = [];
    twilio().rewriteBodies((body) => `${body} (changed)`);
    twilio().onCreate(async (m) => {
      const params = { MessageSid: m.sid, MessageStatus: "queued" };
      const deps = { db: h().schema.db, authToken, now: () => new Date() };
      const answer = await handleStatusCallback(
        deps,
        signedRequest(authToken, m.statusCallback!, params),
      );
      answers.push(answer.status);
    });
    twilio().fail({ kind: "drop_after_create" }, 1);
    try {
      await text("c_changed", "r1");
      await settled(key("c_changed", "r1"), "in_doubt");
      const action = await settled(key("c_changed", "r1"), "sent");
      expect(answers).toEqual([204]);
      const created = twilio().messages.filter((m) => m.actionKey === key("c_changed", "r1"));
      expect(created).toHaveLength(1);
      expect([action.reason, action.providerId]).toEqual(["found_at_provider", created[0]!.sid]);
      const audit = await h().schema.db.auditEntry.findFirstOrThrow({
        where: { actionKey: key("c_changed", "r1"), kind: "sent" },
      });
      expect(audit.detail).toMatchObject({ resolvedBy: "status callback" });
    } finally {
      twilio().rewriteBodies(undefined);
      twilio().onCreate(undefined);
    }
  });

  it("holds an in-doubt text for a person when Twilio changed its body otherwise and no callback came", async () => {
    // Link Shortening rewrites every link of a text; no status callback reaches the API.
    const ref = "r1 https://shop.example/deals/r1";
    const k = key("c_shortened", ref);
    twilio().rewriteBodies((body) => body.replace(/https:\/\/\S+/g, "https://twil.io/Ab3x"));
    twilio().fail({ kind: "drop_after_create" }, 1);
    try {
      await text("c_shortened", ref);
      // Held for a person, or (as before) released and sent again.
      const looked = await eventually(
        async () => {
          const action = await actionState(h(), k);
          return action?.reason === UNMATCHED || action?.state === "sent" ? action : undefined;
        },
        20_000,
        "the look-up's verdict",
      );
      const created = twilio().messages.filter((m) => m.actionKey === k);
      expect(created.map((m) => m.body)).toEqual(["Offer r1 https://twil.io/Ab3x"]);
      expect([looked.state, looked.reason]).toEqual(["in_doubt", UNMATCHED]);
      const audit = await h().schema.db.auditEntry.findFirstOrThrow({
        where: { actionKey: k, rule: UNMATCHED },
      });
      expect(audit.detail).toMatchObject({ candidates: [created[0]!.sid] });
      // Not released, and not looked up again: past another grace period, still one text.
      await new Promise((r) => setTimeout(r, 2_000));
      expect(twilio().countByKey().get(k)).toBe(1);
      expect((await actionState(h(), k))?.reason).toBe(UNMATCHED);
    } finally {
      twilio().rewriteBodies(undefined);
    }
  });

  it("sends an in-doubt text again when Twilio took its message and then reported it failed", async () => {
    // Twilio queued the message, then gave it up (say 30034, through a Messaging Service): its
    // callbacks say so, and so does its list.
    const authToken = twilio().authToken;
    const deps = () => ({ db: h().schema.db, authToken, now: () => new Date() });
    let first = true;
    twilio().onCreate(async (m) => {
      if (!first) return;
      first = false;
      for (const MessageStatus of ["queued", "failed"]) {
        const params = { MessageSid: m.sid, MessageStatus };
        await handleStatusCallback(deps(), signedRequest(authToken, m.statusCallback!, params));
      }
      m.status = "failed";
    });
    twilio().fail({ kind: "drop_after_create" }, 1);
    try {
      await text("c_failed", "r1");
      await settled(key("c_failed", "r1"), "in_doubt");
      const action = await settled(key("c_failed", "r1"), "sent");
      const created = twilio().messages.filter((m) => m.actionKey === key("c_failed", "r1"));
      expect(created.map((m) => m.status)).toEqual(["failed", "queued"]);
      expect([action.attempt, action.providerId]).toEqual([2, created[1]!.sid]);
      expect(created[1]!.statusCallback).toMatch(/&attempt=2$/);
    } finally {
      twilio().onCreate(undefined);
    }
  });

  it("treats a 500 as in doubt and finds the message it did create", async () => {
    twilio().fail({ kind: "error_after_create", status: 500 }, 1);
    await text("c_500", "r1");
    const action = await settled(key("c_500", "r1"), "sent");
    expect(action.reason).toBe("found_at_provider");
    expect(twilio().countByKey().get(key("c_500", "r1"))).toBe(1);
  });
});

describe("a worker paused between its call-started mark and its call", () => {
  const twilio = useTwilioServer();
  const h = useHarness(JOURNEYS, {
    workers: 0,
    killWorkersAfterEach: true,
    env: () => twilioEnv(twilio()),
  });

  it("does not call once it wakes after another worker looked the SMS up and sent it", async () => {
    // Stopped as a paused machine stops, right after the mark committed.
    const paused = startWorker(h().env({ SENDONCE_FAILPOINT: "before_call" }));
    h().workers.push(paused);
    await paused.waitFor(/worker started/);
    await h().deliver(textRequest("c_paused", "r1", "+4915100077701"));
    await paused.waitFor(/failpoint before_call reached/);
    const k = key("c_paused", "r1");
    expect((await actionState(h(), k))?.state).toBe("calling");

    // Past the call's lease, another worker takes the call as in doubt, finds no message at
    // the provider and sends it.
    const other = startWorker(h().env());
    h().workers.push(other);
    const sent = await settledAction(h(), k, "sent", 30_000);
    expect(sent.attempt).toBe(2);
    expect(twilio().countByKey().get(k)).toBe(1);

    // The paused worker wakes: its call is long overdue, so it is not made.
    paused.child.kill("SIGCONT");
    await paused.waitFor(/outcome ignored: a newer attempt owns the action/);
    await new Promise((r) => setTimeout(r, 500));
    expect(twilio().countByKey().get(k)).toBe(1);
    expect((await actionState(h(), k))?.state).toBe("sent");
  });
});
