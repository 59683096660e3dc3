// Running an enrollment's current step: waits and branches move it along, sends and points go
// through the ledger protocol. Immediate steps run in one go; a wait or a retry hands back a
// time, and the queue edge schedules the next run.
import { ChannelError } from "../channels/channel";
import type { EmailMessage, SmsMessage } from "../channels/channel";
import type { Tx } from "../db/client";
import { TX_OPTIONS } from "../db/client";
import type { CompiledJourney, CompiledStep } from "../journeys/compile";
import type { Step } from "../journeys/types";
import type { ActionIntent, Outcome, Recheck, SettledClaim } from "../ledger/actions";
import { claimAction, markCallStarted, recordOutcome } from "../ledger/actions";
import { recordAudit } from "../ledger/audit";
import { grantPoints } from "../ledger/points";
import { loadSendFacts } from "../ledger/facts";
import { evaluateSend } from "../policies/evaluate";
import type { CustomerView, EnrollmentView, EventView } from "./context";
import { branchTarget, findExit, nextStepId, renderStep, templateContext } from "./decide";
import type { Engine } from "./engine";
import { retryDelayMs } from "./engine";
import { endEnrollment } from "./intake";
import { actionKey } from "./keys";
import { loadCustomer, loadEvent, loadExitCandidates } from "./rows";

export type StepRunResult =
  /** Nothing to do: the enrollment ended or moved on (a stale or duplicate job). */
  | { kind: "idle" }
  /** The enrollment's next step is due at `at` (after a wait). */
  | { kind: "scheduled"; enrollmentId: bigint; stepSeq: number; at: Date }
  /** Run this same step again at `at` (retry backoff, or another attempt holds the action). */
  | { kind: "retry"; at: Date; why: string };

interface Run {
  engine: Engine;
  cj: CompiledJourney;
  enrollment: EnrollmentView & { customerId: string; seq: number; triggerAt: Date };
  event: EventView;
  customer: CustomerView;
}

/** Runs enrollment `enrollmentId` from position `stepSeq`; stale positions are a no-op. */
export async function runStep(
  engine: Engine,
  enrollmentId: bigint,
  stepSeq: number,
): Promise<StepRunResult> {
  const row = await engine.db.enrollment.findUnique({ where: { id: enrollmentId } });
  if (!row || row.status !== "active" || row.stepSeq !== stepSeq || !row.currentStepId)
    return { kind: "idle" };
  const event = await loadEvent(engine.db, row.triggerEventId);
  const cj = await engine.catalog.version(row.journeyId, row.journeyVersion);
  const run: Run = {
    engine,
    cj,
    enrollment: {
      id: row.id,
      reference: row.reference,
      customerId: row.customerId,
      seq: row.stepSeq,
      triggerAt: event!.occurredAt,
    },
    event: event!,
    customer: await loadCustomer(engine.db, row.customerId),
  };
  let stepId: string | undefined = row.currentStepId;
  while (stepId) {
    const cs = cj.steps.get(stepId);
    if (!cs)
      return fail(
        run,
        `step "${stepId}" is not in journey version ${row.journeyVersion.slice(0, 12)}`,
      );
    const exit = await exitDetail(run, engine.db);
    if (exit) return end(run, "exited", exit);
    const result = await runOne(run, cs);
    if (result.kind !== "next") return result;
    const next = result.goto;
    if (!next) return end(run, "completed", `finished after step "${stepId}"`);
    const at = result.at ?? engine.clock.now();
    const moved = await advance(run, next, at);
    if (!moved) return { kind: "idle" };
    if (at.getTime() > engine.clock.now().getTime()) {
      return { kind: "scheduled", enrollmentId, stepSeq: run.enrollment.seq, at };
    }
    stepId = next;
  }
  return { kind: "idle" };
}

type OneResult = { kind: "next"; goto?: string; at?: Date } | StepRunResult;

async function runOne(run: Run, cs: CompiledStep): Promise<OneResult> {
  const { cj, engine } = run;
  const step = cs.step;
  const after = () => nextStepId(cj, step.id);
  switch (step.kind) {
    case "wait":
      return {
        kind: "next",
        goto: after(),
        at: new Date(engine.clock.now().getTime() + step.ms / engine.tuning.timeScale),
      };
    case "branch": {
      const target = branchTarget(cj, cs, run.event, run.customer, run.enrollment);
      return { kind: "next", ...(target.goto !== undefined && { goto: target.goto }) };
    }
    case "exit":
      return { kind: "next" };
    case "points":
    case "reverse_points":
      return settle(run, step, await claimPoints(run, step));
    case "email":
    case "sms":
      return send(run, cs, step);
  }
}

function intentFor(run: Run, step: Step, channel: ActionIntent["channel"]): ActionIntent {
  const identity = {
    journeyId: run.cj.journey.id,
    stepId: step.id,
    customerId: run.enrollment.customerId,
    reference: run.enrollment.reference,
  };
  return {
    ...identity,
    key: actionKey(identity),
    enrollmentId: run.enrollment.id,
    stepSeq: run.enrollment.seq,
    channel,
    eventOccurredAt: run.event.occurredAt,
  };
}

function claimOptions(engine: Engine) {
  return {
    now: engine.clock.now(),
    workerId: engine.workerId,
    claimLeaseMs: engine.tuning.claimLeaseMs,
    callLeaseMs: engine.tuning.callLeaseMs,
  };
}

async function claimPoints(
  run: Run,
  step: Extract<Step, { kind: "points" | "reverse_points" }>,
): Promise<SettledClaim> {
  const intent = intentFor(run, step, "points");
  const order =
    step.kind === "points"
      ? { kind: "grant" as const, amount: step.amount, reason: step.reason }
      : {
          kind: "reverse" as const,
          reason: step.reason,
          target: { journeyId: step.journey, stepId: step.step },
          reverses: actionKey({
            journeyId: step.journey,
            stepId: step.step,
            customerId: intent.customerId,
            reference: intent.reference,
          }),
        };
  return grantPoints(run.engine.db, intent, order, claimOptions(run.engine), (tx) =>
    recheckExit(run, tx),
  );
}

async function send(
  run: Run,
  cs: CompiledStep,
  step: Extract<Step, { kind: "email" | "sms" }>,
): Promise<OneResult> {
  const { engine } = run;
  const intent = intentFor(run, step, step.kind);
  let rendered: Record<string, string> | undefined;
  let renderError: string | undefined;
  try {
    rendered = renderStep(cs, templateContext(run.cj, run.event, run.customer, run.enrollment));
  } catch (error) {
    renderError = (error as Error).message;
  }
  const claim = await claimAction(engine.db, intent, claimOptions(engine), async (tx) => {
    const exit = await recheckExit(run, tx);
    if (!exit.go) return exit;
    if (renderError)
      return { go: false, outcome: "skip", reason: "template_error", detail: renderError };
    return recheckPolicies(run, tx, intent, step.kind);
  });
  if (claim.kind !== "proceed") return settle(run, step, claim);

  await engine.failpoint?.("after_claim", intent.key);
  // Fresh profile: the address is the one in force now, not at enrollment.
  const customer = await loadCustomer(engine.db, intent.customerId);
  const started = await markCallStarted(
    engine.db,
    intent.key,
    claim.token,
    engine.workerId,
    engine.clock.now(),
  );
  if (!started)
    return { kind: "retry", at: engine.clock.now(), why: "a newer attempt took the action over" };
  let outcome: Outcome;
  const began = Date.now();
  try {
    const delivery =
      step.kind === "email"
        ? await engine.channels.email.send(
            emailMessage(engine, intent.key, customer, rendered!),
            intent.key,
          )
        : await engine.channels.sms.send(
            { to: customer.phone!, body: rendered!.body! } satisfies SmsMessage,
            intent.key,
          );
    outcome = { state: "sent", providerId: delivery.providerId };
  } catch (error) {
    outcome = classify(run, error, claim.attempt);
  }
  await engine.failpoint?.("after_call", intent.key);
  const recorded = await recordOutcome(engine.db, intent, claim.token, outcome, {
    now: engine.clock.now(),
    workerId: engine.workerId,
  });
  const fields = {
    key: intent.key,
    attempt: claim.attempt,
    ms: Date.now() - began,
    journey: intent.journeyId,
    step: intent.stepId,
  };
  await engine.failpoint?.("after_outcome", intent.key);
  if (!recorded) {
    engine.log.warn("outcome ignored: a newer attempt owns the action", {
      ...fields,
      outcome: outcome.state,
    });
    return { kind: "idle" };
  }
  if (outcome.state === "failed_retryable") {
    engine.log.warn("send failed, will retry", {
      ...fields,
      error: outcome.error,
      at: outcome.nextAttemptAt.toISOString(),
    });
    await setNextRun(run, outcome.nextAttemptAt);
    return { kind: "retry", at: outcome.nextAttemptAt, why: "retry backoff" };
  }
  if (outcome.state !== "sent")
    engine.log.warn(`send ${outcome.state}`, { ...fields, error: outcome.error });
  return { kind: "next", ...optionalGoto(run, step) };
}

function classify(run: Run, error: unknown, attempt: number): Outcome {
  const { tuning, clock } = run.engine;
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
        reason: "provider_refused",
        ...code,
      };
    case "in_doubt":
      return { state: "in_doubt", error: error.message, ...code };
  }
}

function emailMessage(
  engine: Engine,
  key: string,
  customer: CustomerView,
  r: Record<string, string>,
): EmailMessage {
  return {
    to: customer.email!,
    subject: r.subject!,
    ...(r.html !== undefined && { html: r.html }),
    ...(r.text !== undefined && { text: r.text }),
    messageId: `<${key}@${engine.messageIdDomain}>`,
  };
}

/** After a claim that did not proceed: move on, end, or come back later. */
function settle(run: Run, step: Step, claim: SettledClaim): OneResult | Promise<OneResult> {
  switch (claim.kind) {
    case "settled":
      return { kind: "next", ...optionalGoto(run, step) };
    case "wait":
      return setNextRun(run, claim.until).then(
        () => ({ kind: "retry", at: claim.until, why: claim.why }) as const,
      );
    case "stale":
      return { kind: "idle" };
    case "exited":
      return end(run, "exited", claim.detail);
  }
}

function optionalGoto(run: Run, step: Step): { goto?: string } {
  const next = nextStepId(run.cj, step.id);
  return next === undefined ? {} : { goto: next };
}

async function exitDetail(run: Run, db: Engine["db"] | Tx): Promise<string | undefined> {
  const types = run.cj.exits.map((e) => e.event);
  if (types.length === 0) return undefined;
  const candidates = await loadExitCandidates(
    db,
    run.enrollment.customerId,
    types,
    run.enrollment.triggerAt,
  );
  const exit = findExit(run.cj, candidates, run.customer, run.enrollment);
  return exit && `exit event ${exit.type} ${exit.source}/${exit.id}`;
}

async function recheckExit(run: Run, tx: Tx): Promise<Recheck> {
  const exit = await exitDetail(run, tx);
  return exit ? { go: false, outcome: "exited", detail: exit } : { go: true };
}

async function recheckPolicies(
  run: Run,
  tx: Tx,
  intent: ActionIntent,
  channel: "email" | "sms",
): Promise<Recheck> {
  const { engine, cj } = run;
  const facts = await loadSendFacts(
    tx,
    intent,
    cj.journey,
    engine.catalog.policies,
    channel,
    engine.clock.now(),
  );
  const verdict = evaluateSend(facts);
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

/** Moves the enrollment to `stepId`, due at `at`; false when another run moved it first. */
async function advance(run: Run, stepId: string, at: Date): Promise<boolean> {
  const { db, clock } = run.engine;
  const rows = await db.$executeRaw`
    UPDATE "Enrollment" SET "currentStepId" = ${stepId}, "stepSeq" = "stepSeq" + 1, "nextRunAt" = ${at},
      "updatedAt" = ${clock.now()}
    WHERE id = ${run.enrollment.id} AND status = 'active' AND "stepSeq" = ${run.enrollment.seq}`;
  if (rows === 0) return false;
  run.enrollment.seq += 1;
  return true;
}

/** Records when the current step should run again, so a lost timer is found by the sweep. */
async function setNextRun(run: Run, at: Date): Promise<void> {
  await run.engine.db.$executeRaw`
    UPDATE "Enrollment" SET "nextRunAt" = ${at}, "updatedAt" = ${run.engine.clock.now()}
    WHERE id = ${run.enrollment.id} AND status = 'active' AND "stepSeq" = ${run.enrollment.seq}`;
}

async function end(
  run: Run,
  status: "completed" | "exited" | "failed",
  reason: string,
): Promise<StepRunResult> {
  const { db, clock, workerId } = run.engine;
  const now = clock.now();
  await db.$transaction(async (tx) => {
    if (await endEnrollment(tx, run.enrollment.id, status, reason, now, run.enrollment.seq)) {
      await recordAudit(tx, {
        kind: status === "exited" ? "exited" : "completed",
        at: now,
        customerId: run.enrollment.customerId,
        journeyId: run.cj.journey.id,
        enrollmentId: run.enrollment.id,
        workerId,
        ...(status === "failed" && { rule: "failed" }),
        detail: { reason },
      });
    }
  }, TX_OPTIONS);
  return { kind: "idle" };
}

function fail(run: Run, reason: string): Promise<StepRunResult> {
  run.engine.log.error("enrollment failed", {
    enrollment: run.enrollment.id,
    journey: run.cj.journey.id,
    reason,
  });
  return end(run, "failed", reason);
}
