// An in-doubt SMS whose body the provider's list does not have may still be there with a body
// Twilio changed (Link Shortening rewrites every link). Releasing it would send it twice; a
// message from the time of the call that nothing else explains holds it for a person instead.
// Played out on the database: the list is given, as Twilio would answer it.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ProviderMessage } from "../../src/channels/channel";
import { actionKey } from "../../src/engine/keys";
import type { ActionIntent, ClaimOptions } from "../../src/ledger/actions";
import {
  claimAction,
  holdInDoubt,
  markCallStarted,
  recordFoundSent,
  recordOutcome,
  releaseInDoubt,
} from "../../src/ledger/actions";
import {
  UNMATCHED,
  contentHash,
  earlierWord,
  unexplainedMessages,
} from "../../src/ledger/provider-match";
import { formatTimeline, loadTimeline } from "../../src/ops/explain";
import { resolveByHand } from "../../src/ops/resolve";
import { createTestSchema } from "../support/db";
import type { TestSchema } from "../support/db";

let t: TestSchema;
const PHONE = "+4915100012345";
const go = () => Promise.resolve({ go: true as const });
const worker = (id: string, aheadMs = 0): ClaimOptions => ({
  now: new Date(Date.now() + aheadMs),
  workerId: id,
  claimLeaseMs: 1_000,
  callLeaseMs: 60_000,
});
/** A run of the step that looks in-doubt texts up, well after the call. */
const lookUp = () => ({ ...worker("L", 600_000), resolveAfterMs: 1_000 });

beforeAll(async () => {
  t = await createTestSchema("look_up");
  await t.db.$executeRaw`
    INSERT INTO "Customer" (id, phone, "updatedAt") VALUES ('c_1', ${PHONE}, now())`;
});
afterAll(async () => {
  await t?.drop();
});

/** A text of customer c_1 claimed and its call started with `body` at `at`; its intent and token. */
async function called(reference: string, body: string, at = new Date()) {
  const [e] = await t.db.$queryRaw<{ id: bigint }[]>`
    WITH e AS (
      INSERT INTO "Event" ("eventId", type, "customerId", "occurredAt", "payloadHash")
      VALUES (${`evt_${reference}`}, 'offer', 'c_1', now(), 'h') RETURNING id)
    INSERT INTO "Enrollment" ("journeyId", "journeyVersion", "customerId", reference, "triggerEventId",
                              "currentStepId", "updatedAt")
    SELECT 'texts', 'v1', 'c_1', ${reference}, id, 'offer_sms', now() FROM e
    RETURNING id`;
  const intent: ActionIntent = {
    key: actionKey({ journeyId: "texts", stepId: "offer_sms", customerId: "c_1", reference }),
    journeyId: "texts",
    stepId: "offer_sms",
    customerId: "c_1",
    reference,
    enrollmentId: e!.id,
    stepSeq: 0,
    channel: "sms",
    eventOccurredAt: new Date(),
  };
  const claim = await claimAction(t.db, intent, worker("A"), go);
  const token = claim.kind === "proceed" ? claim.token : 0;
  const sent = { address: PHONE, contentHash: contentHash(body) };
  expect(await markCallStarted(t.db, intent.key, token, "A", at, sent)).toBe(true);
  return { intent, token, sent, at };
}

/** The same, then given up as in doubt by another worker. */
async function inDoubt(reference: string, body: string) {
  const c = await called(reference, body);
  expect(await claimAction(t.db, c.intent, worker("B", 120_000), go)).toMatchObject({
    state: "in_doubt",
  });
  return c;
}

let sids = 0;
const message = (body: string, at: Date, status = "sent"): ProviderMessage => ({
  sid: `SM${String(++sids).padStart(32, "0")}`,
  body,
  dateCreated: at,
  status,
});

describe("the messages a look-up cannot explain", () => {
  it("are those to the number from the time of the call with another body", async () => {
    const c = await called("u_window", "Offer https://shop.example/r1");
    const seconds = (s: number) => new Date(c.at.getTime() + s * 1000);
    const window = { from: c.at, to: seconds(90), leasesMs: 120_000 };
    const shortened = message("Offer https://twil.io/x1", seconds(1));
    const list = [
      shortened,
      // Its own body: a match, not something to explain.
      message("Offer https://shop.example/r1", seconds(2)),
      // Long before the call, and long after its lease.
      message("Offer https://twil.io/x0", seconds(-3_600)),
      message("Offer https://twil.io/x9", seconds(3_600)),
      // Taken, then given up by Twilio.
      message("Offer https://twil.io/x2", seconds(3), "failed"),
    ];
    const found = await unexplainedMessages(t.db, c.intent, list, c.sent, window);
    expect(found.map((m) => m.sid)).toEqual([shortened.sid]);
    // An attempt that did not record its body matches any body: nothing is left to explain.
    expect(await unexplainedMessages(t.db, c.intent, list, null, window)).toEqual([]);
  });

  it("leave out another action's message and another of the customer's texts to the number", async () => {
    const c = await called("u_mine", "Offer r2");
    const other = await called("u_other", "Your code is 4711");
    const seconds = (s: number) => new Date(c.at.getTime() + s * 1000);
    // The other text's message, before and after its provider id was recorded.
    const theirs = message("Your code is 4711", seconds(1));
    const window = { from: c.at, to: seconds(90), leasesMs: 120_000 };
    expect(await unexplainedMessages(t.db, c.intent, [theirs], c.sent, window)).toEqual([]);
    const sent = { state: "sent" as const, providerId: theirs.sid };
    const claim = { token: other.token, attempt: 1 };
    expect(await recordOutcome(t.db, other.intent, claim, sent, worker("A"))).toBe(true);
    expect(await unexplainedMessages(t.db, c.intent, [theirs], c.sent, window)).toEqual([]);
    // A message with a body no text of the customer's had is left.
    const stranger = message("Offer r2 — now 20% off", seconds(2));
    const found = await unexplainedMessages(t.db, c.intent, [theirs, stranger], c.sent, window);
    expect(found.map((m) => m.sid)).toEqual([stranger.sid]);
  });
});

describe("an in-doubt text held for a person", () => {
  it("is not looked up again, and a status callback still settles it", async () => {
    const c = await inDoubt("h_callback", "Offer r3");
    const resolving = await claimAction(t.db, c.intent, lookUp(), go);
    expect(resolving).toMatchObject({ kind: "resolve" });
    expect(await holdInDoubt(t.db, c.intent, c.token, ["SM_x"], worker("L"))).toBe(true);
    const action = await t.db.action.findUniqueOrThrow({ where: { key: c.intent.key } });
    expect([action.state, action.reason]).toEqual(["in_doubt", UNMATCHED]);
    const audit = await t.db.auditEntry.findFirstOrThrow({
      where: { actionKey: c.intent.key, rule: UNMATCHED },
    });
    expect(audit.kind).toBe("in_doubt");
    expect(audit.detail).toMatchObject({ attempt: 1, candidates: ["SM_x"] });
    // What explain shows: what to do about it.
    const timeline = formatTimeline(await loadTimeline(t.db, "c_1")).join("\n");
    expect(timeline).toMatch(
      /in doubt .*unmatched_at_provider — no message with its body, but SM_x .*sendonce resolve --sent/,
    );
    // A run that comes to the step again finds it settled in doubt: no look-up, no release.
    expect(await claimAction(t.db, c.intent, lookUp(), go)).toMatchObject({
      kind: "settled",
      state: "in_doubt",
    });
    // Held once: a second hold under the same token changes nothing.
    expect(await holdInDoubt(t.db, c.intent, c.token, ["SM_y"], worker("L"))).toBe(false);
    const found = {
      key: c.intent.key,
      token: c.token,
      providerId: "SM_x",
      reason: "found_at_provider" as const,
      resolvedBy: "status callback",
      now: new Date(),
    };
    expect(await recordFoundSent(t.db, found)).toBe(true);
    const settled = await t.db.action.findUniqueOrThrow({ where: { key: c.intent.key } });
    expect([settled.state, settled.providerId]).toEqual(["sent", "SM_x"]);
  });

  it("is not released by a look-up that began before the hold", async () => {
    const c = await inDoubt("h_two_look_ups", "Offer r6");
    // Two runs of the step both begin a look-up under the same token.
    expect(await claimAction(t.db, c.intent, lookUp(), go)).toMatchObject({ kind: "resolve" });
    expect(await claimAction(t.db, c.intent, lookUp(), go)).toMatchObject({ kind: "resolve" });
    // One finds the changed message and holds it; the other, whose list lacked it, would release.
    expect(await holdInDoubt(t.db, c.intent, c.token, ["SM_v"], worker("L"))).toBe(true);
    expect(await releaseInDoubt(t.db, c.intent, c.token, lookUp(), go)).toEqual({
      kind: "stale",
    });
    const action = await t.db.action.findUniqueOrThrow({ where: { key: c.intent.key } });
    expect([action.state, action.reason, action.attempt]).toEqual(["in_doubt", UNMATCHED, 1]);
  });

  it("counts as shown to a person who hands it back; a message they were not shown holds it again", async () => {
    const c = await inDoubt("h_by_hand", "Offer r4");
    const claim = { token: c.token, attempt: 1, callStartedAt: c.at };
    expect(await claimAction(t.db, c.intent, lookUp(), go)).toMatchObject({ kind: "resolve" });
    expect(await earlierWord(t.db, c.intent, claim)).toEqual({
      shown: new Set(),
      triedLater: false,
    });
    expect(await holdInDoubt(t.db, c.intent, c.token, ["SM_z"], worker("L"))).toBe(true);
    const hand = { now: new Date(), by: "ops" };
    expect(await resolveByHand(t.db, c.intent.key, { sent: false }, hand)).toMatchObject({
      kind: "retry",
    });
    // The look-up before the resend leaves out what the person was shown.
    expect(await claimAction(t.db, { ...c.intent, stepSeq: 1 }, lookUp(), go)).toMatchObject({
      kind: "resolve",
    });
    expect((await earlierWord(t.db, c.intent, claim)).shown).toEqual(new Set(["SM_z"]));
    // Another message they were not shown puts it back in doubt, held.
    expect(await holdInDoubt(t.db, c.intent, c.token, ["SM_u"], worker("L"))).toBe(true);
    const action = await t.db.action.findUniqueOrThrow({ where: { key: c.intent.key } });
    expect([action.state, action.reason, action.nextAttemptAt]).toEqual([
      "in_doubt",
      UNMATCHED,
      null,
    ]);
    expect((await earlierWord(t.db, c.intent, claim)).shown).toEqual(new Set(["SM_z", "SM_u"]));
    // Its attempt is in doubt again, no longer released, and the trail says a person had said
    // it was not sent.
    const attempt = await t.db.actionAttempt.findFirstOrThrow({
      where: { actionKey: c.intent.key },
    });
    expect(attempt.outcome).toBeNull();
    const holds = await t.db.auditEntry.findMany({
      where: { actionKey: c.intent.key, rule: UNMATCHED },
      orderBy: { id: "asc" },
    });
    expect(holds.map((e) => (e.detail as { handedBack?: boolean }).handedBack)).toEqual([
      undefined,
      true,
    ]);
  });

  it("is known unsent when its call's late answer says try later: nothing will look it up", async () => {
    const c = await inDoubt("h_try_later", "Offer r5");
    expect(await claimAction(t.db, c.intent, lookUp(), go)).toMatchObject({ kind: "resolve" });
    expect(await holdInDoubt(t.db, c.intent, c.token, ["SM_w"], worker("L"))).toBe(true);
    const later = {
      state: "failed_retryable" as const,
      error: "429",
      nextAttemptAt: new Date(),
    };
    const claim = { token: c.token, attempt: 1 };
    expect(
      await recordOutcome(t.db, c.intent, claim, later, { ...worker("A"), lookUp: true }),
    ).toBe("not_retried");
    const action = await t.db.action.findUniqueOrThrow({ where: { key: c.intent.key } });
    expect([action.state, action.reason]).toEqual(["failed_permanent", "retry_missed"]);
  });
});
describe("an in-doubt text whose call's late answer said try later before its look-up", () => {
  it("is known to the look-up as never made: Twilio's messages from then are not its", async () => {
    const c = await inDoubt("l_try_later", "Offer r7");
    const later = { state: "failed_retryable" as const, error: "429", nextAttemptAt: new Date() };
    const claim = { token: c.token, attempt: 1 };
    // The run will look it up, so the answer leaves it in doubt for that look-up to release.
    const opts = { ...worker("A"), lookUp: true };
    expect(await recordOutcome(t.db, c.intent, claim, later, opts)).toBe(false);
    expect((await t.db.action.findUniqueOrThrow({ where: { key: c.intent.key } })).state).toBe(
      "in_doubt",
    );
    const word = await earlierWord(t.db, c.intent, claim);
    expect(word.triedLater).toBe(true);
    // Nor does a hold take it, should a look-up have read the trail before the answer came.
    expect(await claimAction(t.db, c.intent, lookUp(), go)).toMatchObject({ kind: "resolve" });
    expect(await holdInDoubt(t.db, c.intent, c.token, ["SM_t"], worker("L"))).toBe(false);
  });
});
