// The facts a send policy needs, read inside the claim transaction with the customer locked.
import type { Sql, Statement } from "../db/sql";
import { stmt } from "../db/sql";
import type { ConsentStatus } from "../generated/prisma/client";
import type { Journey, Policies, SendChannel } from "../journeys/types";
import { ALL_TOPICS } from "../policies/consent";
import type { RecentSend, SendFacts } from "../policies/evaluate";

/** States that count as a send for caps and resend policies: done, in flight, or maybe done. */
const COUNTED = ["sent", "claimed", "calling", "in_doubt", "failed_retryable"];

/** Runs the facts query (sendFactsQuery) in `tx`. */
export async function loadSendFacts(tx: Sql, query: FactsQuery): Promise<SendFacts> {
  const [rows] = await tx.many(query.statement);
  return query.read(rows!);
}

export interface FactsQuery {
  statement: Statement;
  read(rows: unknown[]): SendFacts;
}

interface FactsRow {
  email: string | null;
  phone: string | null;
  timezone: string | null;
  consentStatus: ConsentStatus | null;
  grantedAt: Date | null;
  lastAt: Date | null;
  recent: (Omit<RecentSend, "at"> & { at: string })[] | null;
}

/**
 * The facts as one statement, and how to read its rows: the claim sends it in the round trip
 * that takes the customer lock, after the lock.
 */
export function sendFactsQuery(
  a: { key: string; customerId: string; stepId: string },
  journey: Journey,
  policies: Policies,
  channel: SendChannel,
  now: Date,
): FactsQuery {
  const step = journey.steps.find((s) => s.id === a.stepId);
  const resend =
    step && (step.kind === "email" || step.kind === "sms")
      ? step.resend
      : { kind: "per_reference" as const };
  const caps = [...policies.caps, ...journey.caps];
  const window = Math.max(0, ...caps.map((c) => c.windowMs));
  // A marketing journey deployed before a topic was required (enrollments keep their version)
  // reads the channel-wide opt-out instead: a STOP still stops it.
  const topic = journey.consent ?? (journey.category === "marketing" ? ALL_TOPICS : null);
  const lastOfStep = resend.kind !== "per_reference";
  const capped = journey.category === "marketing" && caps.length > 0;
  // One round trip: the address, the consent, the step's last send and the recent sends, each
  // read only when a policy needs it. Each combination is its own text, so each is prepared
  // with a plan of its own.
  const statement = stmt`
    SELECT c.email, c.phone, c.timezone,
      s.status AS "consentStatus", s."grantedAt",
      ${
        lastOfStep
          ? stmt`(SELECT max(COALESCE("completedAt", "claimedAt")) FROM "Action"
              WHERE "customerId" = ${a.customerId} AND "journeyId" = ${journey.id} AND "stepId" = ${a.stepId}
                AND key <> ${a.key} AND state::text = ANY(${COUNTED}))`
          : stmt`NULL::timestamptz`
      } AS "lastAt",
      ${
        capped
          ? stmt`(SELECT json_agg(json_build_object('journeyId', "journeyId", 'channel', channel::text, 'at', "claimedAt"))
              FROM "Action"
              WHERE "customerId" = ${a.customerId} AND channel IN ('email', 'sms') AND key <> ${a.key}
                AND state::text = ANY(${COUNTED}) AND "claimedAt" > ${new Date(now.getTime() - window)})`
          : stmt`NULL::json`
      } AS recent
    FROM "Customer" c
    LEFT JOIN "Consent" s ON s."customerId" = c.id AND s.channel = ${channel}::"Channel" AND s.topic = ${topic}
    WHERE c.id = ${a.customerId}`;
  return {
    statement,
    read: (rows) =>
      factsOf(rows[0] as FactsRow | undefined, { now, channel, journey, policies, resend }),
  };
}

function factsOf(
  row: FactsRow | undefined,
  {
    now,
    channel,
    journey,
    policies,
    resend,
  }: {
    now: Date;
    channel: SendChannel;
    journey: Journey;
    policies: Policies;
    resend: SendFacts["resend"];
  },
): SendFacts {
  const consent = row?.consentStatus
    ? { status: row.consentStatus, grantedAt: row.grantedAt }
    : undefined;
  const last = row?.lastAt ? { at: row.lastAt } : undefined;
  // json_agg gives the times as text.
  const recentSends: RecentSend[] = (row?.recent ?? []).map((r) => ({
    ...r,
    at: new Date(r.at),
  }));
  return {
    now,
    channel,
    category: journey.category,
    journeyId: journey.id,
    ...(journey.consent !== undefined && { topic: journey.consent }),
    address: (channel === "email" ? row?.email : row?.phone) ?? null,
    ...(consent && { consent }),
    resend,
    ...(last?.at && { lastSendOfStep: last.at }),
    globalCaps: policies.caps,
    journeyCaps: journey.caps,
    onCap: journey.onCap ?? policies.onCap,
    recentSends,
    ...(policies.quietHours[channel] && { quietHours: policies.quietHours[channel] }),
    timezone: row?.timezone ?? policies.defaultTimezone,
  };
}
