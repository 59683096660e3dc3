// Twilio's webhooks: delivery status callbacks (the action key is in the URL) and inbound
// messages (STOP / START keywords). Both are verified with X-Twilio-Signature before anything
// is read; an unsigned or forged request changes nothing.
import { sqlOf } from "../db/sql";
import twilio from "twilio";
import type { Db } from "../db/client";
import { TX_OPTIONS } from "../db/client";
import { REPORTED_ACTION, openToFinding, recordFoundSent } from "../ledger/actions";
import { recordAudit } from "../ledger/audit";
import { HANDED_ON } from "../ledger/provider-match";
import { STOP_OPT_OUT, optIn, optOut } from "../policies/consent";

export interface TwilioWebhookRequest {
  /** The full URL Twilio requested, as configured (PUBLIC_BASE_URL + path + query). */
  url: string;
  /** The form fields of the POST body. */
  params: Record<string, string>;
  signature: string | undefined;
}

export interface WebhookDeps {
  db: Db;
  authToken: string;
  now: () => Date;
}

export type WebhookResult =
  { status: 204 | 200; body?: string } | { status: 403 | 400; body: string };

/** Twilio's own opt-out and opt-in keywords. */
const STOP = new Set([
  "STOP",
  "STOPALL",
  "UNSUBSCRIBE",
  "CANCEL",
  "END",
  "QUIT",
  "REVOKE",
  "OPTOUT",
]);
const START = new Set(["START", "YES", "UNSTOP", "OPTIN"]);

function verified(deps: WebhookDeps, req: TwilioWebhookRequest): boolean {
  return (
    !!req.signature && twilio.validateRequest(deps.authToken, req.signature, req.url, req.params)
  );
}

/**
 * Records a delivery status (queued, sent, delivered, undelivered, failed) for an action. One
 * that says Twilio handed the attempt's message on settles the action if it is in doubt, or a
 * person settled it as never sent: it was sent. An earlier status (`queued`), and a callback
 * URL without the attempt (from before it was added), are left to the look-up, by which time a
 * `failed` would have come.
 */
export async function handleStatusCallback(
  deps: WebhookDeps,
  req: TwilioWebhookRequest,
): Promise<WebhookResult> {
  if (!verified(deps, req)) return { status: 403, body: "invalid X-Twilio-Signature" };
  const query = new URL(req.url).searchParams;
  const key = query.get("key");
  // Which attempt's message it is; callback URLs of messages sent before it was added lack it.
  const attempt = Number(query.get("attempt")) || undefined;
  const status = req.params.MessageStatus;
  if (!key || !status) return { status: 400, body: "key and MessageStatus are required" };
  const action = await deps.db.action.findUnique({ where: { key }, select: REPORTED_ACTION });
  // An unknown key is acknowledged (Twilio would retry otherwise) but records nothing.
  if (!action) return { status: 204 };
  await recordAudit(deps.db, {
    kind: "delivery_status",
    at: deps.now(),
    customerId: action.customerId,
    journeyId: action.journeyId,
    stepId: action.stepId,
    enrollmentId: action.enrollmentId,
    actionKey: key,
    rule: status,
    detail: {
      providerId: req.params.MessageSid,
      status,
      ...(attempt && { attempt }),
      ...(req.params.ErrorCode && { errorCode: req.params.ErrorCode }),
    },
  });
  const sid = req.params.MessageSid;
  if (
    sid &&
    action.channel === "sms" &&
    HANDED_ON.includes(status) &&
    attempt === action.attempt &&
    openToFinding(action)
  )
    await recordFoundSent(deps.db, {
      key,
      token: action.fencingToken,
      providerId: sid,
      reason: "found_at_provider",
      resolvedBy: `status callback ${status}`,
      now: deps.now(),
    });
  return { status: 204 };
}

/**
 * An inbound text: STOP revokes every SMS topic of the customers with that number, also any
 * granted later with an earlier date (ALL_TOPICS); START restores what a STOP revoked. Anything else is ignored. Answers empty TwiML.
 */
export async function handleInboundMessage(
  deps: WebhookDeps,
  req: TwilioWebhookRequest,
): Promise<WebhookResult> {
  if (!verified(deps, req)) return { status: 403, body: "invalid X-Twilio-Signature" };
  const from = req.params.From;
  const word = (req.params.Body ?? "").trim().toUpperCase();
  const twiml = {
    status: 200 as const,
    body: '<?xml version="1.0" encoding="UTF-8"?><Response></Response>',
  };
  if (!from || (!STOP.has(word) && !START.has(word))) return twiml;
  const now = deps.now();
  await deps.db.$transaction(async (tx) => {
    // Locked in id order, bytewise as group transactions sort them, as grants lock a customer
    // before they look for an opt-out.
    const customers = await tx.$queryRaw<{ id: string }[]>`
      SELECT id FROM "Customer" WHERE phone = ${from} ORDER BY id COLLATE "C" FOR NO KEY UPDATE`;
    for (const { id } of customers) {
      // START undoes a STOP, and the opt-out a 21610 recorded (Twilio lifts its block on the
      // number when the person replies START); not what the person had refused before.
      const changed = STOP.has(word)
        ? await optOut(sqlOf(tx), id, "sms", STOP_OPT_OUT, now)
        : await optIn(sqlOf(tx), id, "sms", "sms_start", now);
      await recordAudit(tx, {
        kind: STOP.has(word) ? "consent_revoked" : "consent_granted",
        at: now,
        customerId: id,
        rule: `sms_${word.toLowerCase()}`,
        detail: { channel: "sms", topics: changed },
      });
    }
  }, TX_OPTIONS);
  return twiml;
}
