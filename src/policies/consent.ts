// Consent per customer, channel and topic. Changes apply in occurredAt order: an older change
// that arrives late never overwrites a newer one. The person's own opt-out or opt-in (a link,
// a reply) applies as of now, whatever the stored change's date.
import type { Sql } from "../db/sql";
import type { Statement } from "../db/sql";
import { poolOf, stmt } from "../db/sql";
import type { Db } from "../db/client";
import type { Channel, ConsentStatus } from "../generated/prisma/client";

/**
 * The topic of a channel-wide opt-out (an SMS STOP, a provider's "recipient opted out"): every
 * topic, also those the customer gets consent for later with an earlier date.
 */
export const ALL_TOPICS = "*";

/** The source of the consents a provider's "recipient opted out" (Twilio 21610) revoked. */
export const PROVIDER_OPT_OUT = "provider_21610";
/** The source of the consents an inbound STOP revoked. */
export const STOP_OPT_OUT = "sms_stop";
/** What a START restores: the topics a channel-wide opt-out revoked, and nothing else. */
export const OPT_OUT_SOURCES = [STOP_OPT_OUT, PROVIDER_OPT_OUT] as const;

export interface ConsentChange {
  customerId: string;
  channel: Extract<Channel, "email" | "sms">;
  topic: string;
  status: ConsentStatus;
  occurredAt: Date;
  source: string;
  /**
   * The person's own opt-out or opt-in, just now (an unsubscribe link, a STOP or START reply):
   * it applies even over a stored change dated later (a sender's clock ahead).
   */
  own?: boolean;
}

/**
 * Applies one change if it is newer than what is stored; returns whether it applied. A grant
 * dated no later than a channel-wide opt-out is stored as revoked by that opt-out: a STOP
 * covers the topics the customer had then, also those recorded only afterwards.
 */
export async function applyConsent(tx: Sql, given: ConsentChange): Promise<boolean> {
  let change = given;
  if (change.status === "granted" && change.topic !== ALL_TOPICS && !change.own) {
    // The customer's row is locked first, as a STOP locks it before it reads their topics:
    // a grant and a STOP at the same moment cannot both miss each other. The opt-out is read
    // by a statement of its own, after the lock: one that waited for a STOP to commit would
    // still read with the snapshot it took before (the STOP locks the customer, it does not
    // change it, so Postgres would not read the row again) and miss the opt-out.
    const [, found] = await tx.many(
      stmt`SELECT 1 FROM "Customer" WHERE id = ${change.customerId} FOR NO KEY UPDATE`,
      stmt`SELECT "occurredAt", source FROM "Consent"
        WHERE "customerId" = ${change.customerId} AND channel = ${change.channel}::"Channel"
          AND topic = ${ALL_TOPICS} AND status = 'revoked' AND "occurredAt" >= ${change.occurredAt}`,
    );
    const optOut = found?.[0] as { occurredAt: Date; source: string } | undefined;
    if (optOut) {
      change = {
        ...change,
        status: "revoked",
        occurredAt: optOut.occurredAt,
        source: optOut.source,
      };
    }
  }
  const granted = change.status === "granted" ? change.occurredAt : null;
  const rows = await tx.run`
    INSERT INTO "Consent" ("customerId", channel, topic, status, "occurredAt", "grantedAt", source, "updatedAt")
    VALUES (${change.customerId}, ${change.channel}::"Channel", ${change.topic},
            ${change.status}::"ConsentStatus", ${change.occurredAt}, ${granted}, ${change.source}, now())
    ON CONFLICT ("customerId", channel, topic) DO UPDATE SET
      status = EXCLUDED.status,
      "occurredAt" = EXCLUDED."occurredAt",
      -- a fresh grant after a revocation is what on_reopt_in waits for
      "grantedAt" = CASE WHEN EXCLUDED.status = 'granted' AND "Consent".status = 'revoked'
                         THEN EXCLUDED."grantedAt"
                         ELSE COALESCE("Consent"."grantedAt", EXCLUDED."grantedAt") END,
      source = EXCLUDED.source,
      "updatedAt" = now()
    WHERE "Consent"."occurredAt" < EXCLUDED."occurredAt" OR ${change.own === true}
      -- Two changes at the same moment: a revocation wins, whichever arrives last.
      OR ("Consent"."occurredAt" = EXCLUDED."occurredAt"
          AND NOT (EXCLUDED.status = 'granted' AND "Consent".status = 'revoked'))`;
  if (rows === 0 && change.status === "revoked") {
    // A revocation that arrives after a channel-wide opt-out revoked the topic still happened
    // before it: the topic was the person's own choice, not the opt-out's, and a START must
    // not grant it again.
    await tx.run`
      UPDATE "Consent" SET source = ${change.source}, "updatedAt" = now()
      WHERE "customerId" = ${change.customerId} AND channel = ${change.channel}::"Channel" AND topic = ${change.topic}
        AND topic <> ${ALL_TOPICS} AND status = 'revoked' AND source IN (${OPT_OUT_SOURCES[0]}, ${OPT_OUT_SOURCES[1]})
        AND "occurredAt" > ${change.occurredAt}`;
    // A revocation that arrives after a newer grant still happened before it: that grant was
    // a fresh opt-in (what on_reopt_in waits for), whatever order the two arrived in.
    await tx.run`
      UPDATE "Consent" SET "grantedAt" = "occurredAt"
      WHERE "customerId" = ${change.customerId} AND channel = ${change.channel}::"Channel" AND topic = ${change.topic}
        AND status = 'granted' AND "occurredAt" > ${change.occurredAt}
        AND ("grantedAt" IS NULL OR "grantedAt" < ${change.occurredAt})`;
  }
  return rows > 0;
}

/**
 * A channel-wide opt-out (an inbound STOP, a provider's "recipient opted out"): revokes every
 * granted topic of the channel, and records the opt-out (ALL_TOPICS) that later grants with
 * earlier dates yield to. Topics already revoked keep their own source, so that undoing the
 * opt-out (optIn) does not grant what the person had refused before it. Runs in the caller's
 * transaction; returns the topics it revoked.
 */
export async function optOut(
  tx: Sql,
  customerId: string,
  channel: "email" | "sms",
  source: string,
  now: Date,
): Promise<string[]> {
  const topics = await lockedTopics(
    tx,
    customerId,
    channel,
    stmt`status = 'granted' AND topic <> ${ALL_TOPICS}`,
  );
  const revoked = [ALL_TOPICS, ...topics];
  await applyOwn(tx, { customerId, channel, status: "revoked", source, now }, revoked);
  return revoked;
}

/** Undoes a channel-wide opt-out (a START): grants again what an opt-out revoked. */
export async function optIn(
  tx: Sql,
  customerId: string,
  channel: "email" | "sms",
  source: string,
  now: Date,
): Promise<string[]> {
  const granted = await lockedTopics(
    tx,
    customerId,
    channel,
    stmt`status = 'revoked' AND source IN (${OPT_OUT_SOURCES[0]}, ${OPT_OUT_SOURCES[1]})`,
  );
  await applyOwn(tx, { customerId, channel, status: "granted", source, now }, granted);
  return granted;
}

/**
 * The customer's topics of a channel that `which` selects, with the customer locked first: a
 * grant being written at the same moment either comes first and is seen here, or comes after
 * and sees what this transaction writes (applyConsent locks the customer too).
 */
async function lockedTopics(
  tx: Sql,
  customerId: string,
  channel: "email" | "sms",
  which: Statement,
): Promise<string[]> {
  await tx`SELECT 1 FROM "Customer" WHERE id = ${customerId} FOR NO KEY UPDATE`;
  const rows = await tx<{ topic: string }>`
    SELECT topic FROM "Consent"
    WHERE "customerId" = ${customerId} AND channel = ${channel}::"Channel" AND ${which}
    ORDER BY topic`;
  return rows.map((r) => r.topic);
}

/** The person's own change of each of `topics`, as of now. */
async function applyOwn(
  tx: Sql,
  change: Pick<ConsentChange, "customerId" | "channel" | "status" | "source"> & { now: Date },
  topics: string[],
): Promise<void> {
  const { now, ...rest } = change;
  for (const topic of topics) {
    await applyConsent(tx, { ...rest, topic, occurredAt: now, own: true });
  }
}

/** optOut in a transaction of its own. */
export async function revokeChannel(
  db: Db,
  customerId: string,
  channel: "email" | "sms",
  source: string,
  now: Date,
): Promise<void> {
  await poolOf(db).tx((tx) => optOut(tx, customerId, channel, source, now));
}
