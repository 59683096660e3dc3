// An in-doubt send settled by a person who knows what the provider did (its logs, its support,
// the customer): the last resort when neither the SMS look-up nor a delivery event settles it.
import type { Db, Tx } from "../db/client";
import { TX_OPTIONS } from "../db/client";
import { sqlOf } from "../db/sql";
import { recordFoundSent } from "../ledger/actions";
import { recordAudit } from "../ledger/audit";
import { PROVIDER_TOOK_IT, reportedMessage } from "../ledger/provider-match";

/** What the person found out: the provider took the message, or it never did. */
export type Finding = { sent: true; providerId?: string } | { sent: false };

export type Resolved =
  /** Recorded as sent. */
  | { kind: "sent"; providerId: string | null }
  /** Its run is still on the step: the next run sends it again, under the same key. */
  | { kind: "retry" }
  /** No run is left to send it: failed_permanent(not_sent), for a person to resend by hand. */
  | { kind: "not_sent" }
  | { kind: "unknown" }
  /** An SMS recorded sent names its message (the SID), or it could be taken for another's. */
  | { kind: "needs_provider_id" }
  /** The provider reported on it (a delivery event, a status callback): it was sent. */
  | { kind: "reported"; status: string }
  /** Only an in-doubt action is resolved by hand; anything else is the ledger's to settle. */
  | { kind: "not_in_doubt"; state: string; reason: string | null };

export interface ResolveOptions {
  now: Date;
  /** Who resolved it and why, for the audit trail. */
  by: string;
  note?: string;
}

export async function resolveByHand(
  db: Db,
  key: string,
  finding: Finding,
  opts: ResolveOptions,
): Promise<Resolved> {
  return db.$transaction(async (tx) => {
    const [action] = await tx.$queryRaw<
      {
        state: string;
        reason: string | null;
        customerId: string;
        journeyId: string;
        stepId: string;
        enrollmentId: bigint;
        attempt: number;
        fencingToken: number;
        providerId: string | null;
        channel: string;
        reported: string | null;
      }[]
    >`
      SELECT a.state::text AS state, a.reason, a."customerId", a."journeyId", a."stepId", a."enrollmentId",
        a.attempt, a."fencingToken", a."providerId", a.channel::text AS channel,
        (SELECT d.rule FROM "AuditEntry" d WHERE a.channel = 'email' AND d.kind = 'delivery_status'
           AND d."actionKey" = a.key AND d.rule = ANY(${PROVIDER_TOOK_IT}) ORDER BY d.at DESC LIMIT 1) AS reported
      FROM "Action" a
      WHERE a.key = ${key}
      FOR UPDATE`;
    if (!action) return { kind: "unknown" };
    if (action.state !== "in_doubt")
      return { kind: "not_in_doubt", state: action.state, reason: action.reason };
    const { now } = opts;
    const audit = {
      at: now,
      customerId: action.customerId,
      journeyId: action.journeyId,
      stepId: action.stepId,
      enrollmentId: action.enrollmentId,
      actionKey: key,
      rule: "resolved_by_hand",
    };
    const resolvedBy = `by hand: ${opts.by}${opts.note ? `, "${opts.note}"` : ""}`;
    if (finding.sent) {
      const providerId = finding.providerId ?? action.providerId;
      if (action.channel === "sms" && !providerId) return { kind: "needs_provider_id" };
      await recordFoundSent(sqlOf(tx), {
        key,
        token: action.fencingToken,
        providerId,
        reason: "resolved_by_hand",
        resolvedBy,
        now,
      });
      return { kind: "sent", providerId };
    }
    // An email's events name the key's Message-ID; Twilio's callbacks name the attempt's message,
    // and one it reported failed or canceled was not sent.
    const reported =
      action.channel === "sms"
        ? (await reportedMessage(db, key, action.attempt))?.status
        : action.reported;
    if (reported) return { kind: "reported", status: reported };
    // Still on the step: the enrollment moves to a new position, due now. A run that found the
    // action settled before this holds the old one, so it can neither move past the step nor
    // end the enrollment; the sweep brings the next run. The update waits for a run's end or
    // advance under way, and finds nothing if that moved the enrollment on.
    const [onStep] = await tx.$queryRaw<{ id: bigint }[]>`
      UPDATE "Enrollment" SET "stepSeq" = "stepSeq" + 1, "nextRunAt" = ${now}, "updatedAt" = ${now}
      WHERE id = ${action.enrollmentId} AND status = 'active' AND "currentStepId" = ${action.stepId}
      RETURNING id`;
    if (onStep) {
      // A retry like any other: claimed again under the same key, with consent and policies
      // checked again.
      await tx.$executeRaw`
        UPDATE "Action" SET state = 'failed_retryable', reason = 'resolved_by_hand', "nextAttemptAt" = ${now},
          "updatedAt" = ${now}
        WHERE key = ${key}`;
      // Released, as after a look-up that found nothing: another in-doubt call is not released again.
      await attemptOutcome(tx, key, action.attempt, "released", null, now);
      await recordAudit(tx, {
        ...audit,
        kind: "released",
        detail: { why: `not sent, ${resolvedBy}: sent again by its run` },
      });
      return { kind: "retry" };
    }
    await tx.$executeRaw`
      UPDATE "Action" SET state = 'failed_permanent', reason = 'not_sent', "completedAt" = ${now},
        "updatedAt" = ${now}
      WHERE key = ${key}`;
    await attemptOutcome(tx, key, action.attempt, "not_sent", null, now);
    await recordAudit(tx, {
      ...audit,
      kind: "failed_permanent",
      detail: {
        why: `not sent, ${resolvedBy}: its enrollment has ended or moved past the step, so nothing sends it again`,
      },
    });
    return { kind: "not_sent" };
  }, TX_OPTIONS);
}

/** What the in-doubt attempt turned out to be; duplicate-send counts read the attempts. */
async function attemptOutcome(
  tx: Tx,
  key: string,
  attempt: number,
  outcome: "sent" | "released" | "not_sent",
  providerId: string | null,
  now: Date,
): Promise<void> {
  await tx.$executeRaw`
    UPDATE "ActionAttempt" SET outcome = ${outcome}, "providerId" = COALESCE(${providerId}, "providerId"),
      "finishedAt" = COALESCE("finishedAt", ${now})
    WHERE "actionKey" = ${key} AND attempt = ${attempt}`;
}
