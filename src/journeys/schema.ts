// The raw shapes of journey and policy YAML, validated with zod. Durations, templates and
// conditions are checked here only as strings; their contents are checked in parse.ts, where
// a problem can be placed at its character.
import { z } from "zod";
import { isDurationError, parseDuration } from "./duration";

export const idSchema = z
  .string()
  .regex(
    /^[a-z0-9][a-z0-9_-]*$/,
    "use lowercase letters, digits, '-' and '_', starting with a letter or digit",
  )
  .max(64, "at most 64 characters");

const eventType = z.string().min(1, "name the event type, e.g. order.completed");

export const durationSchema = z.string().transform((text, ctx) => {
  const parsed = parseDuration(text);
  if (isDurationError(parsed)) {
    ctx.issues.push({ code: "custom", message: parsed.error, input: text });
    return z.NEVER;
  }
  return parsed.ms;
});

const timeOfDay = z
  .string()
  .regex(/^([01]\d|2[0-3]):[0-5]\d$/, 'use 24-hour "HH:MM", e.g. "21:00"')
  .transform((t) => Number(t.slice(0, 2)) * 60 + Number(t.slice(3)));

export const timezoneSchema = z.string().refine(isTimezone, {
  message: 'not an IANA timezone, e.g. "Europe/Berlin" or "UTC"',
});

export function isTimezone(name: string): boolean {
  try {
    new Intl.DateTimeFormat("en", { timeZone: name });
    return true;
  } catch {
    return false;
  }
}

export const triggerSchema = z.strictObject({
  event: eventType,
  when: z.string().min(1).optional(),
});

export const entrySchema = z.strictObject({
  once: z.enum(["per_customer", "per_reference", "every_event"]).default("per_customer"),
  reference: z.string().min(1).optional(),
  cooldown: durationSchema.optional(),
});

export const exitRuleSchema = z.strictObject({
  event: eventType,
  when: z.string().min(1).optional(),
});

export const capSchema = z.strictObject({
  id: idSchema.optional(),
  channel: z.enum(["email", "sms", "any"]).default("any"),
  max: z.number().int().positive("max must be at least 1"),
  per: durationSchema,
});

export const journeySchema = z.strictObject({
  id: idSchema,
  name: z.string().min(1),
  description: z.string().optional(),
  category: z.enum(["marketing", "transactional"]).default("marketing"),
  consent: idSchema.optional(),
  trigger: triggerSchema,
  entry: entrySchema.default({ once: "per_customer" }),
  exit: z.array(exitRuleSchema).default([]),
  caps: z.array(capSchema).default([]),
  on_cap: z.enum(["skip", "delay"]).optional(),
  steps: z.array(z.record(z.string(), z.unknown())).min(1, "a journey needs at least one step"),
});
export type RawJourney = z.infer<typeof journeySchema>;

// Step options every kind accepts, beside its one kind key.
export const stepOptionsSchema = z.strictObject({
  id: idSchema,
  description: z.string().optional(),
  exit: z.boolean().optional(),
  resend: z
    .union([
      z.enum(["per_reference", "never", "on_reopt_in"]),
      z.strictObject({ after: durationSchema }),
    ])
    .optional(),
});

export const waitSchema = durationSchema;
export const emailSchema = z.strictObject({
  subject: z.string().min(1),
  template: z.string().min(1).optional(),
  html: z.string().min(1).optional(),
  text: z.string().min(1).optional(),
});
export const smsSchema = z.strictObject({ body: z.string().min(1) });
export const pointsSchema = z.strictObject({
  amount: z
    .number()
    .int()
    .refine((n) => n !== 0, "amount must not be 0"),
  reason: idSchema,
});
export const reversePointsSchema = z.strictObject({
  reverse: z.strictObject({ journey: idSchema.optional(), step: idSchema }),
  reason: idSchema,
});
export const branchCaseSchema = z.strictObject({ when: z.string().min(1), goto: idSchema });
export const branchOtherwiseSchema = z.strictObject({ otherwise: idSchema });
export const branchSchema = z.array(z.record(z.string(), z.unknown())).min(1);

/** Step kinds and the schema of each kind's value. */
export const STEP_KINDS = ["wait", "email", "sms", "points", "branch"] as const;
export type RawStepKind = (typeof STEP_KINDS)[number];

const quietHoursSchema = z.strictObject({ start: timeOfDay, end: timeOfDay });

export const policiesSchema = z.strictObject({
  caps: z.array(capSchema).default([]),
  on_cap: z.enum(["skip", "delay"]).default("skip"),
  quiet_hours: z
    .strictObject({ email: quietHoursSchema.optional(), sms: quietHoursSchema.optional() })
    .default({}),
  default_timezone: timezoneSchema.default("UTC"),
});
export type RawPolicies = z.infer<typeof policiesSchema>;

/** The fields an object at a path accepts, for "did you mean" on an unknown field. */
export function knownFields(
  root: "journey" | "policies",
  path: readonly (string | number)[],
): string[] {
  const pattern = path.map((s) => (typeof s === "number" ? "*" : s)).join(".");
  const table: Record<string, z.ZodObject> =
    root === "journey"
      ? {
          "": journeySchema,
          trigger: triggerSchema,
          entry: entrySchema,
          "exit.*": exitRuleSchema,
          "caps.*": capSchema,
        }
      : {
          "": policiesSchema,
          "caps.*": capSchema,
          "quiet_hours.email": quietHoursSchema,
          "quiet_hours.sms": quietHoursSchema,
        };
  const schema = table[pattern];
  return schema ? Object.keys(schema.shape) : [];
}
