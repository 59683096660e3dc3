// The audit trail: every decision about an event, an enrollment or an action, with the key,
// the rule and the worker, so `sendonce explain` can tell a customer's story.
import type { Tx } from "../db/client";
import type { Db } from "../db/client";
import type { Prisma } from "../generated/prisma/client";

/** What happened; `explain` prints one line per kind. */
export type AuditKind =
  | "event_received"
  | "event_duplicate"
  | "event_conflict"
  | "enrolled"
  | "not_enrolled"
  | "exited"
  | "completed"
  | "step_claimed"
  | "duplicate_suppressed"
  | "skipped"
  | "delayed"
  | "call_started"
  | "sent"
  | "failed_retryable"
  | "failed_permanent"
  | "in_doubt"
  | "released"
  | "points_granted"
  | "stale_outcome_ignored"
  | "delivery_status"
  | "consent_revoked"
  | "consent_granted"
  | "idempotent_replay"
  | "reconcile_mismatch";

export interface AuditRecord {
  kind: AuditKind;
  at: Date;
  customerId?: string;
  journeyId?: string;
  stepId?: string;
  enrollmentId?: bigint;
  actionKey?: string;
  rule?: string;
  workerId?: string;
  detail?: Record<string, unknown>;
}

/** Appends audit entries; inside the transaction that made the decision, when there is one. */
export async function recordAudit(db: Tx | Db, ...records: AuditRecord[]): Promise<void> {
  if (records.length === 0) return;
  await db.auditEntry.createMany({
    data: records.map((r) => ({
      kind: r.kind,
      at: r.at,
      customerId: r.customerId ?? null,
      journeyId: r.journeyId ?? null,
      stepId: r.stepId ?? null,
      enrollmentId: r.enrollmentId ?? null,
      actionKey: r.actionKey ?? null,
      rule: r.rule ?? null,
      workerId: r.workerId ?? null,
      detail: toJson(r.detail ?? {}),
    })),
  });
}

/** Details may hold dates and bigints (ids); stored as their JSON text. */
function toJson(detail: Record<string, unknown>): Prisma.InputJsonObject {
  return JSON.parse(
    JSON.stringify(detail, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v)),
  ) as Prisma.InputJsonObject;
}
