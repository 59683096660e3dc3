// Running an enrollment's current step: waits and branches move it along, sends and points go
// through the ledger protocol. Immediate steps run in one go; a wait or a retry hands back a
// time, and the queue edge schedules the next run.
import { poolOf } from "../db/sql";
import type { CompiledStep } from "../journeys/compile";
import type { Step } from "../journeys/types";
import type { SettledClaim } from "../ledger/actions";
import { grantPoints } from "../ledger/points";
import { branchTarget, nextStepId } from "./decide";
import type { Engine } from "./engine";
import type { EnrollmentEnd } from "../ledger/enrollments";
import { endEnrollmentLocked } from "../ledger/enrollments";
import { actionKey } from "./keys";
import type { Run, RunRow } from "./run";
import {
  claimOptions,
  exitDetail,
  intentFor,
  recheckExit,
  runOf,
  setNextRun,
  trace,
  traceSettled,
} from "./run";
import type { SendClaim } from "./send";
import { runSend } from "./send";

export type StepRunResult =
  /** Nothing to do: the enrollment ended or moved on (a stale or duplicate job). */
  | { kind: "idle" }
  /** The enrollment's next step is due at `at` (after a wait). */
  | { kind: "scheduled"; enrollmentId: bigint; stepSeq: number; at: Date }
  /**
   * Run the enrollment's current step (position `stepSeq`, when the run got that far) again at
   * `at`: retry backoff, or another attempt holds the action.
   */
  | { kind: "retry"; at: Date; why: string; stepSeq?: number };

/**
 * Runs enrollment `enrollmentId` from position `stepSeq`; stale positions are a no-op. `loaded`
 * is the row as the caller has just written it (a new enrollment), saving its read: what it
 * holds is re-checked under the customer lock before anything is sent, as a read's would be.
 */
export async function runStep(
  engine: Engine,
  enrollmentId: bigint,
  stepSeq: number,
  loaded?: RunRow,
  /** The first step's claim, made by the transaction that enrolled it (with `loaded`). */
  claimed?: SendClaim,
): Promise<StepRunResult> {
  const row = loaded ?? (await loadRun(engine, enrollmentId));
  if (!row || row.status !== "active" || row.stepSeq !== stepSeq || !row.currentStepId)
    return { kind: "idle" };
  const run = runOf(engine, await engine.catalog.version(row.journeyId, row.journeyVersion), {
    enrollmentId,
    row,
  });
  const { cj } = run;
  let stepId: string | undefined = row.currentStepId;
  while (stepId) {
    const cs = cj.steps.get(stepId);
    if (!cs)
      return fail(
        run,
        `step "${stepId}" is not in journey version ${row.journeyVersion.slice(0, 12)}`,
      );
    // A claim made at enrollment re-checked the exit events under the customer lock.
    const exit = claimed ? undefined : await exitDetail(run, engine.db);
    if (exit) return end(run, "exited", exit);
    const result = await runOne(run, cs, claimed);
    claimed = undefined;
    if (result.kind === "retry") return { ...result, stepSeq: run.enrollment.seq };
    if (result.kind !== "next") return result;
    const next = result.goto;
    if (!next) return end(run, "completed", finished(stepId));
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

/** The enrollment with its trigger event and customer, in one round trip. */
async function loadRun(engine: Engine, enrollmentId: bigint): Promise<RunRow | undefined> {
  const [row] = await poolOf(engine.db).shared<RunRow>`
    SELECT n.status, n."stepSeq", n."currentStepId", n."journeyId", n."journeyVersion", n.reference,
      n."customerId", n."triggerEventId", t."eventId", t.source, t.type, t."occurredAt", t.properties,
      c.email, c.phone, c.timezone, c.attributes
    FROM "Enrollment" n
    JOIN "Event" t ON t.id = n."triggerEventId"
    JOIN "Customer" c ON c.id = n."customerId"
    WHERE n.id = ${enrollmentId}`;
  return row;
}

type OneResult = { kind: "next"; goto?: string; at?: Date } | StepRunResult;

async function runOne(run: Run, cs: CompiledStep, claimed?: SendClaim): Promise<OneResult> {
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
    case "reverse_points": {
      const claim = await claimPoints(run, step);
      if (claim.kind === "settled") traceSettled(run, step.id, claim, step.kind);
      return settle(run, step, claim);
    }
    case "email":
    case "sms": {
      // A last step's outcome completes the run in the same statement.
      const last = nextStepId(cj, step.id) === undefined;
      const sent = await runSend(
        run,
        cs,
        step,
        claimed,
        last ? () => completed(run, step.id) : undefined,
      );
      switch (sent.kind) {
        case "done":
          return { kind: "next", ...optionalGoto(run, step) };
        case "ended":
          return { kind: "idle" };
        case "exited":
          return end(run, "exited", sent.detail);
        case "retry":
        case "idle":
          return sent;
      }
    }
  }
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

/** After a claim that did not proceed: move on, end, or come back later. */
function settle(run: Run, step: Step, claim: SettledClaim): OneResult | Promise<OneResult> {
  switch (claim.kind) {
    case "settled":
      return { kind: "next", ...optionalGoto(run, step) };
    case "wait":
      trace(run, "waiting", { step: step.id, until: claim.until.toISOString() });
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

/**
 * Moves the enrollment to step `to`, due at `at`; false when something else moved it first:
 * another run, or a person who handed the step's action back for a retry after this run found
 * it settled (`sendonce resolve --not-sent`, which moves the enrollment to a new position).
 */
async function advance(run: Run, to: string, at: Date): Promise<boolean> {
  const { db, clock } = run.engine;
  const rows = await poolOf(db).shared.run`
    UPDATE "Enrollment" SET "currentStepId" = ${to}, "stepSeq" = "stepSeq" + 1, "nextRunAt" = ${at},
      "updatedAt" = ${clock.now()}
    WHERE id = ${run.enrollment.id} AND status = 'active' AND "stepSeq" = ${run.enrollment.seq}`;
  if (rows === 0) return false;
  run.enrollment.seq += 1;
  return true;
}

async function end(
  run: Run,
  status: "completed" | "exited" | "failed",
  reason: string,
): Promise<StepRunResult> {
  trace(run, `enrollment ${status}`, { reason });
  await endEnrollmentLocked(run.engine.db, run.enrollment.customerId, runEnd(run, status, reason));
  return { kind: "idle" };
}

/** This run's enrollment ended at its position, with the audit entry saying how. */
function runEnd(
  run: Run,
  status: "completed" | "exited" | "failed",
  reason: string,
): EnrollmentEnd {
  const { clock, workerId } = run.engine;
  const now = clock.now();
  return {
    enrollmentId: run.enrollment.id,
    status,
    reason,
    now,
    expectedSeq: run.enrollment.seq,
    audit: {
      kind: status === "exited" ? "exited" : "completed",
      at: now,
      customerId: run.enrollment.customerId,
      journeyId: run.cj.journey.id,
      enrollmentId: run.enrollment.id,
      workerId,
      ...(status === "failed" && { rule: "failed" }),
      detail: { reason },
    },
  };
}

const finished = (stepId: string) => `finished after step "${stepId}"`;

/** How a run completes after its last step, `stepId`. */
const completed = (run: Run, stepId: string) => runEnd(run, "completed", finished(stepId));

function fail(run: Run, reason: string): Promise<StepRunResult> {
  run.engine.log.error("enrollment failed", {
    enrollment: run.enrollment.id,
    journey: run.cj.journey.id,
    reason,
  });
  return end(run, "failed", reason);
}
