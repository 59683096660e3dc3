// Whether a send may happen now, decided at claim time on every attempt (a retry never
// bypasses a revoked consent). Pure: the ledger loads the facts inside its transaction, with
// the customer locked, so counts for caps cannot race.
import type {
  Cap,
  Category,
  OnCap,
  QuietHours,
  ResendPolicy,
  SendChannel,
} from "../journeys/types";
import { quietHoursEnd } from "./quiet-hours";

export interface ConsentFact {
  status: "granted" | "revoked";
  grantedAt: Date | null;
}

/** A send of this customer that counts for caps: sent, in flight, in doubt or due for retry. */
export interface RecentSend {
  journeyId: string;
  channel: SendChannel;
  at: Date;
}

export interface SendFacts {
  now: Date;
  channel: SendChannel;
  category: Category;
  journeyId: string;
  /** The journey's consent topic; marketing sends need it granted on this channel. */
  topic?: string;
  /** The customer's email address or phone number. */
  address: string | null;
  consent?: ConsentFact;
  resend: ResendPolicy;
  /** The last send of this step to this customer under another key (another reference). */
  lastSendOfStep?: Date;
  globalCaps: Cap[];
  journeyCaps: Cap[];
  onCap: OnCap;
  recentSends: RecentSend[];
  quietHours?: QuietHours;
  timezone: string;
}

/** Stable reason codes: they appear in the ledger, the audit trail and reports. */
export type SkipReason = "no_address" | "no_consent" | "resend_policy" | "frequency_cap";
export type DelayReason = "frequency_cap" | "quiet_hours";

export type Verdict =
  | { allow: true }
  | { allow: false; reason: SkipReason; detail: string }
  | { allow: false; delayUntil: Date; reason: DelayReason; detail: string };

export function evaluateSend(f: SendFacts): Verdict {
  if (!f.address) {
    return {
      allow: false,
      reason: "no_address",
      detail: `customer has no ${f.channel === "email" ? "email address" : "phone number"}`,
    };
  }
  const marketing = f.category === "marketing";
  if (marketing && f.topic && f.consent?.status !== "granted") {
    return {
      allow: false,
      reason: "no_consent",
      detail: `${f.channel} consent for "${f.topic}" is ${f.consent ? f.consent.status : "not given"}`,
    };
  }
  // A marketing journey version without a topic (validate refuses one now; enrollments keep
  // theirs): its consent is the channel-wide one, and only an opt-out (STOP) refuses it.
  if (marketing && !f.topic && f.consent?.status === "revoked") {
    return {
      allow: false,
      reason: "no_consent",
      detail: `the customer opted out of all ${f.channel} messages`,
    };
  }
  const resend = checkResend(f);
  if (resend) return resend;
  // Transactional messages (receipts, password resets) are neither capped nor held back.
  if (!marketing) return { allow: true };
  const cap = checkCaps(f);
  if (cap) return cap;
  if (f.quietHours) {
    const end = quietHoursEnd(f.now, f.quietHours, f.timezone);
    if (end) {
      return {
        allow: false,
        delayUntil: end,
        reason: "quiet_hours",
        detail: `quiet hours for ${f.channel} in ${f.timezone} until ${end.toISOString()}`,
      };
    }
  }
  return { allow: true };
}

function checkResend(f: SendFacts): Verdict | undefined {
  const last = f.lastSendOfStep;
  if (!last) return undefined;
  const skip = (detail: string): Verdict => ({ allow: false, reason: "resend_policy", detail });
  switch (f.resend.kind) {
    case "per_reference":
      return undefined;
    case "never":
      return skip(
        `resend: never — this step was already sent to the customer at ${last.toISOString()}`,
      );
    case "after": {
      const until = last.getTime() + f.resend.ms;
      return until > f.now.getTime()
        ? skip(
            `resend: after — last sent ${last.toISOString()}, again from ${new Date(until).toISOString()}`,
          )
        : undefined;
    }
    case "on_reopt_in": {
      // A topic's fresh grant; a version without a topic reads the channel-wide consent, whose
      // START is no opt-in to this step.
      const granted = f.topic && f.consent?.status === "granted" ? f.consent.grantedAt : null;
      return granted && granted > last
        ? undefined
        : skip(`resend: on_reopt_in — last sent ${last.toISOString()}, no consent granted since`);
    }
  }
}

function checkCaps(f: SendFacts): Verdict | undefined {
  const scoped = [
    ...f.globalCaps.map((cap) => ({ cap, journeyId: undefined })),
    ...f.journeyCaps.map((cap) => ({ cap, journeyId: f.journeyId })),
  ];
  let delayUntil: number | undefined;
  let hit: Cap | undefined;
  for (const { cap, journeyId } of scoped) {
    if (cap.channel !== "any" && cap.channel !== f.channel) continue;
    const since = f.now.getTime() - cap.windowMs;
    const counted = f.recentSends
      .filter((s) => s.at.getTime() > since)
      .filter((s) => cap.channel === "any" || s.channel === cap.channel)
      .filter((s) => journeyId === undefined || s.journeyId === journeyId)
      .map((s) => s.at.getTime())
      .sort((a, b) => a - b);
    if (counted.length < cap.max) continue;
    // A slot frees when enough of the counted sends have left the window.
    const frees = counted[counted.length - cap.max]! + cap.windowMs;
    if (delayUntil === undefined || frees > delayUntil) {
      delayUntil = frees;
      hit = cap;
    }
  }
  if (!hit || delayUntil === undefined) return undefined;
  const detail = `cap "${hit.id}": at most ${hit.max} ${hit.channel === "any" ? "messages" : hit.channel} per ${formatWindow(hit.windowMs)}`;
  return f.onCap === "delay"
    ? {
        allow: false,
        delayUntil: new Date(delayUntil),
        reason: "frequency_cap",
        detail: `${detail}; delayed`,
      }
    : { allow: false, reason: "frequency_cap", detail };
}

function formatWindow(ms: number): string {
  const day = 86_400_000;
  const hour = 3_600_000;
  return ms % day === 0 ? `${ms / day}d` : ms % hour === 0 ? `${ms / hour}h` : `${ms / 1000}s`;
}
