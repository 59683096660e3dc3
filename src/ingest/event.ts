// The customer event as it arrives (HTTP, file, backfill, queue): validated once here into a
// ParsedEvent; everything after trusts the type.
import { createHash } from "node:crypto";
import { z } from "zod";
import { isTimezone } from "../journeys/schema";
import { refineStorable } from "./storable";

const consentStatus = z.enum(["granted", "revoked"]);
/** A consent topic; "*" is the channel-wide opt-out a STOP records, not a topic to set. */
const topicSchema = z
  .string()
  .min(1, "must name the consent topic")
  .max(64)
  .refine((t) => t !== "*", '"*" is reserved for the channel-wide opt-out a STOP records');
const consentsSchema = z.partialRecord(
  z.enum(["email", "sms"]),
  z.record(topicSchema, consentStatus),
);

/** Profile traits an event may carry, applied as of the event's occurredAt. */
export const customerTraitsSchema = z.strictObject({
  email: z.email("not an email address").optional(),
  phone: z
    .string()
    .regex(/^\+[1-9]\d{6,14}$/, 'not an E.164 phone number, e.g. "+4915112345678"')
    .optional(),
  timezone: z.string().refine(isTimezone, 'not an IANA timezone, e.g. "Europe/Berlin"').optional(),
  attributes: z.record(z.string(), z.unknown()).optional(),
  consents: consentsSchema.optional(),
});

/** How far ahead of this server's clock an occurredAt may be: clocks differ, a little. */
export const MAX_AHEAD_MS = 60 * 60_000;

/**
 * When something happened, as ISO 8601, and not in the future: changes apply in occurredAt
 * order, so one dated ahead (a sender's wrong clock) would outrank every real change until
 * then — an unsubscribe included.
 */
export function occurredAtSchema() {
  return z.iso
    .datetime({
      offset: true,
      error: (issue) =>
        issue.input === undefined
          ? 'is required: when it happened, as an ISO-8601 timestamp, e.g. "2026-11-02T09:30:00Z"'
          : 'must be an ISO-8601 timestamp, e.g. "2026-11-02T09:30:00Z"',
    })
    .transform((s) => new Date(s))
    .refine((d) => d.getTime() <= Date.now() + MAX_AHEAD_MS, {
      message: "is more than an hour ahead of this server's clock: check the sender's clock",
    });
}

export const eventSchema = z.strictObject({
  id: z.string().min(1, "must not be empty").max(200),
  type: z.string().min(1, "must not be empty").max(200),
  customerId: z.string().min(1, "must not be empty").max(200),
  source: z.string().min(1).max(100).default("default"),
  occurredAt: occurredAtSchema(),
  properties: z.record(z.string(), z.unknown()).default({}),
  customer: customerTraitsSchema.optional(),
});

/** `consent.granted` / `consent.revoked` change one topic on one channel as of occurredAt. */
export const CONSENT_EVENTS = {
  "consent.granted": "granted",
  "consent.revoked": "revoked",
} as const;

const consentProperties = z.object({
  channel: z.enum(["email", "sms"], 'must be "email" or "sms"'),
  topic: topicSchema,
});

export type ParsedEvent = z.output<typeof eventSchema>;
export type RawEvent = z.input<typeof eventSchema>;
export type CustomerTraits = z.output<typeof customerTraitsSchema>;

export class EventValidationError extends Error {
  override readonly name = "EventValidationError";
  constructor(readonly problems: { path: string; message: string }[]) {
    super(problems.map((p) => `${p.path || "event"}: ${p.message}`).join("; "));
  }
}

// Built once: zod compiles a schema on its first parse, so a schema per call costs that each time.
const eventWithConsentSchema = eventSchema.superRefine((event, ctx) => {
  refineStorable(event, ctx);
  if (!(event.type in CONSENT_EVENTS)) return;
  const props = consentProperties.safeParse(event.properties);
  for (const issue of props.error?.issues ?? []) {
    ctx.addIssue({
      code: "custom",
      path: ["properties", ...issue.path],
      message: issue.message,
    });
  }
});

/** An issue's message; a bad record key says what is wrong with it, not "Invalid key in record". */
export function issueMessage(i: z.core.$ZodIssue): string {
  return i.code === "invalid_key" ? i.issues.map((n) => n.message).join("; ") : i.message;
}

/** Validates one event, naming each bad field (`occurredAt: must be an ISO-8601 timestamp`). */
export function parseEvent(raw: unknown): ParsedEvent {
  const result = eventWithConsentSchema.safeParse(raw);
  if (result.success) return result.data;
  throw new EventValidationError(
    result.error.issues.map((i) => ({
      path: i.path.join("."),
      message:
        i.code === "unrecognized_keys"
          ? `unknown field${i.keys.length > 1 ? "s" : ""} ${i.keys.map((k) => `"${k}"`).join(", ")}`
          : issueMessage(i),
    })),
  );
}

/** sha256 of the canonical payload: the same event redelivered hashes the same. */
export function payloadHash(event: ParsedEvent): string {
  const { source: _source, id: _id, ...payload } = event;
  return createHash("sha256")
    .update(canonicalJson({ ...payload, occurredAt: event.occurredAt.toISOString() }))
    .digest("hex");
}

/** JSON with object keys sorted, so key order never makes two equal payloads differ. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value && typeof value === "object" && !(value instanceof Date)) {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
  }
  return JSON.stringify(value) ?? "null";
}
