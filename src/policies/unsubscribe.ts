// Unsubscribe links: a token names the customer, channel and topic, signed with HMAC-SHA256
// under SENDONCE_SECRET, so it can be neither forged nor altered to unsubscribe someone else
// from something else. RFC 8058 one-click: List-Unsubscribe plus List-Unsubscribe-Post.
import { createHmac, timingSafeEqual } from "node:crypto";

export interface UnsubscribeTarget {
  customerId: string;
  channel: "email" | "sms";
  topic: string;
}

function sign(secret: string, payload: string): Buffer {
  return createHmac("sha256", secret).update(`sendonce-unsubscribe:${payload}`).digest();
}

export function signUnsubscribeToken(secret: string, t: UnsubscribeTarget): string {
  const payload = Buffer.from(
    JSON.stringify({ c: t.customerId, ch: t.channel, t: t.topic }),
  ).toString("base64url");
  return `${payload}.${sign(secret, payload).toString("base64url")}`;
}

/** The target of a genuine token; undefined for anything forged, altered or malformed. */
export function verifyUnsubscribeToken(
  secret: string,
  token: string,
): UnsubscribeTarget | undefined {
  const [payload, mac, extra] = token.split(".");
  if (!payload || !mac || extra !== undefined) return undefined;
  const expected = sign(secret, payload);
  const given = Buffer.from(mac, "base64url");
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined;
  try {
    const p = JSON.parse(Buffer.from(payload, "base64url").toString("utf8")) as {
      c?: unknown;
      ch?: unknown;
      t?: unknown;
    };
    if (typeof p.c !== "string" || (p.ch !== "email" && p.ch !== "sms") || typeof p.t !== "string")
      return undefined;
    return { customerId: p.c, channel: p.ch, topic: p.t };
  } catch {
    return undefined;
  }
}

export interface UnsubscribeLinks {
  url: string;
  headers: Record<string, string>;
}

/** The page link and the RFC 8058 headers for a marketing email. */
export function unsubscribeLinks(
  secret: string,
  publicBaseUrl: string,
  mailDomain: string,
  target: UnsubscribeTarget,
): UnsubscribeLinks {
  const token = signUnsubscribeToken(secret, target);
  const url = `${publicBaseUrl}/v1/unsubscribe/${token}`;
  return {
    url,
    headers: {
      "List-Unsubscribe": `<${url}>, <mailto:unsubscribe@${mailDomain}?subject=unsubscribe%20${token}>`,
      "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    },
  };
}
