// Counts of what happened since a point in time, read from the ledger, the event log and the
// audit trail: the demo's closing summary (and the seed of `sendonce report`).
import type { Db } from "../db/client";

export interface RunSummary {
  events: number;
  duplicatesDropped: number;
  conflicts: number;
  enrollments: number;
  actions: Record<string, number>;
  skippedByReason: Record<string, number>;
  suppressedDuplicates: number;
  delayedByReason: Record<string, number>;
  pointsGranted: number;
  enrollmentsExited: number;
}

export async function summarize(db: Db, since: Date): Promise<RunSummary> {
  const [events, duplicates, enrollments, actions, skipped, suppressed, points, exited, delayed] =
    await Promise.all([
      db.event.count({ where: { receivedAt: { gte: since } } }),
      db.eventDuplicate.groupBy({
        by: ["kind"],
        where: { receivedAt: { gte: since } },
        _count: true,
      }),
      db.enrollment.count({ where: { enrolledAt: { gte: since } } }),
      db.action.groupBy({
        by: ["channel", "state"],
        where: { claimedAt: { gte: since } },
        _count: true,
      }),
      db.action.groupBy({
        by: ["reason"],
        where: { claimedAt: { gte: since }, state: "skipped" },
        _count: true,
      }),
      db.auditEntry.count({ where: { at: { gte: since }, kind: "duplicate_suppressed" } }),
      db.pointsEntry.aggregate({ where: { createdAt: { gte: since } }, _sum: { amount: true } }),
      db.enrollment.count({ where: { enrolledAt: { gte: since }, status: "exited" } }),
      db.auditEntry.groupBy({
        by: ["rule"],
        where: { at: { gte: since }, kind: "delayed" },
        _count: true,
      }),
    ]);
  return {
    events,
    duplicatesDropped: duplicates.find((d) => d.kind === "duplicate")?._count ?? 0,
    conflicts: duplicates.find((d) => d.kind === "conflict")?._count ?? 0,
    enrollments,
    actions: Object.fromEntries(actions.map((a) => [`${a.channel} ${a.state}`, a._count])),
    skippedByReason: Object.fromEntries(skipped.map((s) => [s.reason ?? "unknown", s._count])),
    suppressedDuplicates: suppressed,
    delayedByReason: Object.fromEntries(delayed.map((d) => [d.rule ?? "unknown", d._count])),
    pointsGranted: points._sum.amount ?? 0,
    enrollmentsExited: exited,
  };
}
