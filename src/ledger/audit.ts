// The audit trail: every decision about an event, an enrollment or an action, with the key,
// the rule and the worker, so `sendonce explain` can tell a customer's story.
import type { Db, Tx } from "../db/client";
import type { Sql } from "../db/sql";
import type { Statement } from "../db/sql";
import { sqlOf, stmt } from "../db/sql";

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
  await sqlOf(on)`${auditInsert(records)}`;
}

/**
 * The insert of audit entries, to splice into a larger statement: they travel as one JSON
 * value aliased `x`, so the caller can go on, e.g. `a AS (${auditInsert(r)}, u)` to write
 * them only if CTE `u` returned a row.
 */
export function auditInsert(records: AuditRecord[]): Statement {
  return stmt`INSERT INTO "AuditEntry" (kind, at, "customerId", "journeyId", "stepId", "enrollmentId", "actionKey", rule, "workerId", detail)
    SELECT x.kind, x.at, x."customerId", x."journeyId", x."stepId", x."enrollmentId", x."actionKey", x.rule, x."workerId", COALESCE(x.detail, '{}')
    FROM jsonb_to_recordset(${auditJson(records)}::jsonb)
      AS x(kind text, at timestamptz, "customerId" text, "journeyId" text, "stepId" text, "enrollmentId" bigint, "actionKey" text, rule text, "workerId" text, detail jsonb)`;
}

/**
 * Audit records as JSON. Enrollment ids are bigints, and a detail may hold one too: a replacer
 * would take JSON.stringify off its fast path for every record, so it is used only when a
 * detail needs it.
 */
function auditJson(records: AuditRecord[]): string {
  const plain = records.map((r) =>
    r.enrollmentId === undefined ? r : { ...r, enrollmentId: String(r.enrollmentId) },
  );
  try {
    return JSON.stringify(plain);
  } catch {
    return JSON.stringify(plain, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v));
  }
}
