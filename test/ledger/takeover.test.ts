// The ledger's races between a worker that is slow and one that takes its work over, played
// out on the database with the interleaving forced: a claim read the row, then the slow worker
// wrote first. The takeover must see what was written, never overwrite it.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { actionKey } from "../../src/engine/keys";
import type { ActionIntent, ClaimOptions } from "../../src/ledger/actions";
import {
  claimAction,
  markCallStarted,
  recordOutcome,
  recordFoundSent,
  releaseInDoubt,
} from "../../src/ledger/actions";
import { resolveByHand } from "../../src/ops/resolve";
import { recordAudit } from "../../src/ledger/audit";
import { endEnrollment, endEnrollmentLocked, settleEnded } from "../../src/ledger/enrollments";
import { poolOf } from "../../src/db/sql";
import { createTestSchema, holdRows } from "../support/db";
import type { TestSchema } from "../support/db";

let t: TestSchema;
let enrollmentId: bigint;

/** An active enrollment of customer c_1 in journey hello, at its first step (reference: the event). */
async function newEnrollment(eventId: string): Promise<bigint> {
  const [row] = await t.db.$queryRaw<{ id: bigint }[]>`
    WITH e AS (
      INSERT INTO "Event" ("eventId", type, "customerId", "occurredAt", "payloadHash")
      VALUES (${eventId}, 'signed_up', 'c_1', now(), 'h') RETURNING id)
    INSERT INTO "Enrollment" ("journeyId", "journeyVersion", "customerId", reference, "triggerEventId",
                              "currentStepId", "updatedAt")
    SELECT 'hello', 'v1', 'c_1', ${eventId}, id, 'hello_email', now() FROM e
    RETURNING id`;
  return row!.id;
}

beforeAll(async () => {
  t = await createTestSchema("takeover");
  await t.db.$executeRaw`
    INSERT INTO "Customer" (id, email, "updatedAt") VALUES ('c_1', 'c_1@example.com', now())`;
  enrollmentId = await newEnrollment("evt_1");
});
afterAll(async () => {
  await t?.drop();
});

/** A fresh action of an enrollment (the shared one by default): each test has a key of its own. */
function intent(reference: string, enrollment = enrollmentId): ActionIntent {
  return {
    key: actionKey({ journeyId: "hello", stepId: "hello_email", customerId: "c_1", reference }),
    journeyId: "hello",
    stepId: "hello_email",
    customerId: "c_1",
    reference,
    enrollmentId: enrollment,
    stepSeq: 0,
    channel: "email",
    eventOccurredAt: new Date(),
  };
}

const go = () => Promise.resolve({ go: true as const });
const LEASES = { claimLeaseMs: 1_000, callLeaseMs: 60_000 };
/** Worker A now, and worker B once A's claim lease has run out. */
const worker = (id: string, aheadMs = 0): ClaimOptions => ({
  now: new Date(Date.now() + aheadMs),
  workerId: id,
  ...LEASES,
});

async function actionRow(key: string) {
  const [row] = await t.db.$queryRaw<{ state: string; fencingToken: number; attempt: number }[]>`
    SELECT state::text, "fencingToken", attempt FROM "Action" WHERE key = ${key}`;
  return row!;
}

/**
 * Runs `first` and then `second` with both of their writes to the action's row queued behind a
 * transaction that holds it, so that `second` has read the row before `first` writes it, and
 * writes after it. Resolves with both results once the row is let go.
 */
async function queuedBehind<A, B>(
  key: string,
  first: () => Promise<A>,
  second: () => Promise<B>,
  /** The row held instead: an enrollment's. */
  enrollment?: bigint,
): Promise<[A, B]> {
  const held =
    enrollment === undefined
      ? await holdRows(t.url, `SELECT 1 FROM "Action" WHERE key = $1 FOR UPDATE`, [key])
      : await holdRows(t.url, `SELECT 1 FROM "Enrollment" WHERE id = $1 FOR UPDATE`, [enrollment]);
  try {
    const one = first();
    await held.waiting(1, "the first write waiting");
    const two = second();
    await held.waiting(2, "the second write waiting");
    await held.release();
    return [await one, await two];
  } finally {
    await held.release();
  }
}

const tokenOf = (claim: Awaited<ReturnType<typeof claimAction>>) =>
  claim.kind === "proceed" ? claim.token : 0;

describe("taking over a claim whose lease ran out", () => {
  it("backs off when the first worker's call-started mark lands between its read and its write", async () => {
    const a = intent("o_race");
    const claimA = await claimAction(t.db, a, worker("A"), go);
    expect(claimA).toMatchObject({ kind: "proceed", token: 1 });
    const [marked, claimB] = await queuedBehind(
      a.key,
      () => markCallStarted(t.db, a.key, tokenOf(claimA), "A", new Date()),
      () => claimAction(t.db, a, worker("B", 5_000), go),
    );
    expect(marked).toBe(true);
    // B saw the call start and waits for it: it did not take the action over.
    expect(claimB).toMatchObject({ kind: "wait", why: "provider call in progress" });
    expect(await actionRow(a.key)).toEqual({ state: "calling", fencingToken: 1, attempt: 1 });
  });

  it("keeps a call's outcome that lands between the read that found it overdue and the write", async () => {
    const a = intent("o_race_outcome");
    const claimA = await claimAction(t.db, a, worker("A"), go);
    expect(await markCallStarted(t.db, a.key, tokenOf(claimA), "A", new Date())).toBe(true);
    const sent = { state: "sent" as const, providerId: "<m@x>" };
    const [recorded, claimB] = await queuedBehind(
      a.key,
      () => recordOutcome(t.db, a, { token: tokenOf(claimA), attempt: 1 }, sent, worker("A")),
      // B finds the call older than its lease, and would make it in_doubt.
      () => claimAction(t.db, a, worker("B", 120_000), go),
    );
    expect(recorded).toBe(true);
    expect(claimB).toMatchObject({ kind: "settled", state: "sent", duplicate: true });
    expect((await actionRow(a.key)).state).toBe("sent");
  });

  it("takes over a claim whose worker never marked the call started", async () => {
    const a = intent("o_crashed");
    await claimAction(t.db, a, worker("A"), go);
    expect(await claimAction(t.db, a, worker("B", 5_000), go)).toMatchObject({
      kind: "proceed",
      token: 2,
      attempt: 2,
    });
    // A wakes up: its mark and its outcome are refused under its old token.
    expect(await markCallStarted(t.db, a.key, 1, "A", new Date())).toBe(false);
  });
});

describe("a claim that outlived its lease before its call", () => {
  it("does not start the call: what it decided may no longer hold", async () => {
    const a = intent("o_stale_claim");
    // Claimed five seconds ago; the lease is one second.
    const claim = await claimAction(t.db, a, worker("A", -5_000), go);
    const mark = (leaseMs?: number) =>
      markCallStarted(t.db, a.key, tokenOf(claim), "A", new Date(), undefined, leaseMs);
    expect(await mark(LEASES.claimLeaseMs)).toBe(false);
    expect((await actionRow(a.key)).state).toBe("claimed");
    // Claimed again, with the policies checked anew, it goes ahead.
    const again = await claimAction(t.db, a, worker("A"), go);
    expect(again).toMatchObject({ kind: "proceed", attempt: 2 });
    expect(
      await markCallStarted(
        t.db,
        a.key,
        tokenOf(again),
        "A",
        new Date(),
        undefined,
        LEASES.claimLeaseMs,
      ),
    ).toBe(true);
  });
});

describe("an answer that comes in after the call was given up (in_doubt)", () => {
  const gaveUp = async (reference: string, enrollment = enrollmentId) => {
    const a = intent(reference, enrollment);
    const claimA = await claimAction(t.db, a, worker("A"), go);
    const token = claimA.kind === "proceed" ? claimA.token : 0;
    expect(await markCallStarted(t.db, a.key, token, "A", new Date())).toBe(true);
    // B finds the call older than its lease: in_doubt.
    const late = { ...worker("B", 120_000) };
    expect(await claimAction(t.db, a, late, go)).toMatchObject({
      kind: "settled",
      state: "in_doubt",
    });
    return { a, claim: { token, attempt: 1 } };
  };

  it("is taken when it settles the action: sent", async () => {
    const { a, claim } = await gaveUp("o_late_sent");
    const sent = { state: "sent" as const, providerId: "<m@x>" };
    expect(await recordOutcome(t.db, a, claim, sent, worker("A"))).toBe(true);
    expect((await actionRow(a.key)).state).toBe("sent");
    // Settled: a run still on the step (its worker died before moving on) finds a duplicate,
    // not a call to look up at the provider, on a channel that has a look-up too.
    const lookUp = { ...worker("C", 600_000), resolveAfterMs: 1_000 };
    expect(await claimAction(t.db, a, lookUp, go)).toMatchObject({
      kind: "settled",
      state: "sent",
      duplicate: true,
    });
  });

  it("is found at the provider though a person released it as never sent during the look-up", async () => {
    const { a } = await gaveUp("o_found_after_hand", await newEnrollment("evt_found_after_hand"));
    // The run's look-up begins: the action is to be resolved under its token.
    const lookUp = { ...worker("C", 600_000), resolveAfterMs: 1_000 };
    const resolving = await claimAction(t.db, a, lookUp, go);
    expect(resolving.kind).toBe("resolve");
    const token = resolving.kind === "resolve" ? resolving.token : 0;
    // A person, meanwhile, releases it for a retry.
    const hand = { now: new Date(), by: "ops" };
    expect(await resolveByHand(t.db, a.key, { sent: false }, hand)).toMatchObject({
      kind: "retry",
    });
    // The provider has it after all: sent, not retried into a second message.
    const found = {
      key: a.key,
      token,
      providerId: "SM_found",
      reason: "found_at_provider" as const,
      resolvedBy: "provider message list",
      now: new Date(),
    };
    expect(await recordFoundSent(t.db, found)).toBe(true);
    const action = await t.db.action.findUniqueOrThrow({ where: { key: a.key } });
    expect([action.state, action.providerId]).toEqual(["sent", "SM_found"]);
    // Dated when its call started, and its attempt, released by hand, now a confirmed call.
    expect(action.completedAt).toEqual(action.callStartedAt);
    const attempt = await t.db.actionAttempt.findFirstOrThrow({ where: { actionKey: a.key } });
    expect([attempt.outcome, attempt.providerId]).toEqual(["sent", "SM_found"]);
    // Found out once: a second finding under the same token changes nothing.
    expect(await recordFoundSent(t.db, { ...found, providerId: "SM_other" })).toBe(false);
    // Its next run, at the position the person moved the enrollment to, finds it sent.
    expect(await claimAction(t.db, { ...a, stepSeq: 1 }, lookUp, go)).toMatchObject({
      kind: "settled",
      state: "sent",
    });
  });

  it("is looked up again before it is sent, once a person handed it back during a look-up", async () => {
    const enrollment = await newEnrollment("evt_hand_during_look_up");
    const { a } = await gaveUp("o_hand_during_look_up", enrollment);
    const lookUp = { ...worker("C", 600_000), resolveAfterMs: 1_000 };
    // The run's look-up begins (its list call is slow) ...
    const first = await claimAction(t.db, a, lookUp, go);
    expect(first.kind).toBe("resolve");
    const token = first.kind === "resolve" ? first.token : 0;
    // ... a person hands the action back, and the next run comes at the new position: it looks
    // the message up too, under the same token, instead of sending.
    const hand = { now: new Date(), by: "ops" };
    expect(await resolveByHand(t.db, a.key, { sent: false }, hand)).toEqual({ kind: "retry" });
    const next = { ...a, stepSeq: 1 };
    expect(await claimAction(t.db, next, lookUp, go)).toMatchObject({ kind: "resolve", token });
    // Both find the message: it is recorded once, and nothing is sent.
    const found = {
      key: a.key,
      token,
      providerId: "SM_slow_look_up",
      reason: "found_at_provider" as const,
      resolvedBy: "provider message list",
      now: new Date(),
    };
    expect(await recordFoundSent(t.db, found)).toBe(true);
    expect(await recordFoundSent(t.db, found)).toBe(false);
    expect(await claimAction(t.db, next, lookUp, go)).toMatchObject({
      kind: "settled",
      state: "sent",
    });
  });

  it("is sent again after a person handed it back and the look-up before sending finds nothing", async () => {
    const enrollment = await newEnrollment("evt_hand_not_found");
    const { a, claim } = await gaveUp("o_hand_not_found", enrollment);
    const hand = { now: new Date(), by: "ops" };
    expect(await resolveByHand(t.db, a.key, { sent: false }, hand)).toEqual({ kind: "retry" });
    const next = { ...a, stepSeq: 1 };
    const lookUp = { ...worker("C"), resolveAfterMs: 1_000 };
    expect(await claimAction(t.db, next, lookUp, go)).toMatchObject({ kind: "resolve" });
    expect(await releaseInDoubt(t.db, next, claim.token, lookUp, go)).toMatchObject({
      kind: "proceed",
      attempt: 2,
    });
  });

  it("is refused as never sent only when Twilio reported this attempt's message, and not failed", async () => {
    const sms = async (reference: string, reports: [number, string, string][]) => {
      const a: ActionIntent = {
        ...intent(reference, await newEnrollment(`evt_${reference}`)),
        channel: "sms",
      };
      const claim = await claimAction(t.db, a, worker("A"), go);
      expect(await markCallStarted(t.db, a.key, tokenOf(claim), "A", new Date())).toBe(true);
      expect(await claimAction(t.db, a, worker("B", 120_000), go)).toMatchObject({
        state: "in_doubt",
      });
      // Signed status callbacks, as the webhook records them: [attempt, status, SID].
      for (const [attempt, status, sid] of reports)
        await recordAudit(t.db, {
          kind: "delivery_status",
          at: new Date(),
          actionKey: a.key,
          rule: status,
          detail: { providerId: sid, status, attempt },
        });
      return resolveByHand(t.db, a.key, { sent: false }, { now: new Date(), by: "ops" });
    };
    expect(await sms("o_sms_took", [[1, "queued", "SM_1"]])).toEqual({
      kind: "reported",
      status: "queued",
    });
    // Queued, then given up: Twilio never sent it.
    const failed: [number, string, string][] = [
      [1, "queued", "SM_2"],
      [1, "failed", "SM_2"],
    ];
    expect(await sms("o_sms_failed", failed)).toEqual({ kind: "retry" });
    // Another attempt's message says nothing of this one.
    expect(await sms("o_sms_other", [[2, "delivered", "SM_3"]])).toEqual({ kind: "retry" });
  });

  describe("a person's resolve --not-sent and its run ending on the step", () => {
    // The run found the action settled (in_doubt) at position 0 and ends its enrollment there.
    const runEnds = (enrollment: bigint) =>
      endEnrollment(poolOf(t.db).sql, {
        enrollmentId: enrollment,
        status: "completed",
        reason: "finished",
        now: new Date(),
        expectedSeq: 0,
      });
    const notSent = (key: string) =>
      resolveByHand(t.db, key, { sent: false }, { now: new Date(), by: "ops" });

    it("the run first: nothing is left to send it, and the person is told so", async () => {
      const enrollment = await newEnrollment("evt_end_first");
      const { a } = await gaveUp("o_end_first", enrollment);
      const [ended, resolved] = await queuedBehind(
        a.key,
        () => runEnds(enrollment),
        () => notSent(a.key),
        enrollment,
      );
      expect([ended, resolved]).toEqual([true, { kind: "not_sent" }]);
      const { state, fencingToken } = await actionRow(a.key);
      expect(state).toBe("failed_permanent");
      // The provider then reports it (a status callback that waited on the row): it was sent,
      // and nobody resends it by hand.
      const found = {
        key: a.key,
        token: fencingToken,
        providerId: "SM_after_hand",
        reason: "found_at_provider" as const,
        resolvedBy: "status callback sent",
        now: new Date(),
      };
      expect(await recordFoundSent(t.db, found)).toBe(true);
      expect((await actionRow(a.key)).state).toBe("sent");
    });

    it("the person first: the run does not end past the action handed back, the next run sends it", async () => {
      const enrollment = await newEnrollment("evt_hand_first");
      const { a } = await gaveUp("o_hand_first", enrollment);
      const [resolved, ended] = await queuedBehind(
        a.key,
        () => notSent(a.key),
        () => runEnds(enrollment),
        enrollment,
      );
      expect([resolved, ended]).toEqual([{ kind: "retry" }, false]);
      const row = await t.db.enrollment.findUniqueOrThrow({ where: { id: enrollment } });
      expect([row.status, row.currentStepId, row.stepSeq]).toEqual(["active", "hello_email", 1]);
      // The next run, at the new position, claims the action again under the same key.
      expect(await claimAction(t.db, { ...a, stepSeq: 1 }, worker("C"), go)).toMatchObject({
        kind: "proceed",
        attempt: 2,
      });
    });
  });

  it("leaves a 'try later' in_doubt when the run that gave the call up will look it up", async () => {
    const { a, claim } = await gaveUp("o_late_retry");
    const retry = {
      state: "failed_retryable" as const,
      error: "451 try later",
      nextAttemptAt: new Date(Date.now() + 60_000),
    };
    expect(await recordOutcome(t.db, a, claim, retry, { ...worker("A"), lookUp: true })).toBe(
      false,
    );
    // It stays in_doubt: the look-up finds it absent and releases it for its retry.
    expect((await actionRow(a.key)).state).toBe("in_doubt");
    const [ignored] = await t.db.$queryRaw<{ n: number }[]>`
      SELECT count(*)::int AS n FROM "AuditEntry"
      WHERE kind = 'stale_outcome_ignored' AND "actionKey" = ${a.key}`;
    expect(ignored!.n).toBe(1);
  });

  it("settles it failed_permanent(retry_missed) when the channel has no look-up: known unsent, not in doubt", async () => {
    const { a, claim } = await gaveUp("o_late_retry_email");
    const retry = {
      state: "failed_retryable" as const,
      error: "451 try later",
      nextAttemptAt: new Date(Date.now() + 60_000),
    };
    const noLookUp = { ...worker("A"), lookUp: false };
    expect(await recordOutcome(t.db, a, claim, retry, noLookUp)).toBe("not_retried");
    const [row] = await t.db.$queryRaw<{ state: string; reason: string; outcome: string }[]>`
      SELECT a.state::text, a.reason, t.outcome FROM "Action" a
      JOIN "ActionAttempt" t ON t."actionKey" = a.key AND t.attempt = a.attempt
      WHERE a.key = ${a.key}`;
    expect(row).toEqual({
      state: "failed_permanent",
      reason: "retry_missed",
      outcome: "failed_retryable",
    });
    // A call still running (not given up) takes the same answer as an ordinary retry.
    const live = intent("o_live_retry_email");
    const c = await claimAction(t.db, live, worker("A"), go);
    expect(await markCallStarted(t.db, live.key, tokenOf(c), "A", new Date())).toBe(true);
    expect(
      await recordOutcome(t.db, live, { token: tokenOf(c), attempt: 1 }, retry, noLookUp),
    ).toBe(true);
    expect((await actionRow(live.key)).state).toBe("failed_retryable");
  });
});

describe("an enrollment that exits with an action not yet called", () => {
  it("settles its claimed and its retry-waiting actions as skipped(exited), and refuses the late call", async () => {
    const enrollment = await newEnrollment("evt_exit");
    const claimed = intent("o_exit_claimed", enrollment);
    const waiting = intent("o_exit_retry", enrollment);
    const claim = await claimAction(t.db, claimed, worker("A"), go);
    const retry = await claimAction(t.db, waiting, worker("A"), go);
    expect(await markCallStarted(t.db, waiting.key, tokenOf(retry), "A", new Date())).toBe(true);
    const later = {
      state: "failed_retryable" as const,
      error: "451",
      nextAttemptAt: new Date(Date.now() + 60_000),
    };
    expect(
      await recordOutcome(t.db, waiting, { token: tokenOf(retry), attempt: 1 }, later, worker("A")),
    ).toBe(true);

    const ended = await endEnrollment(poolOf(t.db).sql, {
      enrollmentId: enrollment,
      status: "exited",
      reason: "exit event order.completed",
      now: new Date(),
    });
    expect(ended).toBe(true);
    for (const a of [claimed, waiting]) {
      const [row] = await t.db.$queryRaw<{ state: string; reason: string }[]>`
        SELECT state::text, reason FROM "Action" WHERE key = ${a.key}`;
      expect(row).toEqual({ state: "skipped", reason: "exited" });
    }
    const [audits] = await t.db.$queryRaw<{ n: number }[]>`
      SELECT count(*)::int AS n FROM "AuditEntry" WHERE kind = 'skipped' AND rule = 'exited'
        AND "enrollmentId" = ${enrollment}`;
    expect(audits!.n).toBe(2);
    // The worker holding the claim wakes up: its call does not start.
    expect(await markCallStarted(t.db, claimed.key, tokenOf(claim), "A", new Date())).toBe(false);
  });
});

describe("an enrollment that exits while one of its claims is being made", () => {
  it("waits for the claim, then settles it: nothing is left claimed with no run to finish it", async () => {
    const enrollment = await newEnrollment("evt_exit_mid_claim");
    const a = intent("o_exit_mid_claim", enrollment);
    // The claim holds the customer's lock while its re-check runs (a second run of the same
    // step: the inline run and the sweep's job, or a stalled job).
    let letGo!: () => void;
    const gate = new Promise<void>((r) => (letGo = r));
    let inside!: () => void;
    const entered = new Promise<void>((r) => (inside = r));
    const claim = claimAction(t.db, a, worker("A"), async () => {
      inside();
      await gate;
      return { go: true as const };
    });
    await entered;
    const end = endEnrollmentLocked(t.db, "c_1", {
      enrollmentId: enrollment,
      status: "exited",
      reason: "exit event order.completed",
      now: new Date(),
    });
    await new Promise((r) => setTimeout(r, 200));
    letGo();
    expect((await claim).kind).toBe("proceed");
    expect(await end).toBe(true);
    // The end read the actions after the claim committed: it settled it. (Unlocked, it had
    // read them before, and the claim stayed claimed under an enrollment with no next run.)
    const [row] = await t.db.$queryRaw<{ state: string; reason: string }[]>`
      SELECT state::text, reason FROM "Action" WHERE key = ${a.key}`;
    expect(row).toEqual({ state: "skipped", reason: "exited" });
  });
});

describe("an enrollment that exits while a call is under way", () => {
  it("skips a call the sweep gave up that then answers 'try later': the enrollment ended", async () => {
    const enrollment = await newEnrollment("evt_exit_late");
    const a = intent("o_exit_late", enrollment);
    const claim = await claimAction(t.db, a, worker("A"), go);
    expect(await markCallStarted(t.db, a.key, tokenOf(claim), "A", new Date())).toBe(true);
    const now = new Date();
    await endEnrollment(poolOf(t.db).sql, {
      enrollmentId: enrollment,
      status: "exited",
      reason: "exit event order.completed",
      now,
    });
    const later = new Date(now.getTime() + LEASES.callLeaseMs + 1_000);
    expect(await settleEnded(t.db, { now: later, ...LEASES, workerId: "S", batch: 100 })).toEqual({
      interrupted: 1,
      skipped: 0,
    });
    // No run will look it up (the enrollment ended), though the channel could.
    const retry = {
      state: "failed_retryable" as const,
      error: "451 try later",
      nextAttemptAt: new Date(Date.now() + 60_000),
    };
    const answered = await recordOutcome(t.db, a, { token: tokenOf(claim), attempt: 1 }, retry, {
      ...worker("A"),
      lookUp: true,
    });
    expect(answered).toBe("not_retried");
    const [row] = await t.db.$queryRaw<{ state: string; reason: string }[]>`
      SELECT state::text, reason FROM "Action" WHERE key = ${a.key}`;
    expect(row).toEqual({ state: "skipped", reason: "exited" });
  });

  it("leaves the call to its worker; the sweep finds a dead worker's call in_doubt, and skips a retry it asked for", async () => {
    const enrollment = await newEnrollment("evt_exit_calling");
    const dying = intent("o_exit_dying", enrollment);
    const living = intent("o_exit_living", enrollment);
    const retrying = intent("o_exit_retrying", enrollment);
    const tokens: Record<string, number> = {};
    for (const a of [dying, living, retrying]) {
      const claim = await claimAction(t.db, a, worker("A"), go);
      tokens[a.key] = tokenOf(claim);
      expect(await markCallStarted(t.db, a.key, tokenOf(claim), "A", new Date())).toBe(true);
    }
    const now = new Date();
    expect(
      await endEnrollment(poolOf(t.db).sql, {
        enrollmentId: enrollment,
        status: "exited",
        reason: "exit event order.completed",
        now,
      }),
    ).toBe(true);
    const sweep = (aheadMs: number) =>
      settleEnded(t.db, {
        now: new Date(now.getTime() + aheadMs),
        ...LEASES,
        workerId: "S",
        batch: 100,
      });
    // Within the calls' lease the sweep leaves them to their workers.
    expect(await sweep(1_000)).toEqual({ interrupted: 0, skipped: 0 });
    expect((await actionRow(dying.key)).state).toBe("calling");
    // One worker records a send, one a "try later" that no run will retry; one has died.
    const answer = (a: ActionIntent, outcome: Parameters<typeof recordOutcome>[3]) =>
      recordOutcome(t.db, a, { token: tokens[a.key]!, attempt: 1 }, outcome, worker("A"));
    expect(await answer(living, { state: "sent", providerId: "<m@x>" })).toBe(true);
    expect(
      await answer(retrying, {
        state: "failed_retryable",
        error: "451 try later",
        nextAttemptAt: new Date(Date.now() + 60_000),
      }),
    ).toBe(true);
    expect(await sweep(LEASES.callLeaseMs + 1_000)).toEqual({ interrupted: 1, skipped: 1 });
    const states = await t.db.$queryRaw<{ key: string; state: string; reason: string | null }[]>`
      SELECT key, state::text, reason FROM "Action" WHERE "enrollmentId" = ${enrollment}`;
    const byKey = new Map(states.map((r) => [r.key, [r.state, r.reason]]));
    expect(byKey.get(dying.key)).toEqual(["in_doubt", "call_interrupted"]);
    expect(byKey.get(living.key)).toEqual(["sent", null]);
    expect(byKey.get(retrying.key)).toEqual(["skipped", "exited"]);
    const [audit] = await t.db.$queryRaw<{ rule: string; detail: { crashedWorker: string } }[]>`
      SELECT rule, detail FROM "AuditEntry" WHERE kind = 'in_doubt' AND "actionKey" = ${dying.key}`;
    expect(audit).toMatchObject({ rule: "call_interrupted", detail: { crashedWorker: "A" } });
    // Nothing is left: the next pass finds nothing, and the enrollment waits for no call.
    expect(await sweep(LEASES.callLeaseMs * 2)).toEqual({ interrupted: 0, skipped: 0 });
    const [row] = await t.db.$queryRaw<{ status: string; nextRunAt: Date | null }[]>`
      SELECT status::text, "nextRunAt" FROM "Enrollment" WHERE id = ${enrollment}`;
    expect(row).toEqual({ status: "exited", nextRunAt: null });
  });

  it("keeps a claim whose call-started mark lands while the end is being written for the sweep", async () => {
    const enrollment = await newEnrollment("evt_exit_racing");
    const a = intent("o_exit_racing", enrollment);
    const claim = await claimAction(t.db, a, worker("A"), go);
    const now = new Date();
    // The end reads the action as claimed; the mark commits before the end's write reaches it.
    const [marked, ended] = await queuedBehind(
      a.key,
      () => markCallStarted(t.db, a.key, tokenOf(claim), "A", new Date()),
      () =>
        endEnrollment(poolOf(t.db).sql, {
          enrollmentId: enrollment,
          status: "exited",
          reason: "exit event order.completed",
          now,
        }),
    );
    expect([marked, ended]).toEqual([true, true]);
    expect((await actionRow(a.key)).state).toBe("calling");
    // The worker dies; the sweep still finds the call once its lease is over.
    const swept = await settleEnded(t.db, {
      now: new Date(now.getTime() + LEASES.callLeaseMs + 1_000),
      ...LEASES,
      workerId: "S",
      batch: 100,
    });
    expect(swept).toEqual({ interrupted: 1, skipped: 0 });
    expect((await actionRow(a.key)).state).toBe("in_doubt");
  });
});

/** What `promise` resolves with; a failure when it is still pending after `ms`. */
async function within<T>(ms: number, promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} still waiting after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

describe("sweeps running at the same time", () => {
  it("share the ended enrollments: each is settled once, and one sweep held up holds up no other", async () => {
    // Four exited enrollments, each with a call whose worker died, started a second apart an
    // hour ago: before anything the tests above leave for the sweep.
    const start = Date.now() - 3_600_000;
    const keys: string[] = [];
    for (let i = 0; i < 4; i++) {
      const at = new Date(start + i * 1_000);
      const enrollment = await newEnrollment(`evt_sweeps_${i}`);
      const a = intent(`o_sweeps_${i}`, enrollment);
      const claim = await claimAction(t.db, a, { ...worker("A"), now: at }, go);
      expect(await markCallStarted(t.db, a.key, tokenOf(claim), "A", at)).toBe(true);
      await endEnrollment(poolOf(t.db).sql, {
        enrollmentId: enrollment,
        status: "exited",
        reason: "exit event order.completed",
        now: at,
      });
      keys.push(a.key);
    }
    // Every one of those calls is past its lease; nothing the tests above leave is due yet.
    const sweep = (workerId: string, batch: number) =>
      settleEnded(t.db, {
        now: new Date(start + 3_000 + LEASES.callLeaseMs),
        ...LEASES,
        workerId,
        batch,
      });
    // A worker holds the second call's row (as one recording its outcome would): S1 takes the
    // two oldest enrollments and waits on it with both locked.
    const held = await holdRows(t.url, `SELECT 1 FROM "Action" WHERE key = $1 FOR UPDATE`, [
      keys[1],
    ]);
    const first = sweep("S1", 2);
    try {
      await held.waiting(1, "sweep S1 waiting");
      // S2 passes over what S1 holds and settles the rest meanwhile; it must not queue behind S1.
      expect(await within(5_000, sweep("S2", 100), "sweep S2")).toEqual({
        interrupted: 2,
        skipped: 0,
      });
    } finally {
      await held.release();
    }
    expect(await first).toEqual({ interrupted: 2, skipped: 0 });

    // Each call settled once, by the sweep that held its enrollment.
    const audits = await poolOf(t.db).sql<{ actionKey: string; workerId: string }>`
      SELECT "actionKey", "workerId" FROM "AuditEntry"
      WHERE kind = 'in_doubt' AND "actionKey" = ANY(${keys}::text[])`;
    expect(audits.map((a) => [a.actionKey, a.workerId]).sort()).toEqual(
      keys.map((key, i) => [key, i < 2 ? "S1" : "S2"]).sort(),
    );
    for (const key of keys) expect((await actionRow(key)).state).toBe("in_doubt");
    expect(await sweep("S3", 100)).toEqual({ interrupted: 0, skipped: 0 });
  });
});
