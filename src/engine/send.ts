// A send step (email or SMS) through the ledger protocol: claim, mark the call started, call
// the provider, record the outcome. An in-doubt SMS is looked up in the provider's message
// list after a grace period: found → sent with its SID; absent → released for one retry; a
// message from the time of the call with another body → held in doubt for a person.
import type { Sql } from "../db/sql";
import { ChannelError } from "../channels/channel";
import type { EmailMessage, ProviderMessage, SmsMessage } from "../channels/channel";
import type { CompiledStep } from "../journeys/compile";
import type { Step } from "../journeys/types";
import type { ActionIntent, ClaimResult, Outcome, Recheck } from "../ledger/actions";
import {
  claimAction,
  holdInDoubt,
  markCallStarted,
  recordOutcome,
  releaseInDoubt,
  recordFoundSent,
} from "../ledger/actions";
import type { FactsQuery } from "../ledger/facts";
import type { EnrollmentEnd } from "../ledger/enrollments";
import { loadSendFacts, sendFactsQuery } from "../ledger/facts";
import {
  CLOCK_SLACK_MS,
  UNMATCHED,
  contentHash,
  earlierWord,
  reportedMessage,
  sentContent,
  unclaimedMatches,
  unexplainedMessages,
} from "../ledger/provider-match";
import { PROVIDER_OPT_OUT, revokeChannel } from "../policies/consent";
import { evaluateSend } from "../policies/evaluate";
import { unsubscribeLinks } from "../policies/unsubscribe";
import type { CustomerView } from "./context";
import { renderStep, templateContext } from "./decide";
import type { Engine } from "./engine";
import { retryDelayMs } from "./engine";
import type { Run } from "./run";
import { claimOptions, intentFor, recheckExit, setNextRun, trace, traceSettled } from "./run";
import { loadCustomer } from "./rows";

type SendStep = Extract<Step, { kind: "email" | "sms" }>;

/** How a send step ended for now. */
export type SendResult =
  | { kind: "done" }
  /** Done, and the run completed with it (the step was its last). */
  | { kind: "ended" }
  | { kind: "retry"; at: Date; why: string }
  | { kind: "exited"; detail: string }
  | { kind: "idle" };

/** Twilio 21610: the recipient replied STOP; their SMS consent is revoked. */
const OPTED_OUT = "21610";

/** A send step ready to be claimed: its intent, its content, and the re-check of its claim. */
export interface PreparedSend {
  intent: ActionIntent;
  /** Unset when the templates failed: the re-check then skips the action. */
  content?: Content;
  /** The policy facts, read in the round trip that takes the customer lock. */
  ahead: FactsQuery;
  /** Run inside the claim, with the customer locked; `aheadRows` are the facts' rows. */
  recheck: (tx: Sql, aheadRows?: unknown[]) => Promise<Recheck>;
  /** The address in force, as the last re-check read it. */
  address: () => string | null;
}

/** A send step's claim, made by the step itself or by the transaction that enrolled it. */
export interface SendClaim {
  prepared: PreparedSend;
  claim: ClaimResult;
}

export function prepareSend(run: Run, cs: CompiledStep, step: SendStep): PreparedSend {
  const { engine } = run;
  const intent = intentFor(run, step, step.kind);
  let content: Content | undefined;
  let renderError: string | undefined;
  try {
    content = render(run, cs, step);
  } catch (error) {
    renderError = (error as Error).message;
  }
  // The address in force now, read under the customer lock with the policies' facts: in the
  // lock's own round trip for the claim, afresh for a later re-check.
  const facts = () =>
    sendFactsQuery(intent, run.cj.journey, engine.catalog.policies, step.kind, engine.clock.now());
  const ahead = facts();
  let address: string | null = null;
  return {
    intent,
    ...(content && { content }),
    ahead,
    async recheck(tx, aheadRows) {
      const exit = await recheckExit(run, tx);
      if (!exit.go) return exit;
      if (renderError)
        return { go: false, outcome: "skip", reason: "template_error", detail: renderError };
      const sendFacts = aheadRows ? ahead.read(aheadRows) : await loadSendFacts(tx, facts());
      address = sendFacts.address;
      return verdictOf(evaluateSend(sendFacts));
    },
    address: () => address,
  };
}

/**
 * Runs a send step; `claimed` when its claim was already made (in the enrolling transaction).
 * Given `completes` (the step is the run's last), an outcome that finishes the step ends the
 * enrollment, as `completes()` says when the provider has answered, in the statement that
 * records it.
 */
export async function runSend(
  run: Run,
  cs: CompiledStep,
  step: SendStep,
  claimed?: SendClaim,
  completes?: () => EnrollmentEnd,
): Promise<SendResult> {
  const { engine } = run;
  const channel = engine.channels[step.kind];
  const prepared = claimed?.prepared ?? prepareSend(run, cs, step);
  const { intent, recheck } = prepared;
  const opts = {
    ...claimOptions(engine),
    ...(channel.list && { resolveAfterMs: engine.tuning.inDoubtGraceMs }),
  };
  const claimNow = () => claimAction(engine.db, intent, opts, recheck, prepared.ahead.statement);
  let claim: ClaimResult = claimed?.claim ?? (await claimNow());
  if (claim.kind === "resolve") {
    let lookUp: LookUp;
    try {
      lookUp = await findAtProvider(run, step, prepared.content!, intent, claim);
    } catch (error) {
      const at = new Date(engine.clock.now().getTime() + engine.tuning.inDoubtGraceMs);
      engine.log.warn("look-up at the provider failed; will try again", {
        key: intent.key,
        error: (error as Error).message,
      });
      await setNextRun(run, at);
      return { kind: "retry", at, why: "provider look-up failed" };
    }
    if (lookUp.kind === "found") {
      const settled = await recordFoundSent(engine.db, {
        key: intent.key,
        token: claim.token,
        providerId: lookUp.providerId,
        reason: "found_at_provider",
        resolvedBy: lookUp.via,
        now: engine.clock.now(),
        workerId: engine.workerId,
      });
      if (settled) {
        engine.log.info("in-doubt send found at the provider", {
          key: intent.key,
          providerId: lookUp.providerId,
          via: lookUp.via,
        });
        return { kind: "done" };
      }
      // Settled meanwhile (by hand, or by reconcile): claim again to see how, and go on from it.
      claim = await claimNow();
    } else if (lookUp.kind === "unmatched") {
      const candidates = lookUp.messages.map((m) => m.sid);
      const held = await holdInDoubt(engine.db, intent, claim.token, candidates, {
        now: engine.clock.now(),
        workerId: engine.workerId,
      });
      if (held) {
        engine.log.warn(
          "in-doubt send held for a person: the provider has a message to its number from the time of the call, with another body",
          { key: intent.key, candidates: candidates.join(" ") },
        );
        trace(run, "in_doubt", { step: intent.stepId, reason: UNMATCHED });
        return { kind: "done" };
      }
      claim = await claimNow();
    } else {
      claim = await releaseInDoubt(engine.db, intent, claim.token, claimOptions(engine), recheck);
      // Settled meanwhile (a status callback, reconcile, a person): claim again, as above.
      if (claim.kind === "stale") claim = await claimNow();
    }
  }
  switch (claim.kind) {
    case "proceed":
      return call(run, step, intent, prepared.content!, claim, prepared.address(), completes);
    case "settled":
      traceSettled(run, intent.stepId, claim);
      return { kind: "done" };
    case "wait":
      trace(run, "waiting", { step: intent.stepId, until: claim.until.toISOString() });
      await setNextRun(run, claim.until);
      return { kind: "retry", at: claim.until, why: claim.why };
    case "stale":
    case "resolve":
      return { kind: "idle" };
    case "exited":
      return { kind: "exited", detail: claim.detail };
  }
}

/** What a look-up at the provider found of an in-doubt attempt's message. */
type LookUp =
  | { kind: "found"; providerId: string; via: string }
  /** No message with its body, but these to its number from the time of the call. */
  | { kind: "unmatched"; messages: ProviderMessage[] }
  | { kind: "absent" };

/**
 * The provider's id of an in-doubt attempt's message, if the provider took it, and how that is
 * known: a status callback that reported it, or else a look-up in the provider's list by the
 * number and body the attempt recorded (attempts from before they were recorded: by the
 * message as it would be built now). Found nowhere, the list's messages that may be it with a
 * body Twilio changed (unexplainedMessages), within the call's lease of its mark.
 */
async function findAtProvider(
  run: Run,
  step: SendStep,
  content: Content,
  intent: ActionIntent,
  claim: { token: number; attempt: number; callStartedAt: Date },
): Promise<LookUp> {
  const { engine } = run;
  const { key } = intent;
  const reported = await reportedMessage(engine.db, key, claim.attempt);
  if (reported) return { kind: "found", providerId: reported.sid, via: "status callback" };
  let sent = await sentContent(engine.db, key, claim.attempt);
  if (!sent) {
    const customer = await loadCustomer(engine.db, run.enrollment.customerId);
    const message = buildMessage(engine, step, key, customer, content) as SmsMessage;
    sent = { address: message.to, contentHash: contentHash(message.body) };
  }
  const listed = await engine.channels[step.kind].list!(
    sent.address,
    new Date(claim.callStartedAt.getTime() - CLOCK_SLACK_MS),
  );
  const leasesMs = engine.tuning.claimLeaseMs + engine.tuning.callLeaseMs;
  const [match] = await unclaimedMatches(engine.db, key, listed, sent.contentHash, {
    from: claim.callStartedAt,
    leasesMs,
  });
  if (match) return { kind: "found", providerId: match.sid, via: "provider message list" };
  const unexplained = await unexplainedMessages(engine.db, intent, listed, sent, {
    from: claim.callStartedAt,
    to: new Date(claim.callStartedAt.getTime() + engine.tuning.callLeaseMs),
    leasesMs,
  });
  if (unexplained.length === 0) return { kind: "absent" };
  // Twilio said "try later" to the call after all: it made nothing. A person who handed the
  // action back was shown the messages an earlier hold named.
  const word = await earlierWord(engine.db, intent, claim);
  const messages = unexplained.filter((m) => !word.shown.has(m.sid));
  return messages.length > 0 && !word.triedLater
    ? { kind: "unmatched", messages }
    : { kind: "absent" };
}

async function call(
  run: Run,
  step: SendStep,
  intent: ActionIntent,
  content: Content,
  claim: { attempt: number; token: number },
  address: string | null,
  completes: (() => EnrollmentEnd) | undefined,
): Promise<SendResult> {
  const { engine } = run;
  await engine.failpoint?.("after_claim", intent.key);
  // Fresh profile: the address is the one in force now, not at enrollment.
  const customer = { ...run.customer, [step.kind === "sms" ? "phone" : "email"]: address };
  const message = buildMessage(engine, step, intent.key, customer, content);
  const markedAt = engine.clock.now();
  // The stall is measured on the monotonic clock: a wall clock set back meanwhile must not hide it.
  const markedMono = performance.now();
  const started = await markCallStarted(
    engine.db,
    intent.key,
    claim.token,
    engine.workerId,
    markedAt,
    {
      address: message.to,
      ...(step.kind === "sms" && { contentHash: contentHash((message as SmsMessage).body) }),
    },
    engine.tuning.claimLeaseMs,
  );
  if (!started) {
    return {
      kind: "retry",
      at: engine.clock.now(),
      why: "the claim was taken over, or outlived its lease: claim again",
    };
  }
  await engine.failpoint?.("before_call", intent.key);
  const windowMs = engine.tuning.callStartWindowMs;
  const late = Math.round(performance.now() - markedMono - windowMs);
  let outcome: Outcome;
  const began = Date.now();
  try {
    // A worker that stalled since its mark (a long pause, a stopped machine) does not call late.
    if (late > 0) {
      throw new ChannelError(
        `not called: due to begin within ${windowMs} ms of its call-started mark, ${late} ms late`,
        "retryable",
      );
    }
    // What is left of the call's lease, less a tenth for clocks and the outcome's write:
    // past it another worker may take the call as in doubt.
    const { callLeaseMs } = engine.tuning;
    const budgetMs = Math.max(1, Math.floor(callLeaseMs * 0.9 - (performance.now() - markedMono)));
    const delivery =
      step.kind === "email"
        ? await engine.channels.email.send(
            message as EmailMessage,
            intent.key,
            claim.attempt,
            budgetMs,
          )
        : await engine.channels.sms.send(message as SmsMessage, intent.key, claim.attempt);
    outcome = { state: "sent", providerId: delivery.providerId };
  } catch (error) {
    outcome = classify(engine, error, claim.attempt);
  }
  await engine.failpoint?.("after_call", intent.key);
  const now = engine.clock.now();
  // An in-doubt send stays on its step when the provider can be asked about it later.
  const lookedUpLater =
    outcome.state === "in_doubt" && engine.channels[step.kind].list !== undefined;
  // An outcome after which the step is not run again finishes it; a last step's run ends too.
  const finishes =
    outcome.state === "sent" ||
    outcome.state === "failed_permanent" ||
    (outcome.state === "in_doubt" && !lookedUpLater);
  const ends = finishes && completes ? completes() : undefined;
  const done: SendResult = ends ? { kind: "ended" } : { kind: "done" };
  // The provider has answered: losing that answer to a passing database error would turn a
  // known outcome into in_doubt, so recording it is retried before the job gives up.
  const recorded = await retrying(engine, intent.key, () =>
    recordOutcome(
      engine.db,
      intent,
      claim,
      outcome,
      { now, workerId: engine.workerId, lookUp: engine.channels[step.kind].list !== undefined },
      ends,
    ),
  );
  await engine.failpoint?.("after_outcome", intent.key);
  const fields = {
    key: intent.key,
    attempt: claim.attempt,
    ms: Date.now() - began,
    journey: intent.journeyId,
    step: intent.stepId,
  };
  if (!recorded) {
    engine.log.warn("outcome ignored: a newer attempt owns the action", {
      ...fields,
      outcome: outcome.state,
    });
    return { kind: "idle" };
  }
  if (recorded === "not_retried") {
    engine.log.warn("send failed after its call was given up as in doubt: not sent, not retried", {
      ...fields,
      error: outcome.state === "sent" ? undefined : outcome.error,
    });
    return { kind: "idle" };
  }
  switch (outcome.state) {
    case "sent":
      trace(run, "sent", { step: intent.stepId, channel: step.kind, key: intent.key });
      if (ends) trace(run, "enrollment completed", { reason: ends.reason });
      return done;
    case "failed_retryable":
      engine.log.warn("send failed, will retry", {
        ...fields,
        error: outcome.error,
        at: outcome.nextAttemptAt.toISOString(),
      });
      await setNextRun(run, outcome.nextAttemptAt);
      return { kind: "retry", at: outcome.nextAttemptAt, why: "retry backoff" };
    case "failed_permanent":
      engine.log.warn("send refused", { ...fields, error: outcome.error });
      if (step.kind === "sms" && outcome.code === OPTED_OUT) {
        await revokeChannel(engine.db, intent.customerId, "sms", PROVIDER_OPT_OUT, now);
      }
      return done;
    case "in_doubt": {
      engine.log.warn("send in doubt", { ...fields, error: outcome.error });
      if (!lookedUpLater) return done;
      // Stay on this step: after the grace period the next run looks the message up.
      const at = new Date(now.getTime() + engine.tuning.inDoubtGraceMs);
      await setNextRun(run, at);
      return { kind: "retry", at, why: "in doubt: to be looked up at the provider" };
    }
  }
}

// About 16 s in all: long enough to ride out a database restart or failover. An answer
// recorded after another worker marked the call in_doubt still settles it (same token).
const RECORD_RETRY_MS = [100, 250, 500, 1_000, 2_000, 4_000, 8_000];

async function retrying<T>(engine: Engine, key: string, fn: () => Promise<T>): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await fn();
    } catch (error) {
      const wait = RECORD_RETRY_MS[i];
      if (wait === undefined) throw error;
      engine.log.warn("recording the outcome failed; retrying", {
        key,
        attempt: i + 1,
        error: (error as Error).message,
      });
      await new Promise((r) => setTimeout(r, wait));
    }
  }
}

function classify(engine: Engine, error: unknown, attempt: number): Outcome {
  const { tuning, clock } = engine;
  if (!(error instanceof ChannelError)) {
    // A bug after the call started: the provider may have acted, so never resend blindly.
    return {
      state: "in_doubt",
      error: `unexpected: ${(error as Error)?.message ?? String(error)}`,
    };
  }
  const code = error.code !== undefined ? { code: error.code } : {};
  switch (error.failure) {
    case "retryable":
      if (attempt >= tuning.maxAttempts) {
        return {
          state: "failed_permanent",
          error: error.message,
          reason: "retries_exhausted",
          ...code,
        };
      }
      return {
        state: "failed_retryable",
        error: error.message,
        nextAttemptAt: new Date(clock.now().getTime() + retryDelayMs(tuning, attempt)),
        ...code,
      };
    case "permanent":
      return {
        state: "failed_permanent",
        error: error.message,
        reason: error.code === OPTED_OUT ? "recipient_opted_out" : "provider_refused",
        ...code,
      };
    case "in_doubt":
      return { state: "in_doubt", error: error.message, ...code };
  }
}

/** Rendered fields, plus the unsubscribe headers of a marketing email. */
interface Content {
  fields: Record<string, string>;
  headers?: Record<string, string>;
}

function render(run: Run, cs: CompiledStep, step: SendStep): Content {
  const { engine, cj } = run;
  const topic = cj.journey.consent;
  const links =
    step.kind === "email" && cj.journey.category === "marketing" && topic && engine.links
      ? unsubscribeLinks(engine.links.secret, engine.links.publicBaseUrl, engine.messageIdDomain, {
          customerId: run.enrollment.customerId,
          channel: "email",
          topic,
        })
      : undefined;
  const ctx = templateContext(cj, run.event, run.customer, run.enrollment, {
    unsubscribe_url: links?.url ?? "",
  });
  return { fields: renderStep(cs, ctx), ...(links && { headers: links.headers }) };
}

function buildMessage(
  engine: Engine,
  step: SendStep,
  key: string,
  customer: CustomerView,
  c: Content,
): EmailMessage | SmsMessage {
  if (step.kind === "sms") return { to: customer.phone!, body: c.fields.body! };
  return {
    to: customer.email!,
    subject: c.fields.subject!,
    ...(c.fields.html !== undefined && { html: c.fields.html }),
    ...(c.fields.text !== undefined && { text: c.fields.text }),
    messageId: `<${key}@${engine.messageIdDomain}>`,
    ...(c.headers && { headers: c.headers }),
  };
}

function verdictOf(verdict: ReturnType<typeof evaluateSend>): Recheck {
  if (verdict.allow) return { go: true };
  if ("delayUntil" in verdict) {
    return {
      go: false,
      outcome: "delay",
      until: verdict.delayUntil,
      reason: verdict.reason,
      detail: verdict.detail,
    };
  }
  return { go: false, outcome: "skip", reason: verdict.reason, detail: verdict.detail };
}
