// The pure core of the engine: given an event, a customer, an enrollment and a compiled
// journey, decide. No database, no queue, no clock: those live in intake.ts and runner.ts.
import type { CompiledJourney, CompiledStep } from "../journeys/compile";
import type { TemplateContext } from "../journeys/templates";
import type { CustomerView, EnrollmentView, EventView } from "./context";
import { conditionContext, customerData, eventData } from "./context";

export type EntryDecision =
  { enroll: true; reference: string } | { enroll: false; rule: string; detail?: string };

/** Whether an event enrolls a customer, and under which reference (the entry policy). */
export function decideEntry(
  cj: CompiledJourney,
  event: EventView,
  customer: CustomerView,
): EntryDecision {
  // Live events are matched by type before they get here; a backfill's file may hold others.
  if (event.type !== cj.journey.trigger.event) return { enroll: false, rule: "other_event_type" };
  if (cj.trigger) {
    const result = cj.trigger(conditionContext(event, customer));
    if (!result.value) {
      return {
        enroll: false,
        rule: "trigger_condition",
        ...(result.error && { detail: result.error }),
      };
    }
  }
  switch (cj.journey.entry.once) {
    case "per_customer":
      return { enroll: true, reference: "" };
    case "every_event":
      return { enroll: true, reference: `${event.source}/${event.id}` };
    case "per_reference": {
      let reference: string;
      try {
        reference = cj.reference!(templateContext(cj, event, customer)).trim();
      } catch (error) {
        // The journey's own mistake: it enrolls no one, and the event goes on to the others.
        return { enroll: false, rule: "template_error", detail: (error as Error).message };
      }
      // An empty reference would silently merge every cart into one enrollment.
      if (reference === "") return { enroll: false, rule: "empty_reference" };
      return { enroll: true, reference };
    }
  }
}

/** The first exit event that applies to this enrollment, if any. */
export function findExit(
  cj: CompiledJourney,
  candidates: EventView[],
  customer: CustomerView,
  enrollment: EnrollmentView,
): EventView | undefined {
  return candidates.find((event) =>
    cj.exits.some(
      (rule) =>
        rule.event === event.type &&
        (!rule.when || rule.when(conditionContext(event, customer, enrollment)).value),
    ),
  );
}

/** Where an enrollment goes after a step: the next step in the file, or nowhere. */
export function nextStepId(cj: CompiledJourney, stepId: string): string | undefined {
  const step = cj.steps.get(stepId)!.step;
  if (step.exit) return undefined;
  return cj.order[cj.order.indexOf(stepId) + 1];
}

/** The step a branch jumps to; with no match and no `otherwise`, the next step. */
export function branchTarget(
  cj: CompiledJourney,
  cs: CompiledStep,
  event: EventView,
  customer: CustomerView,
  enrollment: EnrollmentView,
): { goto?: string; matched: string } {
  const ctx = conditionContext(event, customer, enrollment);
  for (const c of cs.cases) {
    if (c.when(ctx).value) return { goto: c.goto, matched: c.goto };
  }
  const step = cs.step;
  if (step.kind === "branch" && step.otherwise)
    return { goto: step.otherwise, matched: "otherwise" };
  const next = nextStepId(cj, step.id);
  return { ...(next !== undefined && { goto: next }), matched: "fall_through" };
}

export function templateContext(
  cj: CompiledJourney,
  event: EventView,
  customer: CustomerView,
  enrollment?: EnrollmentView,
  extra: TemplateContext = {},
): TemplateContext {
  return {
    event: eventData(event),
    customer: customerData(customer),
    journey: { id: cj.journey.id, name: cj.journey.name },
    ...(enrollment && { enrollment: { reference: enrollment.reference } }),
    ...extra,
  };
}

/** Renders every template of a send step. */
export function renderStep(cs: CompiledStep, ctx: TemplateContext): Record<string, string> {
  return Object.fromEntries(
    Object.entries(cs.templates).map(([name, render]) => [name, render(ctx)]),
  );
}
