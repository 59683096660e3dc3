// Loyalty points, exactly once: the action row, the points entry and the balance are written
// in the claim transaction itself, so there is no window in which one exists without the others.
import type { Sql } from "../db/sql";
import type { Db } from "../db/client";
import type { ActionIntent, ClaimOptions, Recheck, SettledClaim } from "./actions";
import { auditBase, withCustomerLock } from "./actions";
import { recordAudit } from "./audit";

/** A grant of `amount`, or the reversal of whatever the action `reverses` granted. */
export type PointsOrder =
  | { kind: "grant"; amount: number; reason: string }
  | {
      kind: "reverse";
      reverses: string;
      reason: string;
      target: { journeyId: string; stepId: string };
    };

const REVERSE_RECHECK_MS = 1_000;

/**
 * When the granting journey may still grant: the next run of an active enrollment of it for the
 * same reference (its grant can only come then), or undefined when none can. The reversing
 * enrollment itself is not one: a reversal in the grant's own journey whose run did not grant
 * (a branch went past it) has nothing to wait for, and waiting on itself would never end.
 */
async function grantPending(
  tx: Sql,
  intent: ActionIntent,
  target: { journeyId: string; stepId: string },
  reverses: string,
): Promise<Date | undefined> {
  const [row] = await tx<{ nextRunAt: Date | null }>`
    SELECT "nextRunAt" FROM "Enrollment"
    WHERE "journeyId" = ${target.journeyId} AND "customerId" = ${intent.customerId}
      AND reference = ${intent.reference} AND status = 'active' AND id <> ${intent.enrollmentId}
      AND NOT EXISTS (SELECT 1 FROM "Action" WHERE key = ${reverses})
    ORDER BY "nextRunAt" NULLS FIRST
    LIMIT 1`;
  if (!row) return undefined;
  return row.nextRunAt ?? new Date(0);
}

/**
 * Whether a reversal of this grant settled with nothing to take back (a refund processed before
 * its order): its audit entry names the grant it was for, whichever journey made it and whether
 * or not it is deployed here. Reversals settled before entries named their grant (2026-12-02)
 * are not found. A partial index holds these entries alone (migration reversal_index).
 */
export async function reversedFirst(
  tx: Sql,
  customerId: string,
  grantKey: string,
): Promise<boolean> {
  const rows = await tx<unknown>`
    SELECT 1 FROM "AuditEntry"
    WHERE detail->>'reverses' = ${grantKey} AND kind = 'skipped' AND rule = 'nothing_to_reverse'
      AND "customerId" = ${customerId}
    LIMIT 1`;
  return rows.length > 0;
}

/** Grants (or takes back) points once per action key; a repeat is a suppressed duplicate. */
export async function grantPoints(
  db: Db,
  intent: ActionIntent,
  order: PointsOrder,
  opts: Omit<ClaimOptions, "claimLeaseMs" | "callLeaseMs">,
  recheck: (tx: Sql) => Promise<Recheck>,
): Promise<SettledClaim> {
  return withCustomerLock(db, intent, async (tx, existing): Promise<SettledClaim> => {
    const audit = auditBase(intent, opts);
    if (existing) {
      await recordAudit(tx, {
        ...audit,
        kind: "duplicate_suppressed",
        rule: existing.state,
        detail: { state: existing.state },
      });
      return { kind: "settled", state: existing.state, reason: existing.reason, duplicate: true };
    }
    const check = await recheck(tx);
    if (!check.go && check.outcome === "exited") return { kind: "exited", detail: check.detail };
    let amount = order.kind === "grant" ? order.amount : 0;
    let skip = check.go ? undefined : { reason: check.reason, detail: check.detail };
    if (order.kind === "grant" && !skip) {
      // A refund processed before its order: its reversal found nothing to take back and
      // settled for good, so the grant that comes after it is not made.
      if (await reversedFirst(tx, intent.customerId, intent.key))
        skip = {
          reason: "reversed_before_grant",
          detail:
            "its reversal ran first and found nothing to take back (a refund before its order)",
        };
    }
    if (order.kind === "reverse" && !skip) {
      const [granted] = await tx<{ amount: number }>`
        SELECT amount FROM "PointsEntry" WHERE "actionKey" = ${order.reverses}`;
      if (granted) amount = -granted.amount;
      else {
        const grantRun = await grantPending(tx, intent, order.target, order.reverses);
        if (grantRun) {
          // A refund processed before its order's grant: look again a moment after the granting
          // run's next step is due (a grant after a 14-day wait is not polled every second).
          return {
            kind: "wait",
            until: new Date(Math.max(opts.now.getTime(), grantRun.getTime()) + REVERSE_RECHECK_MS),
            why: "the grant being reversed is still pending",
          };
        }
        skip = { reason: "nothing_to_reverse", detail: "the step being reversed granted nothing" };
      }
    }
    const state = skip ? "skipped" : "sent";
    await tx.run`
      INSERT INTO "Action" (key, "journeyId", "stepId", "customerId", reference, "enrollmentId", channel,
                            state, reason, attempt, "fencingToken", "workerId", "eventOccurredAt",
                            "claimedAt", "completedAt", "updatedAt")
      VALUES (${intent.key}, ${intent.journeyId}, ${intent.stepId}, ${intent.customerId}, ${intent.reference},
              ${intent.enrollmentId}, 'points', ${state}::"ActionState", ${skip?.reason ?? null}, 1, 1,
              ${opts.workerId}, ${intent.eventOccurredAt}, ${opts.now}, ${opts.now}, ${opts.now})`;
    if (skip) {
      await recordAudit(tx, {
        ...audit,
        kind: "skipped",
        rule: skip.reason,
        // A reversal says which grant it found nothing of: that grant, coming later, is not made.
        detail: {
          why: skip.detail,
          ...(order.kind === "reverse" && { reverses: order.reverses }),
        },
      });
      return { kind: "settled", state: "skipped", reason: skip.reason, duplicate: false };
    }
    await tx.run`
      INSERT INTO "PointsEntry" ("customerId", amount, reason, "actionKey", "createdAt")
      VALUES (${intent.customerId}, ${amount}, ${order.reason}, ${intent.key}, ${opts.now})`;
    const [balance] = await tx<{ balance: number }>`
      INSERT INTO "PointsBalance" ("customerId", balance, "updatedAt")
      VALUES (${intent.customerId}, ${amount}, ${opts.now})
      ON CONFLICT ("customerId") DO UPDATE SET balance = "PointsBalance".balance + EXCLUDED.balance,
        "updatedAt" = EXCLUDED."updatedAt"
      RETURNING balance`;
    await recordAudit(tx, {
      ...audit,
      kind: "points_granted",
      detail: { amount, reason: order.reason, balance: balance!.balance },
    });
    return { kind: "settled", state: "sent", reason: null, duplicate: false };
  });
}
