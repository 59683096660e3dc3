// Deterministic keys. An action key names one intent: journey, step, customer, reference —
// never a time, an attempt, a job id or a journey version, so a retry, a redelivery, a
// backfill and a redeploy all compute the same key.
import { createHash } from "node:crypto";

export interface ActionIdentity {
  journeyId: string;
  stepId: string;
  customerId: string;
  reference: string;
}

/** sha256 over the length-prefixed parts, so no choice of ids can make two intents collide. */
export function actionKey(a: ActionIdentity): string {
  const hash = createHash("sha256");
  for (const part of [a.journeyId, a.stepId, a.customerId, a.reference]) {
    hash.update(`${Buffer.byteLength(part)}:${part};`);
  }
  return hash.digest("hex");
}

/** BullMQ job id of an enrollment's step run; ids may not contain ":". */
export function stepJobId(enrollmentId: bigint, stepSeq: number): string {
  return `st-${enrollmentId}-${stepSeq}`;
}

/** BullMQ job id of a stored event awaiting processing. */
export function eventJobId(eventRowId: bigint): string {
  return `ev-${eventRowId}`;
}
