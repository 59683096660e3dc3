// A backfill's dry run: what each step would do for one event, decided by the same functions
// the engine uses (entry policy, exits, branches, ledger keys, send policies), read-only, and
// counting the sends it would make so later events of the same customer see them.
import { sqlOf } from "../db/sql";
import type { Tx } from "../db/client";
import type { CustomerView, EnrollmentView, EventView } from "../engine/context";
import { branchTarget, findExit, nextStepId } from "../engine/decide";
import type { Engine } from "../engine/engine";
import { checkEntry } from "../engine/intake";
import { actionKey } from "../engine/keys";
import { findExitEvent } from "../engine/rows";
import type { CompiledJourney } from "../journeys/compile";
import type { SendChannel, Step } from "../journeys/types";
import { loadSendFacts, sendFactsQuery } from "../ledger/facts";
import { reversedFirst } from "../ledger/points";
import { evaluateSend } from "../policies/evaluate";

export interface StepTally {
  stepId: string;
  kind: Step["kind"];
  wouldSend: number;
  /** Why not, by reason: already_sent, no_consent, frequency_cap, resend_policy, exit, entry_policy, … */
  suppressed: Record<string, number>;
}

export interface Tally {
  events: number;
  /** enrolled, or the entry rule that refused (cooldown, already_enrolled_…, trigger_condition). */
  entry: Record<string, number>;
  steps: StepTally[];
}

export function emptyTally(cj: CompiledJourney): Tally {
  return {
    events: 0,
    entry: {},
    steps: cj.journey.steps
      .filter((s) => ["email", "sms", "points", "reverse_points"].includes(s.kind))
      .map((s) => ({ stepId: s.id, kind: s.kind, wouldSend: 0, suppressed: {} })),
  };
}

/** The steps an enrollment would walk: branches followed, waits assumed to pass. */
function path(
  cj: CompiledJourney,
  event: EventView,
  customer: CustomerView,
  enrollment: EnrollmentView,
): Step[] {
  const steps: Step[] = [];
  const seen = new Set<string>();
  let id: string | undefined = cj.order[0];
  while (id && !seen.has(id)) {
    seen.add(id);
    const cs = cj.steps.get(id)!;
    steps.push(cs.step);
    id =
      cs.step.kind === "branch"
        ? branchTarget(cj, cs, event, customer, enrollment).goto
        : nextStepId(cj, id);
  }
  return steps;
}

/**
 * What the dry run has counted so far, which the ledger does not have: later events see it as
 * they would see it stored in a real run.
 */
export interface Hypothetical {
  /** Sends per customer: they count for caps and resend policies. */
  sends: Map<string, { journeyId: string; stepId: string; channel: SendChannel }[]>;
  /** Enrollments per customer: they count for entry policies and cooldowns. */
  enrollments: Map<string, { journeyId: string; reference: string; occurredAt: Date }[]>;
  /** Action keys it would send or grant: a later enrollment under the same key finds them. */
  keys: Set<string>;
  /**
   * Events of the journey's exit types that the real run would have stored by the time its
   * steps run (a file's, anywhere in it), per customer.
   */
  exits: Map<string, EventView[]>;
}

export function emptyHypothetical(): Hypothetical {
  return { sends: new Map(), enrollments: new Map(), keys: new Set(), exits: new Map() };
}

/** The entry the dry run's own earlier enrollments refuse, as checkEntry would once stored. */
function refusedByEarlier(
  cj: CompiledJourney,
  event: EventView,
  customerId: string,
  reference: string,
  hypothetical: Hypothetical,
): string | undefined {
  const { journey } = cj;
  const earlier = (hypothetical.enrollments.get(customerId) ?? []).filter(
    (e) => e.journeyId === journey.id,
  );
  if (earlier.some((e) => e.reference === reference))
    return `already_enrolled_${journey.entry.once}`;
  const cooldown = journey.entry.cooldownMs;
  if (
    cooldown !== undefined &&
    earlier.some((e) => Math.abs(e.occurredAt.getTime() - event.occurredAt.getTime()) < cooldown)
  )
    return "cooldown";
  return undefined;
}

export async function simulateEvent(
  engine: Engine,
  tx: Tx,
  cj: CompiledJourney,
  event: EventView,
  customer: CustomerView,
  tally: Tally,
  hypothetical: Hypothetical,
): Promise<void> {
  tally.events += 1;
  const bump = (stepId: string, reason?: string) => {
    const t = tally.steps.find((s) => s.stepId === stepId);
    if (!t) return;
    if (reason) t.suppressed[reason] = (t.suppressed[reason] ?? 0) + 1;
    else t.wouldSend += 1;
  };
  const entry = await checkEntry(sqlOf(tx), cj, event, customer);
  const reference =
    "reference" in entry
      ? entry.reference
      : typeof entry.audit.detail?.reference === "string"
        ? entry.audit.detail.reference
        : "";
  const steps = path(cj, event, customer, { id: 0n, reference });
  const refused =
    "audit" in entry
      ? (entry.audit.rule ?? "refused")
      : refusedByEarlier(cj, event, customer.id, reference, hypothetical);
  if (refused) {
    tally.entry[refused] = (tally.entry[refused] ?? 0) + 1;
    // An event of another type is not this journey's: its steps are not counted.
    if (refused === "other_event_type") return;
    for (const s of steps) {
      // Already enrolled under this reference: its sends have the same keys as this one's.
      const key = actionKey({
        journeyId: cj.journey.id,
        stepId: s.id,
        customerId: customer.id,
        reference,
      });
      const sent =
        refused.startsWith("already_enrolled") &&
        (hypothetical.keys.has(key) || (await tx.action.count({ where: { key } })) > 0);
      bump(s.id, sent ? "already_sent" : "entry_policy");
    }
    return;
  }
  tally.entry.enrolled = (tally.entry.enrolled ?? 0) + 1;
  const enrollments = hypothetical.enrollments.get(customer.id) ?? [];
  enrollments.push({ journeyId: cj.journey.id, reference, occurredAt: event.occurredAt });
  hypothetical.enrollments.set(customer.id, enrollments);
  const enrollment = { id: 0n, reference };
  const fileExits = (hypothetical.exits.get(customer.id) ?? []).filter(
    (e) => e.occurredAt >= event.occurredAt,
  );
  if (
    findExit(cj, fileExits, customer, enrollment) ||
    (await findExitEvent(tx, cj, customer, enrollment, event.occurredAt))
  ) {
    for (const s of steps) bump(s.id, "exit");
    return;
  }
  const mine = hypothetical.sends.get(customer.id) ?? [];
  hypothetical.sends.set(customer.id, mine);
  const now = engine.clock.now();
  for (const step of steps) {
    if (!["email", "sms", "points", "reverse_points"].includes(step.kind)) continue;
    const key = actionKey({
      journeyId: cj.journey.id,
      stepId: step.id,
      customerId: customer.id,
      reference,
    });
    const [existing] = await tx.$queryRaw<
      { state: string }[]
    >`SELECT state::text AS state FROM "Action" WHERE key = ${key}`;
    if ((existing && existing.state !== "failed_retryable") || hypothetical.keys.has(key)) {
      bump(step.id, "already_sent");
      continue;
    }
    if (step.kind === "points") {
      if (await reversedFirst(sqlOf(tx), customer.id, key)) {
        bump(step.id, "reversed_before_grant");
        continue;
      }
      bump(step.id);
      hypothetical.keys.add(key);
      continue;
    }
    if (step.kind === "reverse_points") {
      const target = actionKey({
        journeyId: step.journey,
        stepId: step.step,
        customerId: customer.id,
        reference,
      });
      const granted = await tx.pointsEntry.count({ where: { actionKey: target } });
      const reversible = granted > 0 || hypothetical.keys.has(target);
      bump(step.id, reversible ? undefined : "nothing_to_reverse");
      if (reversible) hypothetical.keys.add(key);
      continue;
    }
    if (step.kind !== "email" && step.kind !== "sms") continue;
    const facts = await loadSendFacts(
      sqlOf(tx),
      sendFactsQuery(
        { key, customerId: customer.id, stepId: step.id },
        cj.journey,
        engine.catalog.policies,
        step.kind,
        now,
      ),
    );
    facts.recentSends.push(
      ...mine.map((m) => ({ journeyId: m.journeyId, channel: m.channel, at: now })),
    );
    if (mine.some((m) => m.journeyId === cj.journey.id && m.stepId === step.id))
      facts.lastSendOfStep = now;
    const verdict = evaluateSend(facts);
    // A delay (quiet hours, on_cap: delay) still sends, later.
    if (verdict.allow || "delayUntil" in verdict) {
      bump(step.id);
      hypothetical.keys.add(key);
      mine.push({ journeyId: cj.journey.id, stepId: step.id, channel: step.kind });
    } else {
      bump(step.id, verdict.reason);
    }
  }
}
