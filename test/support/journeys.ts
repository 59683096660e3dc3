// Journeys written for one test into a directory of their own.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Writes `files` (name → YAML) into a fresh directory and returns its path. */
export function journeysDir(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), "sendonce-journeys-"));
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  return dir;
}

/** A transactional journey that grants 10 points once per customer on `signed_up`. */
export const WELCOME_POINTS = `
id: welcome
name: Welcome points
category: transactional
trigger: { event: signed_up }
steps:
  - id: bonus
    points: { amount: 10, reason: welcome }
`;

/** An OFFER_TEXTS trigger: customer `customerId` at `phone` (in UTC), "offers" granted. */
export function textRequest(customerId: string, ref: string, phone: string) {
  return {
    id: `evt_${customerId}_${ref}`,
    type: "text.requested",
    customerId,
    occurredAt: "2026-11-02T10:00:00Z",
    properties: { ref },
    customer: { phone, timezone: "UTC", consents: { sms: { offers: "granted" } } },
  };
}

/** A marketing text per reference, for customers who granted SMS consent to "offers". */
export const OFFER_TEXTS = `
id: texts
name: One text per reference
category: marketing
consent: offers
trigger: { event: text.requested }
entry: { once: per_reference, reference: "{{ event.properties.ref }}" }
steps:
  - id: offer_sms
    sms: { body: "Offer {{ event.properties.ref }}" }
`;

/** A transactional welcome email, once per customer, on `signed_up`. */
export const HELLO_EMAIL = `
id: hello
name: Hello
category: transactional
trigger: { event: signed_up }
steps:
  - id: hello_email
    email:
      subject: "Hello {{ customer.attributes.name }}"
      html: "<p>Welcome aboard</p>"
      text: "Welcome aboard"
`;
