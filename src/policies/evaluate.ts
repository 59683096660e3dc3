// Whether a send may happen now, decided at claim time on every attempt (a retry never
// bypasses a revoked consent). Pure: the ledger loads the facts inside its transaction.
import type { Category, SendChannel } from "../journeys/types";

export interface ConsentFact {
  status: "granted" | "revoked";
  grantedAt: Date | null;
}

export interface SendFacts {
  channel: SendChannel;
  category: Category;
  /** The journey's consent topic; marketing sends need it granted on this channel. */
  topic?: string;
  /** The customer's email address or phone number. */
  address: string | null;
  consent?: ConsentFact;
}

/** Stable reason codes: they appear in the ledger, the audit trail and reports. */
export type SkipReason = "no_address" | "no_consent";

export type Verdict = { allow: true } | { allow: false; reason: SkipReason; detail: string };

export function evaluateSend(f: SendFacts): Verdict {
  if (!f.address) {
    return {
      allow: false,
      reason: "no_address",
      detail: `customer has no ${f.channel === "email" ? "email address" : "phone number"}`,
    };
  }
  if (f.category === "marketing" && f.topic && f.consent?.status !== "granted") {
    return {
      allow: false,
      reason: "no_consent",
      detail: `${f.channel} consent for "${f.topic}" is ${f.consent ? f.consent.status : "not given"}`,
    };
  }
  return { allow: true };
}
