// The parsed, validated journey: what the engine consumes. Plain JSON-serialisable data (it is
// stored with each journey version); conditions and templates keep their source text and are
// compiled once by `compileJourney` (compile.ts).

export type Category = "marketing" | "transactional";
export type SendChannel = "email" | "sms";
export type EntryOnce = "per_customer" | "per_reference" | "every_event";

/** A condition in the expression language (CEL), e.g. `event.properties.total > 20`. */
export interface Condition {
  source: string;
}

/** A Liquid template, inline or loaded from a file under the journeys directory. */
export interface Template {
  source: string;
  /** Path relative to the journeys directory when the template came from a file. */
  file?: string;
}

export interface Trigger {
  event: string;
  when?: Condition;
}

export interface Entry {
  once: EntryOnce;
  /** Liquid template that names the reference, required for `per_reference`. */
  reference?: Template;
  cooldownMs?: number;
}

export interface ExitRule {
  event: string;
  when?: Condition;
}

/** Per-campaign resend policy of a send step (DESIGN §4). */
export type ResendPolicy =
  | { kind: "per_reference" }
  | { kind: "never" }
  | { kind: "after"; ms: number }
  | { kind: "on_reopt_in" };

interface StepBase {
  id: string;
  /** `exit: true` ends the enrollment once this step has run. */
  exit: boolean;
}

export interface WaitStep extends StepBase {
  kind: "wait";
  ms: number;
}

export interface EmailStep extends StepBase {
  kind: "email";
  subject: Template;
  html?: Template;
  text?: Template;
  resend: ResendPolicy;
}

export interface SmsStep extends StepBase {
  kind: "sms";
  body: Template;
  resend: ResendPolicy;
}

/** Grants (positive) or takes back (negative) loyalty points. */
export interface PointsStep extends StepBase {
  kind: "points";
  amount: number;
  reason: string;
}

/** Takes back exactly what another points step granted for the same customer and reference. */
export interface ReversePointsStep extends StepBase {
  kind: "reverse_points";
  journey: string;
  step: string;
  reason: string;
}

export interface BranchStep extends StepBase {
  kind: "branch";
  cases: { when: Condition; goto: string }[];
  otherwise?: string;
}

/** A step that only ends the enrollment. */
export interface ExitStep extends StepBase {
  kind: "exit";
}

export type Step =
  WaitStep | EmailStep | SmsStep | PointsStep | ReversePointsStep | BranchStep | ExitStep;
export type StepKind = Step["kind"];

/** At most `max` sends per `windowMs` per customer, on one channel or across channels. */
export interface Cap {
  id: string;
  channel: SendChannel | "any";
  max: number;
  windowMs: number;
}

export type OnCap = "skip" | "delay";

/** A daily window, in minutes after local midnight, in the customer's timezone. */
export interface QuietHours {
  startMinute: number;
  endMinute: number;
}

export interface Journey {
  id: string;
  name: string;
  description?: string;
  category: Category;
  /** The consent topic a customer must have granted on the send's channel. */
  consent?: string;
  trigger: Trigger;
  entry: Entry;
  exit: ExitRule[];
  steps: Step[];
  /** Caps that count only this journey's sends, on top of the global ones. */
  caps: Cap[];
  onCap?: OnCap;
  /** sha256 of the YAML file's bytes: the journey's version. */
  version: string;
  /** Path relative to the journeys directory. */
  file: string;
}

export interface Policies {
  caps: Cap[];
  onCap: OnCap;
  quietHours: Partial<Record<SendChannel, QuietHours>>;
  /** Used for quiet hours when a customer has no timezone. */
  defaultTimezone: string;
}

export const DEFAULT_POLICIES: Policies = {
  caps: [],
  onCap: "skip",
  quietHours: {},
  defaultTimezone: "UTC",
};

/** Variables a condition may read. */
export const CONDITION_ROOTS = ["event", "customer", "enrollment"] as const;
/** Variables a template may read. */
export const TEMPLATE_ROOTS = [
  "event",
  "customer",
  "enrollment",
  "journey",
  "points",
  "unsubscribe_url",
] as const;

/** A step without its id and options: what each kind contributes. */
export type StepBody = Step extends infer S
  ? S extends Step
    ? Omit<S, "id" | "exit">
    : never
  : never;
