// `sendonce resolve`: an in-doubt send settled by a person who asked the provider. Sent, never
// sent with its run still on the step (sent again, once), never sent with nothing left to
// send it (failed_permanent), and anything not in doubt refused.
import { describe, expect, it } from "vitest";
import { actionKey } from "../../src/engine/keys";
import { recordAudit } from "../../src/ledger/audit";
import { runCli, runCliAsync } from "../support/cli";
import { settledAction, signup, twilioEnv, useHarness } from "../support/harness";
import { HELLO_EMAIL, OFFER_TEXTS, journeysDir, textRequest } from "../support/journeys";
import { useTwilioServer } from "../support/twilio";

const JOURNEYS = journeysDir({ "hello.yaml": HELLO_EMAIL, "texts.yaml": OFFER_TEXTS });

describe("sendonce resolve", () => {
  const twilio = useTwilioServer();
  // An in-doubt SMS waits for its look-up long enough for a person to get to it first.
  const h = useHarness(JOURNEYS, {
    env: () => ({ ...twilioEnv(twilio()), SENDONCE_INDOUBT_GRACE_MS: "8000" }),
  });
  const resolve = (...args: string[]) => runCliAsync(["resolve", ...args], h().env());
  const attempts = (key: string) =>
    h().schema.db.actionAttempt.findMany({
      where: { actionKey: key },
      orderBy: { attempt: "asc" },
    });
  const emailKey = (customerId: string) =>
    actionKey({ journeyId: "hello", stepId: "hello_email", customerId, reference: "" });
  async function inDoubtEmail(customerId: string): Promise<string> {
    h().sink.fail({ kind: "drop_after_data" }, 1);
    await h().deliver(signup(customerId));
    return (await settledAction(h(), emailKey(customerId), "in_doubt")).key;
  }

  it("records an in-doubt email sent, with the provider's id, by the start of its key", async () => {
    const key = await inDoubtEmail("c_took");
    const out = await resolve(key.slice(0, 12), "--sent", "--provider-id", "esp-4711");
    expect(out.stderr).toBe("");
    expect(out.stdout).toContain(`${key}: sent (provider id esp-4711)`);
    const action = await settledAction(h(), key, "sent");
    expect([action.reason, action.providerId]).toEqual(["resolved_by_hand", "esp-4711"]);
    expect((await attempts(key)).map((a) => [a.outcome, a.providerId])).toEqual([
      ["sent", "esp-4711"],
    ]);
    // Nothing left for reconcile; the timeline says who settled it and why.
    const reconciled = runCli(["reconcile", "--channel", "email", "--since", "1d"], h().env());
    expect(reconciled.stdout).not.toContain(key);
    const explained = runCli(["explain", "--customer", "c_took"], h().env()).stdout;
    expect(explained).toMatch(/sent .*provider id esp-4711 .*— by hand: /);
    // Settled once: a second resolution is refused and changes nothing.
    const again = await resolve(key, "--not-sent");
    expect(again.code).toBe(1);
    expect(again.stderr).toContain(`${key} is sent (resolved_by_hand), not in_doubt`);
    expect((await settledAction(h(), key, "sent")).providerId).toBe("esp-4711");
  });

  it("ends an in-doubt email that was never sent failed_permanent, when no run is left to send it", async () => {
    const key = await inDoubtEmail("c_lost");
    const out = await resolve(key, "--not-sent", "--note", "not in the ESP's log");
    expect(out.code).toBe(0);
    expect(out.stdout).toContain("resend by hand if it should go");
    const action = await settledAction(h(), key, "failed_permanent");
    expect(action.reason).toBe("not_sent");
    expect((await attempts(key)).map((a) => a.outcome)).toEqual(["not_sent"]);
    const explained = runCli(["explain", "--customer", "c_lost"], h().env()).stdout;
    expect(explained).toContain(`not in the ESP's log`);
    expect(h().sink.countByMessageId().get(`<${key}@shop.example>`)).toBe(1);
  });

  it("has a run still on the step send an in-doubt SMS that was never sent again, once", async () => {
    twilio().fail({ kind: "drop" }, 1);
    await h().deliver(textRequest("c_text", "r1", "+4915100088801"));
    const key = actionKey({
      journeyId: "texts",
      stepId: "offer_sms",
      customerId: "c_text",
      reference: "r1",
    });
    await settledAction(h(), key, "in_doubt");
    expect(twilio().countByKey().get(key)).toBeUndefined();
    // Sent without its SID, it could be taken for another message of the same text.
    const noSid = await resolve(key, "--sent");
    expect([noSid.code, noSid.stderr]).toEqual([
      1,
      expect.stringContaining("is an SMS: give the message's SID with --provider-id"),
    ]);
    const out = await resolve(key, "--not-sent");
    // By its run's next pass, which the sweep brings: the action released for a retry.
    expect(out.stdout).toContain(
      "its run is still on the step and sends it again, under the same key",
    );
    const action = await settledAction(h(), key, "sent");
    expect(action.attempt).toBe(2);
    expect(twilio().countByKey().get(key)).toBe(1);
    expect((await attempts(key)).map((a) => a.outcome)).toEqual(["released", "sent"]);
  });

  it("does not resolve as never sent what the provider reported on", async () => {
    const key = await inDoubtEmail("c_bounced");
    const action = await settledAction(h(), key, "in_doubt");
    // As the email webhook records a provider's event for the Message-ID.
    await recordAudit(h().schema.db, {
      kind: "delivery_status",
      at: new Date(),
      customerId: "c_bounced",
      actionKey: key,
      rule: "bounced",
      detail: { messageId: `<${key}@shop.example>` },
    });
    const out = await resolve(key, "--not-sent");
    expect([out.code, out.stderr.trim()]).toEqual([
      1,
      `sendonce: the provider reported "bounced" for ${key}: it took the message, so it is not resolved as never sent; use --sent`,
    ]);
    expect((await settledAction(h(), key, "in_doubt")).attempt).toBe(action.attempt);
  });

  it("refuses what is not an action key, or not one of this ledger's", async () => {
    const notKey = await resolve("c_took", "--sent");
    expect([notKey.code, notKey.stderr.trim()]).toEqual([
      1,
      'sendonce: "c_took" is not an action key: 64 hex digits, or a start of at least 8',
    ]);
    const unknown = await resolve("0123456789abcdef", "--sent");
    expect([unknown.code, unknown.stderr.trim()]).toEqual([
      1,
      "sendonce: no action has the key 0123456789abcdef",
    ]);
    const neither = await resolve("0123456789abcdef");
    expect(neither.code).toBe(1);
    expect(neither.stderr).toContain("give --sent or --not-sent");
  });
});
