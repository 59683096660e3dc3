// One run of an enrollment: what the step runners share.
import type { Sql } from "../db/sql";
import type { CompiledJourney } from "../journeys/compile";
import type { Step } from "../journeys/types";
import type { ActionIntent, ClaimOptions, Recheck, SettledClaim } from "../ledger/actions";
import type { CustomerView, EnrollmentView, EventView } from "./context";
import type { Fields } from "../log";
import type { Engine } from "./engine";
import { actionKey } from "./keys";
import { findExitEvent, toCustomerView, toEventView } from "./rows";

export interface Run {
  engine: Engine;
  cj: CompiledJourney;
  enrollment: EnrollmentView & { customerId: string; seq: number; triggerAt: Date };
  event: EventView;
  customer: CustomerView;
}

/** One line of the verbose log about this run: ids only, never an address or content. */
export function trace(run: Run, what: string, fields: Fields = {}): void {
  run.engine.log.debug(what, {
    customer: run.enrollment.customerId,
    journey: run.cj.journey.id,
    enrollment: run.enrollment.id,
    ...fields,
  });
}

/** The verbose log's line for a claim that settled without a provider call. */
export function traceSettled(
  run: Run,
  stepId: string,
  claim: Extract<SettledClaim, { kind: "settled" }>,
  kind?: Step["kind"],
): void {
  // A points step settles `sent` in its claim: the points are granted (or reversed).
  const what = claim.duplicate
    ? "duplicate suppressed"
    : claim.state === "sent"
      ? `points ${kind === "reverse_points" ? "reversed" : "granted"}`
      : claim.state;
  trace(run, what, {
    step: stepId,
    ...(claim.duplicate && { state: claim.state }),
    ...(claim.reason !== null && { reason: claim.reason }),
  });
}

/** An enrollment with its trigger event and customer. */
export interface RunRow {
  status: string;
  stepSeq: number;
  currentStepId: string | null;
  journeyId: string;
  journeyVersion: string;
  reference: string;
  customerId: string;
  triggerEventId: bigint;
  eventId: string;
  source: string;
  type: string;
  occurredAt: Date;
  properties: unknown;
  email: string | null;
  phone: string | null;
  timezone: string | null;
  attributes: unknown;
}

/** The run of enrollment `enrollmentId`, as `row` has it, in journey version `cj`. */
export function runOf(
  engine: Engine,
  cj: CompiledJourney,
  { enrollmentId, row }: { enrollmentId: bigint; row: RunRow },
): Run {
  return {
    engine,
    cj,
    enrollment: {
      id: enrollmentId,
      reference: row.reference,
      customerId: row.customerId,
      seq: row.stepSeq,
      triggerAt: row.occurredAt,
    },
    event: toEventView({ ...row, id: row.triggerEventId }),
    customer: toCustomerView({
      id: row.customerId,
      email: row.email,
      phone: row.phone,
      timezone: row.timezone,
      attributes: row.attributes,
    }),
  };
}

export function intentFor(run: Run, step: Step, channel: ActionIntent["channel"]): ActionIntent {
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

export function claimOptions(engine: Engine): ClaimOptions {
  return {
    now: engine.clock.now(),
    workerId: engine.workerId,
    claimLeaseMs: engine.tuning.claimLeaseMs,
    callLeaseMs: engine.tuning.callLeaseMs,
  };
}

export async function exitDetail(run: Run, db: Engine["db"] | Sql): Promise<string | undefined> {
  const exit = await findExitEvent(
    db,
    run.cj,
    run.customer,
    run.enrollment,
    run.enrollment.triggerAt,
  );
  return exit && `exit event ${exit.type} ${exit.source}/${exit.id}`;
}

export async function recheckExit(run: Run, tx: Sql): Promise<Recheck> {
  const exit = await exitDetail(run, tx);
  return exit ? { go: false, outcome: "exited", detail: exit } : { go: true };
}

/** Records when the current step should run again, so a lost timer is found by the sweep. */
export async function setNextRun(run: Run, at: Date): Promise<void> {
  await run.engine.db.$executeRaw`
    UPDATE "Enrollment" SET "nextRunAt" = ${at}, "updatedAt" = ${run.engine.clock.now()}
    WHERE id = ${run.enrollment.id} AND status = 'active' AND "stepSeq" = ${run.enrollment.seq}`;
}
