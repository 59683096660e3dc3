// The facts a send policy needs, read inside the claim transaction with the customer locked.
import type { Tx } from "../db/client";
import type { Journey, Policies, SendChannel } from "../journeys/types";
import type { RecentSend, SendFacts } from "../policies/evaluate";

/** States that count as a send for caps and resend policies: done, in flight, or maybe done. */
const COUNTED = ["sent", "claimed", "calling", "in_doubt", "failed_retryable"];

export async function loadSendFacts(
  tx: Tx,
  a: { key: string; customerId: string; stepId: string },
  journey: Journey,
  policies: Policies,
  channel: SendChannel,
  now: Date,
): Promise<SendFacts> {
  const step = journey.steps.find((s) => s.id === a.stepId);
  const resend =
    step && (step.kind === "email" || step.kind === "sms")
      ? step.resend
      : { kind: "per_reference" as const };
  const [customer] = await tx.$queryRaw<
    { email: string | null; phone: string | null; timezone: string | null }[]
  >`
    SELECT email, phone, timezone FROM "Customer" WHERE id = ${a.customerId}`;
  const consent = journey.consent
    ? await tx.consent.findUnique({
        where: {
          customerId_channel_topic: { customerId: a.customerId, channel, topic: journey.consent },
        },
        select: { status: true, grantedAt: true },
      })
    : null;
  const [last] =
    resend.kind === "per_reference"
      ? []
      : await tx.$queryRaw<{ at: Date }[]>`
          SELECT max(COALESCE("completedAt", "claimedAt")) AS at FROM "Action"
          WHERE "customerId" = ${a.customerId} AND "journeyId" = ${journey.id} AND "stepId" = ${a.stepId}
            AND key <> ${a.key} AND state::text = ANY(${COUNTED})`;
  const caps = [...policies.caps, ...journey.caps];
  const window = Math.max(0, ...caps.map((c) => c.windowMs));
  const recentSends =
    journey.category === "marketing" && caps.length > 0
      ? await tx.$queryRaw<RecentSend[]>`
          SELECT "journeyId", channel::text AS channel, "claimedAt" AS at FROM "Action"
          WHERE "customerId" = ${a.customerId} AND channel IN ('email', 'sms') AND key <> ${a.key}
            AND state::text = ANY(${COUNTED}) AND "claimedAt" > ${new Date(now.getTime() - window)}`
      : [];
  return {
    now,
    channel,
    category: journey.category,
    journeyId: journey.id,
    ...(journey.consent !== undefined && { topic: journey.consent }),
    address: (channel === "email" ? customer?.email : customer?.phone) ?? null,
    ...(consent && { consent }),
    resend,
    ...(last?.at && { lastSendOfStep: last.at }),
    globalCaps: policies.caps,
    journeyCaps: journey.caps,
    onCap: journey.onCap ?? policies.onCap,
    recentSends,
    ...(policies.quietHours[channel] && { quietHours: policies.quietHours[channel] }),
    timezone: customer?.timezone ?? policies.defaultTimezone,
  };
}
