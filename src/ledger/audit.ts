// The audit trail: every decision about an event, an enrollment or an action, with the key,
// the rule and the worker, so `sendonce explain` can tell a customer's story.
import type { Db, Tx } from "../db/client";
import type { Sql } from "../db/sql";
import { Fragment, sqlOf } from "../db/sql";

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
export async function recordAudit(on: Sql | Tx | Db, ...records: AuditRecord[]): Promise<void> {
  if (records.length === 0) return;
  await sqlOf(on)`INSERT INTO "AuditEntry" ${AUDIT_COLUMNS} SELECT ${AUDIT_ROWS}
    FROM jsonb_to_recordset(${auditJson(records)}::jsonb) AS ${AUDIT_RECORD}`;
}

// Audit rows travel as one JSON parameter, so a statement can append any number of them,
// also as a step of a larger statement: `… SELECT ${AUDIT_ROWS} FROM jsonb_to_recordset(…)`.
export const AUDIT_COLUMNS = new Fragment(
  `(kind, at, "customerId", "journeyId", "stepId", "enrollmentId", "actionKey", rule, "workerId", detail)`,
);
export const AUDIT_ROWS = new Fragment(
  `x.kind, x.at, x."customerId", x."journeyId", x."stepId", x."enrollmentId", x."actionKey", x.rule, x."workerId", COALESCE(x.detail, '{}')`,
);
export const AUDIT_RECORD = new Fragment(
  `x(kind text, at timestamptz, "customerId" text, "journeyId" text, "stepId" text, "enrollmentId" bigint, "actionKey" text, rule text, "workerId" text, detail jsonb)`,
);

/** The JSON parameter for AUDIT_ROWS; details may hold dates and bigints (ids). */
export function auditJson(records: AuditRecord[]): string {
  return JSON.stringify(records, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v));
}
