// The unsubscribe link of a marketing email: GET shows a confirmation page (mail scanners
// follow links, so a GET changes nothing); POST — the page's button, or a mail client's
// RFC 8058 one-click — revokes the topic at once.
import { sqlOf } from "../db/sql";
import type { Db } from "../db/client";
import { TX_OPTIONS } from "../db/client";
import { recordAudit } from "../ledger/audit";
import { applyConsent } from "../policies/consent";
import { verifyUnsubscribeToken } from "../policies/unsubscribe";

export interface UnsubscribeDeps {
  db: Db;
  secret: string;
  now: () => Date;
}

export interface HtmlResult {
  status: 200 | 400;
  html: string;
}

const page = (title: string, body: string) =>
  `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width"><title>${title}</title>` +
  `<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;color:#222}button{font-size:1rem;padding:.6rem 1.2rem}</style>` +
  `</head><body><h1>${title}</h1>${body}</body></html>`;

const escape = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const INVALID: HtmlResult = {
  status: 400,
  html: page(
    "This link is not valid",
    "<p>It may have been altered or cut short. Use the link in the email as it is.</p>",
  ),
};

export function showUnsubscribe(deps: UnsubscribeDeps, token: string): HtmlResult {
  const target = verifyUnsubscribeToken(deps.secret, token);
  if (!target) return INVALID;
  return {
    status: 200,
    html: page(
      "Unsubscribe",
      `<p>Stop receiving <strong>${escape(target.topic)}</strong> emails?</p>` +
        `<form method="post"><button type="submit">Unsubscribe</button></form>`,
    ),
  };
}

export async function confirmUnsubscribe(
  deps: UnsubscribeDeps,
  token: string,
): Promise<HtmlResult> {
  const target = verifyUnsubscribeToken(deps.secret, token);
  if (!target) return INVALID;
  const now = deps.now();
  await deps.db.$transaction(async (tx) => {
    await tx.$executeRaw`INSERT INTO "Customer" (id, "updatedAt") VALUES (${target.customerId}, now()) ON CONFLICT (id) DO NOTHING`;
    await applyConsent(sqlOf(tx), {
      ...target,
      status: "revoked",
      occurredAt: now,
      source: "unsubscribe_link",
      own: true,
    });
    await recordAudit(tx, {
      kind: "consent_revoked",
      at: now,
      customerId: target.customerId,
      rule: "unsubscribe_link",
      detail: { channel: target.channel, topics: [target.topic] },
    });
  }, TX_OPTIONS);
  return {
    status: 200,
    html: page(
      "You are unsubscribed",
      `<p>You will no longer receive <strong>${escape(target.topic)}</strong> emails.</p>`,
    ),
  };
}
