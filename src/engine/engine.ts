// What the engine needs from the outside world, passed in once (src/app.ts wires it).
import type { EmailChannel, SmsChannel } from "../channels/channel";
import type { Db } from "../db/client";
import type { Logger } from "../log";
import type { JourneyCatalog } from "./catalog";

export interface Clock {
  now(): Date;
}

export const systemClock: Clock = { now: () => new Date() };

/** Named points in the send protocol where a fault can be injected (tests, chaos suite). */
export type FailpointName =
  "after_claim" | "before_call" | "after_call" | "after_outcome" | "api_after_commit";

export interface Tuning {
  /** Waits run this many times faster (demo and tests); 1 in production. */
  timeScale: number;
  /** A `claimed` action older than this is a crashed attempt and is retried. */
  claimLeaseMs: number;
  /** A `calling` action older than this is a crashed call: in_doubt. */
  callLeaseMs: number;
  /**
   * A provider call not begun this long after its call-started mark is not made: begun later,
   * it could still run when the call's lease is over, when another worker may take the call
   * as in doubt, look an SMS up, not find it, and send it again. callLeaseMs less the send
   * timeout.
   */
  callStartWindowMs: number;
  /** Attempts before a retryable failure becomes permanent. */
  maxAttempts: number;
  retryBaseMs: number;
  retryMaxMs: number;
  /** How long an in-doubt send waits before it is looked up at the provider. */
  inDoubtGraceMs: number;
}

export const DEFAULT_TUNING: Tuning = {
  timeScale: 1,
  claimLeaseMs: 30_000,
  callLeaseMs: 90_000,
  callStartWindowMs: 60_000,
  maxAttempts: 8,
  retryBaseMs: 5_000,
  retryMaxMs: 3_600_000,
  inDoubtGraceMs: 60_000,
};

export interface Engine {
  db: Db;
  catalog: JourneyCatalog;
  clock: Clock;
  workerId: string;
  channels: { email: EmailChannel; sms: SmsChannel };
  /** The domain of Message-IDs: `<actionKey@domain>`. */
  messageIdDomain: string;
  /** Signs unsubscribe links of marketing emails; none without SENDONCE_SECRET. */
  links?: { secret: string; publicBaseUrl: string };
  tuning: Tuning;
  log: Logger;
  failpoint?: (name: FailpointName, actionKey: string) => Promise<void>;
}

/** Exponential backoff with full jitter: attempt 1 waits up to base, then 2×, 4×, … capped. */
export function retryDelayMs(tuning: Tuning, attempt: number, random = Math.random): number {
  const ceiling = Math.min(tuning.retryMaxMs, tuning.retryBaseMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}
