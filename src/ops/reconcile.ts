// `sendonce reconcile`: the ledger against the outside world. SMS against the provider's
// message list; email against delivery events received by Message-ID; points against
// themselves (every balance equals its ledger, every granted action has exactly one entry).
// Every mismatch is listed and audited; --resolve settles what can be settled safely.
import type { ProviderMessage } from "../channels/channel";
import type { TwilioSmsChannel } from "../channels/sms-twilio";
import type { Db } from "../db/client";
import { recordAudit } from "../ledger/audit";
import { recordFoundSent } from "../ledger/actions";
import {
  PROVIDER_TOOK_IT,
  UNMATCHED,
  reportedMessage,
  unclaimedMatches,
  unexplainedMessages,
} from "../ledger/provider-match";

export interface Mismatch {
  kind: string;
  actionKey?: string;
  customerId?: string;
  detail: string;
  /** What --resolve did about it. */
  resolution?: string;
}

export interface ReconcileOptions {
  since: Date;
  resolve: boolean;
  now: Date;
  /** An in-doubt send younger than this may still be resolved by its worker. */
  graceMs: number;
  /**
   * How long after its call-started mark a call may still reach the provider (the lease and the
   * send timeout, as the workers' look-up has it).
   */
  callWindowMs: number;
  /** How long a claim may wait for its call-started mark (the lease). */
  claimLeaseMs: number;
  sms?: TwilioSmsChannel;
}

/** What --resolve says when the action was settled by someone else while it was looked at. */
const MOVED_ON = "none: the action moved on meanwhile (a worker or a person settled it)";

export async function reconcilePoints(db: Db, opts: ReconcileOptions): Promise<Mismatch[]> {
  const out: Mismatch[] = [];
  const balances = await db.$queryRaw<
    { customerId: string; balance: number | null; ledger: bigint | null }[]
  >`
    SELECT COALESCE(b."customerId", e."customerId") AS "customerId", b.balance, e.ledger
    FROM "PointsBalance" b
    FULL JOIN (SELECT "customerId", sum(amount) AS ledger FROM "PointsEntry" GROUP BY 1) e ON e."customerId" = b."customerId"
    WHERE COALESCE(b.balance, 0) <> COALESCE(e.ledger, 0)`;
  for (const b of balances) {
    const ledger = Number(b.ledger ?? 0);
    const m: Mismatch = {
      kind: "points_balance_mismatch",
      customerId: b.customerId,
      detail: `balance ${b.balance ?? "(none)"} but the points ledger sums to ${ledger}`,
    };
    if (opts.resolve) {
      await db.pointsBalance.upsert({
        where: { customerId: b.customerId },
        create: { customerId: b.customerId, balance: ledger },
        update: { balance: ledger },
      });
      m.resolution = `balance set to the ledger sum ${ledger}`;
    }
    out.push(m);
  }
  const missing = await db.$queryRaw<{ key: string; customerId: string }[]>`
    SELECT a.key, a."customerId" FROM "Action" a LEFT JOIN "PointsEntry" e ON e."actionKey" = a.key
    WHERE a.channel = 'points' AND a.state = 'sent' AND e.id IS NULL AND a."claimedAt" >= ${opts.since}`;
  for (const r of missing) {
    out.push({
      kind: "points_grant_missing",
      actionKey: r.key,
      customerId: r.customerId,
      detail: "action sent but no points entry",
    });
  }
  const orphans = await db.$queryRaw<{ actionKey: string; customerId: string; amount: number }[]>`
    SELECT e."actionKey", e."customerId", e.amount FROM "PointsEntry" e LEFT JOIN "Action" a ON a.key = e."actionKey"
    WHERE (a.key IS NULL OR a.state <> 'sent') AND e."createdAt" >= ${opts.since}`;
  for (const r of orphans) {
    out.push({
      kind: "points_entry_orphan",
      actionKey: r.actionKey,
      customerId: r.customerId,
      detail: `entry of ${r.amount} with no sent action`,
    });
  }
  return out;
}

export async function reconcileSms(db: Db, opts: ReconcileOptions): Promise<Mismatch[]> {
  if (!opts.sms)
    return [
      {
        kind: "sms_not_checked",
        detail: "Twilio is not configured (TWILIO_*): nothing to compare the SMS ledger with",
      },
    ];
  const out: Mismatch[] = [];
  // Each action with what its current attempt recorded it sent: the number and the body's hash
  // (attempts made before those were kept: the customer's number now, and any body).
  const actions = await db.$queryRaw<
    {
      key: string;
      customerId: string;
      state: string;
      providerId: string | null;
      callStartedAt: Date | null;
      updatedAt: Date;
      phone: string | null;
      contentHash: string | null;
      enrollmentId: bigint;
      fencingToken: number;
      stepId: string;
      attempt: number;
      reason: string | null;
    }[]
  >`
    SELECT a.key, a."customerId", a."stepId", a.attempt, a.state::text AS state, a.reason, a."providerId", a."callStartedAt", a."updatedAt",
      COALESCE(t.address, c.phone) AS phone, t."contentHash", a."enrollmentId", a."fencingToken"
    FROM "Action" a JOIN "Customer" c ON c.id = a."customerId"
    LEFT JOIN "ActionAttempt" t ON t."actionKey" = a.key AND t.attempt = a.attempt
    WHERE a.channel = 'sms' AND a.state IN ('sent', 'in_doubt') AND a."claimedAt" >= ${opts.since}`;
  const leasesMs = opts.claimLeaseMs + opts.callWindowMs;
  const byPhone = new Map<string, ProviderMessage[]>();
  const listFor = async (phone: string) => {
    let list = byPhone.get(phone);
    if (!list) {
      list = await opts.sms!.list(phone, new Date(opts.since.getTime() - 86_400_000));
      byPhone.set(phone, list);
    }
    return list;
  };
  for (const a of actions) {
    if (!a.phone) continue;
    const list = await listFor(a.phone);
    if (a.state === "sent") {
      if (a.providerId && !list.some((m) => m.sid === a.providerId)) {
        out.push({
          kind: "sms_sent_not_at_provider",
          actionKey: a.key,
          customerId: a.customerId,
          detail: `ledger says sent as ${a.providerId}; the provider's list has no such message`,
        });
      }
      continue;
    }
    const started = a.callStartedAt ?? a.updatedAt;
    // A status callback that reported its message; else messages with the attempt's body,
    // created around the call (up to two minutes after it), that no other action has as its own.
    const reported = await reportedMessage(db, a.key, a.attempt);
    const candidates = reported
      ? [{ sid: reported.sid }]
      : await unclaimedMatches(db, a.key, list, a.contentHash, {
          from: started,
          to: new Date(started.getTime() + 120_000),
          leasesMs,
        });
    if (candidates.length === 1) {
      const { sid } = candidates[0]!;
      const m: Mismatch = {
        kind: "sms_in_doubt_found",
        actionKey: a.key,
        customerId: a.customerId,
        detail: reported
          ? `Twilio reported ${sid} for it in a status callback`
          : `the provider has ${sid} from the time of the call`,
      };
      if (opts.resolve) {
        const recorded = await recordFoundSent(db, {
          key: a.key,
          token: a.fencingToken,
          providerId: sid,
          reason: "found_at_provider",
          resolvedBy: `reconcile: ${reported ? "status callback" : "provider message list"}`,
          now: opts.now,
        });
        m.resolution = recorded ? `sent as ${sid}` : MOVED_ON;
      }
      out.push(m);
      continue;
    }
    if (candidates.length > 1) {
      out.push({
        kind: "sms_in_doubt_ambiguous",
        actionKey: a.key,
        customerId: a.customerId,
        detail: `${candidates.length} messages to this number at the time of the call: find out which, then sendonce resolve --sent or --not-sent`,
      });
      continue;
    }
    // None with its body: messages from the time of the call with another that nothing else
    // explains may be it (Twilio changed the body), and are for a person once the workers' look-up
    // is overdue, as it holds them; one it held is for a person unless found above.
    const unmatched = await unexplainedMessages(
      db,
      a,
      list,
      a.contentHash ? { address: a.phone, contentHash: a.contentHash } : null,
      { from: started, to: new Date(started.getTime() + opts.callWindowMs), leasesMs },
    );
    const overdue = opts.now.getTime() - a.updatedAt.getTime() > opts.graceMs;
    if (a.reason === UNMATCHED || (unmatched.length > 0 && overdue)) {
      const named = unmatched.length > 0 ? unmatched.map((m) => m.sid).join(", ") : "a message";
      out.push({
        kind: "sms_in_doubt_unmatched",
        actionKey: a.key,
        customerId: a.customerId,
        detail: `no message with its body, but ${named} to this number from the time of the call, with another body (Twilio may have changed it): find out whether it is this text, then sendonce resolve --sent --provider-id SID or --not-sent (sendonce explain names what the workers' look-up saw)`,
      });
    } else if (overdue && unmatched.length === 0) {
      const m: Mismatch = {
        kind: "sms_in_doubt_absent",
        actionKey: a.key,
        customerId: a.customerId,
        detail: "not in the provider's list after the grace period",
      };
      if (opts.resolve) {
        // The worker's next run of the step looks it up again and releases it for one retry;
        // an enrollment that has ended has no run left to do that.
        const handed = await db.enrollment.updateMany({
          where: { id: a.enrollmentId, status: "active", currentStepId: a.stepId },
          data: { nextRunAt: opts.now },
        });
        m.resolution =
          handed.count > 0
            ? "handed back to the workers for one retry"
            : "none: its enrollment has ended or moved past the step, so nothing will retry it; record it with sendonce resolve --not-sent, and resend by hand if it should go";
      }
      out.push(m);
    }
  }
  return out;
}

export async function reconcileEmail(db: Db, opts: ReconcileOptions): Promise<Mismatch[]> {
  const out: Mismatch[] = [];
  // Each in-doubt email with the latest delivery event that says the provider took it, and the
  // Message-ID that event named.
  const doubtful = await db.$queryRaw<
    {
      key: string;
      customerId: string;
      fencingToken: number;
      updatedAt: Date;
      status: string | null;
      messageId: string | null;
    }[]
  >`
    SELECT a.key, a."customerId", a."fencingToken", a."updatedAt", d.rule AS status, d.detail->>'messageId' AS "messageId"
    FROM "Action" a
    LEFT JOIN LATERAL (
      SELECT rule, detail FROM "AuditEntry"
      WHERE kind = 'delivery_status' AND "actionKey" = a.key AND rule = ANY(${PROVIDER_TOOK_IT})
      ORDER BY at DESC LIMIT 1) d ON true
    WHERE a.channel = 'email' AND a.state = 'in_doubt' AND a."claimedAt" >= ${opts.since}`;
  for (const a of doubtful) {
    if (a.status) {
      const m: Mismatch = {
        kind: "email_in_doubt_delivered",
        actionKey: a.key,
        customerId: a.customerId,
        detail: `the provider reported "${a.status}" for its Message-ID`,
      };
      if (opts.resolve) {
        const recorded = await recordFoundSent(db, {
          key: a.key,
          token: a.fencingToken,
          providerId: a.messageId,
          reason: "found_at_provider",
          resolvedBy: `reconcile: delivery event ${a.status}`,
          now: opts.now,
        });
        m.resolution = recorded ? "sent" : MOVED_ON;
      }
      out.push(m);
    } else if (opts.now.getTime() - a.updatedAt.getTime() > opts.graceMs) {
      out.push({
        kind: "email_in_doubt_unconfirmed",
        actionKey: a.key,
        customerId: a.customerId,
        detail:
          "no delivery event for its Message-ID yet: ask the provider's logs, then sendonce resolve --sent or --not-sent",
      });
    }
  }
  const unknown = await db.$queryRaw<{ actionKey: string; rule: string }[]>`
    SELECT d."actionKey", string_agg(DISTINCT d.rule, ', ' ORDER BY d.rule) AS rule
    FROM "AuditEntry" d LEFT JOIN "Action" a ON a.key = d."actionKey"
    WHERE d.kind = 'delivery_status' AND d."journeyId" IS NULL AND d.at >= ${opts.since} AND a.key IS NULL
    GROUP BY d."actionKey"`;
  for (const u of unknown) {
    out.push({
      kind: "email_event_unknown_message",
      actionKey: u.actionKey,
      detail: `"${u.rule}" events for a Message-ID the ledger never sent`,
    });
  }
  return out;
}

/** Audits every mismatch, so reports and /metrics count them. */
export async function recordMismatches(db: Db, mismatches: Mismatch[], now: Date): Promise<void> {
  await recordAudit(
    db,
    ...mismatches.map((m) => ({
      kind: "reconcile_mismatch" as const,
      at: now,
      ...(m.customerId && { customerId: m.customerId }),
      ...(m.actionKey && { actionKey: m.actionKey }),
      rule: m.kind,
      detail: { detail: m.detail, ...(m.resolution && { resolution: m.resolution }) },
    })),
  );
}
