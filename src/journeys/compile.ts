// A parsed journey compiled for running: conditions become predicates and templates become
// renderers, once per journey version, so the engine never parses text on its hot path.
import type { Predicate } from "./expressions";
import { compileCondition } from "./expressions";
import type { Renderer } from "./templates";
import { compileTemplate } from "./templates";
import type { Condition, Journey, Step, Template } from "./types";

export interface CompiledJourney {
  journey: Journey;
  trigger?: Predicate;
  reference?: Renderer;
  exits: { event: string; when?: Predicate }[];
  steps: Map<string, CompiledStep>;
  /** Step ids in file order, for "the next step". */
  order: string[];
}

export interface CompiledStep {
  step: Step;
  /** Templates by field name: subject, html, text (email) or body (sms). */
  templates: Record<string, Renderer>;
  cases: { when: Predicate; goto: string }[];
}

/** Compiles every condition and template of a journey that passed validation. */
export function compileJourney(journey: Journey): CompiledJourney {
  const predicate = (c?: Condition) => (c ? compileCondition(c.source) : undefined);
  const steps = new Map<string, CompiledStep>();
  for (const step of journey.steps) {
    const templates: Record<string, Renderer> = {};
    const add = (name: string, t?: Template) => {
      if (t) templates[name] = compileTemplate(t.source);
    };
    if (step.kind === "email") {
      add("subject", step.subject);
      add("html", step.html);
      add("text", step.text);
    } else if (step.kind === "sms") {
      add("body", step.body);
    }
    const cases =
      step.kind === "branch"
        ? step.cases.map((c) => ({ when: compileCondition(c.when.source), goto: c.goto }))
        : [];
    steps.set(step.id, { step, templates, cases });
  }
  return {
    journey,
    ...optional("trigger", predicate(journey.trigger.when)),
    ...optional(
      "reference",
      journey.entry.reference && compileTemplate(journey.entry.reference.source),
    ),
    exits: journey.exit.map((rule) => ({
      event: rule.event,
      ...optional("when", predicate(rule.when)),
    })),
    steps,
    order: journey.steps.map((s) => s.id),
  };
}

function optional<K extends string, V>(key: K, value: V | undefined | ""): Partial<Record<K, V>> {
  return value === undefined || value === "" ? {} : ({ [key]: value } as Record<K, V>);
}
