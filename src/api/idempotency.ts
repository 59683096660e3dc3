// The Idempotency-Key header, with the semantics of the IETF draft and of Stripe: the first
// response (status and body) is stored and replayed for a repeat; the same key with another
// payload is a 422; the same key while the first request is in flight is a 409. Keys are
// scoped per API key and kept for a configurable time (at least 24 h).
import { createHash } from "node:crypto";
import type { Db } from "../db/client";
import { canonicalJson } from "../ingest/event";

export interface StoredResponse {
  status: number;
  body: unknown;
}

export type IdempotencyClaim =
  /** Run the request; `since` is the key's claim, which completing or releasing it names. */
  | { kind: "run"; since: Date }
  | { kind: "replay"; response: StoredResponse }
  | { kind: "mismatch" }
  | { kind: "in_flight"; retryAfterSeconds: number };

export interface IdempotencyOptions {
  ttlMs: number;
  /**
   * An in-flight key holds for this long, renewed while its request runs (renewKey): one that
   * runs out belongs to a request that died, and the key may run again.
   */
  inFlightLeaseMs: number;
}

/**
 * The key from one Idempotency-Key header: the draft defines it as a structured-field string
 * (`"abc"`), and most clients send it bare (`abc`); both name the same key.
 */
export function idempotencyKeyValue(header: string | string[]): string | undefined {
  if (typeof header !== "string") return undefined;
  const quoted = /^"((?:[^"\\]|\\.)*)"$/.exec(header);
  const key = quoted ? quoted[1]!.replace(/\\(.)/g, "$1") : header;
  return key.length > 0 && key.length <= 255 ? key : undefined;
}

export function requestHash(method: string, path: string, body: unknown): string {
  return createHash("sha256")
    .update(`${method} ${path}\n${canonicalJson(body ?? null)}`)
    .digest("hex");
}

/** Takes the key for this request, or says how to answer instead. */
export async function claimKey(
  db: Db,
  apiKeyHash: string,
  key: string,
  hash: string,
  now: Date,
  opts: IdempotencyOptions,
): Promise<IdempotencyClaim> {
  // In flight, the key expires with its lease; completed, a ttl after its answer.
  const expiresAt = new Date(now.getTime() + opts.inFlightLeaseMs);
  const inserted = await db.$queryRaw<unknown[]>`
    INSERT INTO "IdempotencyKey" ("apiKeyHash", key, "requestHash", status, "createdAt", "expiresAt")
    VALUES (${apiKeyHash}, ${key}, ${hash}, 'in_flight', ${now}, ${expiresAt})
    ON CONFLICT ("apiKeyHash", key) DO NOTHING
    RETURNING 1`;
  if (inserted.length === 1) return { kind: "run", since: now };
  const row = await db.idempotencyKey.findUnique({
    where: { apiKeyHash_key: { apiKeyHash, key } },
  });
  // Gone since the insert (released or reaped): race for it again.
  if (!row) return claimKey(db, apiKeyHash, key, hash, now, opts);
  // An expired key, or an in-flight one whose request died (no renewal), is free again. The
  // DELETE re-checks, so a fresh row that another request inserted meanwhile stays; the
  // retried insert lets exactly one request run.
  // A key claimed by a version before leases were renewed expires a ttl after its start: in
  // flight past a lease and due later than any renewed key can be, its request died.
  const leaseEnd = new Date(now.getTime() + opts.inFlightLeaseMs);
  const staleBefore = new Date(now.getTime() - opts.inFlightLeaseMs);
  const unrenewed =
    row.status === "in_flight" && row.expiresAt > leaseEnd && row.createdAt < staleBefore;
  if (row.expiresAt <= now || unrenewed) {
    await db.$executeRaw`
      DELETE FROM "IdempotencyKey"
      WHERE "apiKeyHash" = ${apiKeyHash} AND key = ${key}
        AND ("expiresAt" <= ${now} OR (status = 'in_flight' AND "expiresAt" > ${leaseEnd}
                                        AND "createdAt" < ${staleBefore}))`;
    return claimKey(db, apiKeyHash, key, hash, now, opts);
  }
  if (row.requestHash !== hash) return { kind: "mismatch" };
  if (row.status === "in_flight") return { kind: "in_flight", retryAfterSeconds: 1 };
  return { kind: "replay", response: { status: row.responseStatus!, body: row.responseBody } };
}

/**
 * Stores the first response for replay. Only the request that holds the key's claim does: one
 * that outlived its lease, and whose key another request took over, stores nothing.
 */
export async function completeKey(
  db: Db,
  apiKeyHash: string,
  key: string,
  since: Date,
  response: StoredResponse,
  now: Date,
  ttlMs: number,
): Promise<void> {
  await db.idempotencyKey.updateMany({
    where: { apiKeyHash, key, status: "in_flight", createdAt: since },
    data: {
      status: "completed",
      responseStatus: response.status,
      responseBody: response.body as object,
      completedAt: now,
      expiresAt: new Date(now.getTime() + ttlMs),
    },
  });
}

/**
 * Extends the lease of this request's claim to `until`, while it runs: a long batch keeps its
 * key, and a retry meanwhile gets 409, however long it takes. Nothing if the claim is gone.
 */
export async function renewKey(
  db: Db,
  apiKeyHash: string,
  key: string,
  since: Date,
  until: Date,
): Promise<void> {
  await db.idempotencyKey.updateMany({
    where: { apiKeyHash, key, status: "in_flight", createdAt: since },
    data: { expiresAt: until },
  });
}

/**
 * A request that failed on our side leaves nothing to replay: the client may retry. Only the
 * claim of this request is released, not one that took the key over after its lease.
 */
export async function releaseKey(
  db: Db,
  apiKeyHash: string,
  key: string,
  since: Date,
): Promise<void> {
  await db.idempotencyKey.deleteMany({
    where: { apiKeyHash, key, status: "in_flight", createdAt: since },
  });
}

/** Deletes expired keys; returns how many. */
export async function reapKeys(db: Db, now: Date): Promise<number> {
  return (await db.idempotencyKey.deleteMany({ where: { expiresAt: { lte: now } } })).count;
}
