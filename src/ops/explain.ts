// `sendonce explain`: a customer's story from the audit trail — each event received or
// dropped, each enrollment, each step claimed, suppressed, skipped or sent, and why.
import type { Db } from "../db/client";
import type { AuditKind } from "../ledger/audit";

export interface TimelineEntry {
  at: Date;
  kind: AuditKind;
  journeyId: string | null;
  stepId: string | null;
  enrollmentId: bigint | null;
  actionKey: string | null;
  rule: string | null;
  workerId: string | null;
  detail: Record<string, unknown>;
}

export async function loadTimeline(
  db: Db,
  customerId: string,
  journeyId?: string,
): Promise<TimelineEntry[]> {
  const rows = await db.auditEntry.findMany({
    where: {
      customerId,
      // Event entries carry no journey; they belong in every journey's story.
      ...(journeyId && { OR: [{ journeyId }, { journeyId: null }] }),
    },
    orderBy: [{ at: "asc" }, { id: "asc" }],
  });
  return rows.map((r) => ({
    at: r.at,
    kind: r.kind as AuditKind,
    journeyId: r.journeyId,
    stepId: r.stepId,
    enrollmentId: r.enrollmentId,
    actionKey: r.actionKey,
    rule: r.rule,
    workerId: r.workerId,
    detail: (r.detail ?? {}) as Record<string, unknown>,
  }));
}

const LABELS: Record<AuditKind, string> = {
  event_received: "event received",
  event_duplicate: "duplicate dropped",
  event_conflict: "conflict rejected",
  enrolled: "enrolled",
  not_enrolled: "not enrolled",
  exited: "exited",
  completed: "completed",
  step_claimed: "step claimed",
  duplicate_suppressed: "duplicate suppressed",
  skipped: "skipped",
  delayed: "delayed",
  call_started: "call started",
  sent: "sent",
  failed_retryable: "failed, will retry",
  failed_permanent: "failed permanently",
  in_doubt: "in doubt",
  released: "released for retry",
  points_granted: "points granted",
  stale_outcome_ignored: "stale outcome ignored",
  delivery_status: "delivery status",
  consent_revoked: "consent revoked",
  consent_granted: "consent granted",
  idempotent_replay: "idempotent replay",
  reconcile_mismatch: "reconcile mismatch",
};

/** Audit details are JSON: strings print as they are, anything else as JSON. */
function text(value: unknown): string {
  return typeof value === "string" ? value : (JSON.stringify(value) ?? "");
}

const short = (key: string | null) => (key ? `${key.slice(0, 12)}…` : "");

/** One readable line per entry. */
export function formatTimeline(entries: TimelineEntry[]): string[] {
  return entries.map((e) => {
    const d = e.detail;
    const where = [e.journeyId, e.stepId].filter(Boolean).join(".");
    const eventRef = d.eventId
      ? `${text(d.type ?? "")} ${text(d.source)}/${text(d.eventId)}`.trim()
      : "";
    let what: string;
    switch (e.kind) {
      case "event_received":
        what = `${eventRef} (via ${text(d.via)})`;
        break;
      case "event_duplicate":
      case "event_conflict":
        what = `${eventRef} (via ${text(d.via)})${e.kind === "event_conflict" ? ": same id, different payload" : ""}`;
        break;
      case "enrolled":
        what = `${where} enrollment ${String(e.enrollmentId)}${d.reference ? ` reference "${text(d.reference)}"` : ""} by ${text(d.source)}/${text(d.eventId)}`;
        break;
      case "not_enrolled":
        what = `${where}: ${e.rule}${d.reference ? ` (reference "${text(d.reference)}")` : ""}${d.why ? ` — ${text(d.why)}` : ""}`;
        break;
      case "exited":
      case "completed":
        what = `${where} enrollment ${String(e.enrollmentId)}${d.reason ? `: ${text(d.reason)}` : d.eventId ? `: exit event ${e.rule} ${text(d.source)}/${text(d.eventId)}` : ""}`;
        break;
      case "step_claimed":
        what = `${where} key ${short(e.actionKey)} attempt ${text(d.attempt)}${d.previous ? ` (after ${text(d.previous)})` : ""}`;
        break;
      case "duplicate_suppressed":
        what = `${where} key ${e.actionKey} already ${text(d.state)}`;
        break;
      case "delayed":
        what = `${where} ${e.rule}: ${text(d.why)}`;
        break;
      case "skipped":
        what = `${where} ${e.rule}: ${text(d.why)}`;
        break;
      case "sent":
        what = `${where} key ${short(e.actionKey)} provider id ${text(d.providerId)}${d.attempt !== undefined ? ` (attempt ${text(d.attempt)})` : ""}${d.resolvedBy ? ` — ${text(d.resolvedBy)}` : ""}`;
        break;
      case "points_granted":
        what = `${where} ${Number(d.amount) > 0 ? "+" : ""}${text(d.amount)} (${text(d.reason)}), balance ${text(d.balance)}`;
        break;
      case "failed_retryable":
        what = `${where} attempt ${text(d.attempt)}: ${text(d.error)}; next attempt ${text(d.nextAttemptAt)}`;
        break;
      case "failed_permanent":
      case "in_doubt":
      case "released":
        what = `${where} key ${short(e.actionKey)} ${e.rule ?? ""}${d.error ? `: ${text(d.error)}` : ""}${d.why ? ` — ${text(d.why)}` : ""}`;
        break;
      case "delivery_status":
        what = `${where} ${e.rule} (${text(d.providerId ?? d.messageId)})`;
        break;
      case "consent_revoked":
      case "consent_granted":
        what = `${text(d.channel)} ${text(d.topics)} by ${e.rule}`;
        break;
      case "reconcile_mismatch":
        what = `${where ? `${where} ` : ""}${e.rule}: ${text(d.detail)}${d.resolution ? ` → ${text(d.resolution)}` : ""}`;
        break;
      default:
        what = `${where} ${JSON.stringify(d)}`;
    }
    return `${e.at.toISOString()}  ${LABELS[e.kind].padEnd(20)}  ${what}`;
  });
}
