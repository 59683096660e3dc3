// The HTTP API against real Postgres and Redis and a real worker process: authentication,
// Idempotency-Key semantics under 200 concurrent requests, validation that names the field,
// profiles applied in occurredAt order, and events that survive a Redis flush.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { claimKey, completeKey, reapKeys, releaseKey } from "../../src/api/idempotency";
import type { RunningApi } from "../support/api";
import { API_KEY, startApi } from "../support/api";
import { createLogger } from "../../src/log";
import { signUnsubscribeToken } from "../../src/policies/unsubscribe";
import { SECRET, useHarness } from "../support/harness";
import { WELCOME_POINTS, journeysDir } from "../support/journeys";
import { flushPrefix } from "../support/redis";
import { eventually, startWorker } from "../support/workers";

const JOURNEYS = journeysDir({
  "welcome.yaml": WELCOME_POINTS,
});

const event = (id: string, customerId = `c_${id}`, extra: object = {}) => ({
  id,
  type: "signed_up",
  customerId,
  occurredAt: "2026-11-02T09:00:00Z",
  ...extra,
});

describe("the HTTP API", () => {
  const h = useHarness(JOURNEYS);
  let api: RunningApi;
  beforeAll(async () => {
    api = await startApi(h());
  });
  afterAll(() => api.close());

  it("refuses requests without a valid bearer key, as problem+json", async () => {
    const none = await fetch(`${api.url}/v1/events`, {
      method: "POST",
      body: "{}",
      headers: { "content-type": "application/json" },
    });
    expect(none.status).toBe(401);
    expect(none.headers.get("content-type")).toMatch(/^application\/problem\+json/);
    expect(none.headers.get("www-authenticate")).toMatch(/^Bearer/);
    const wrong = await api.post("/v1/events", event("e0"), {
      authorization: "Bearer not-the-key-at-all-000000",
    });
    expect(wrong.status).toBe(401);
    expect(await wrong.text()).not.toContain(API_KEY);
  });

  it("stores one event and enrolls once for 200 concurrent POSTs under one Idempotency-Key", async () => {
    const responses = await Promise.all(
      Array.from({ length: 200 }, () =>
        api.post("/v1/events", event("e_race"), { "idempotency-key": "race-1" }),
      ),
    );
    const kinds = responses.map((r) =>
      r.status === 202
        ? r.headers.get("idempotent-replayed") === "true"
          ? "replay"
          : "first"
        : `${r.status}`,
    );
    expect(kinds.filter((k) => k === "first")).toHaveLength(1);
    expect(kinds.every((k) => ["first", "replay", "409"].includes(k))).toBe(true);
    for (const r of responses.filter((x) => x.status === 409))
      expect(r.headers.get("retry-after")).toBe("1");
    // Every answer, first or replayed, is the same text.
    const bodies = await Promise.all(
      responses.filter((r) => r.status === 202).map((r) => r.text()),
    );
    expect(new Set(bodies)).toEqual(
      new Set([JSON.stringify({ id: "e_race", source: "default", status: "accepted" })]),
    );

    const db = h().schema.db;
    expect(await db.event.count({ where: { eventId: "e_race" } })).toBe(1);
    await eventually(async () =>
      (await db.pointsEntry.count({ where: { customerId: "c_e_race" } })) === 1 ? true : undefined,
    );
    expect(await db.enrollment.count({ where: { customerId: "c_e_race" } })).toBe(1);
  });

  it("replays a batch's answer as the same text, keys in the same order", async () => {
    const batch = { events: [event("e_b1"), event("e_b2"), event("e_b1")] };
    const first = await api.post("/v1/events", batch, { "idempotency-key": "batch-1" });
    const again = await api.post("/v1/events", batch, { "idempotency-key": "batch-1" });
    expect([first.status, again.status, again.headers.get("idempotent-replayed")]).toEqual([
      202,
      202,
      "true",
    ]);
    const text = await first.text();
    expect(Object.keys(JSON.parse(text) as object)).toEqual([
      "accepted",
      "duplicate",
      "conflict",
      "invalid",
      "results",
    ]);
    expect(await again.text()).toBe(text);
  });

  it("answers 422 for a key reused with another payload, and 409 while the first is in flight", async () => {
    expect((await api.post("/v1/events", event("e_k1"), { "idempotency-key": "k1" })).status).toBe(
      202,
    );
    const reused = await api.post("/v1/events", event("e_k1_other"), { "idempotency-key": "k1" });
    expect(reused.status).toBe(422);

    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const slow = await startApi(h(), { afterCommit: () => gate });
    try {
      const first = slow.post("/v1/events", event("e_slow"), { "idempotency-key": "k2" });
      await eventually(async () =>
        (await h().schema.db.event.count({ where: { eventId: "e_slow" } })) === 1
          ? true
          : undefined,
      );
      const second = await slow.post("/v1/events", event("e_slow"), { "idempotency-key": "k2" });
      expect(second.status).toBe(409);
      expect(second.headers.get("retry-after")).toBe("1");
      release();
      expect((await first).status).toBe(202);
      const replay = await slow.post("/v1/events", event("e_slow"), { "idempotency-key": "k2" });
      expect([replay.status, replay.headers.get("idempotent-replayed")]).toEqual([202, "true"]);
    } finally {
      release();
      await slow.close();
    }
  });

  it("deduplicates by event id without the header, and rejects a reused id with another payload", async () => {
    expect(await (await api.post("/v1/events", event("e_plain"))).json()).toMatchObject({
      status: "accepted",
    });
    expect(await (await api.post("/v1/events", event("e_plain"))).json()).toMatchObject({
      status: "duplicate",
    });
    const conflict = await api.post("/v1/events", event("e_plain", "c_someone_else"));
    expect(conflict.status).toBe(409);
    expect((await conflict.json()) as { title: string }).toMatchObject({
      title: "Event id conflict",
    });
  });

  it("names the bad field: missing, malformed timestamp, unknown top-level field, a NUL character", async () => {
    const missing = await api.post("/v1/events", {
      id: "x",
      type: "t",
      occurredAt: "2026-11-02T09:00:00Z",
    });
    expect(missing.status).toBe(400);
    expect(
      ((await missing.json()) as { errors: { field: string }[] }).errors.map((e) => e.field),
    ).toEqual(["customerId"]);
    const { occurredAt: _, ...undated } = event("x", "c");
    const noTime = await api.post("/v1/events", undated);
    expect(await noTime.json()).toMatchObject({
      errors: [{ field: "occurredAt", message: expect.stringMatching(/^is required/) as string }],
    });
    const badTime = await api.post("/v1/events", event("x", "c", { occurredAt: "yesterday" }));
    expect(await badTime.json()).toMatchObject({
      errors: [{ field: "occurredAt", message: expect.stringMatching(/ISO-8601/) as string }],
    });
    const unknown = await api.post("/v1/events", event("x", "c", { colour: "red" }));
    expect(await unknown.json()).toMatchObject({
      detail: expect.stringContaining('unknown field "colour"') as string,
    });
    const malformed = await api.post("/v1/events", "{not json");
    expect(malformed.status).toBe(400);
    // curl's default form encoding is not JSON: named as such, not as an unknown field.
    const form = await fetch(`${api.url}/v1/events`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${API_KEY}`,
        "content-type": "application/x-www-form-urlencoded",
      },
      body: JSON.stringify(event("x", "c")),
    });
    expect(form.status).toBe(415);
    expect(await form.text()).toContain("Content-Type: application/json");
    const huge = await api.post(
      "/v1/events",
      event("x", "c", { properties: { blob: "x".repeat(70_000) } }),
    );
    expect(huge.status).toBe(413);
    // A NUL character is valid JSON but neither a text nor a jsonb column takes it.
    const nul = await api.post(
      "/v1/events",
      event("x", "c", { properties: { note: "a\u0000b", tags: ["ok", "\u0000"] } }),
    );
    expect(nul.status).toBe(400);
    expect(((await nul.json()) as { errors: { field: string; message: string }[] }).errors).toEqual(
      [
        { field: "properties.note", message: expect.stringContaining("NUL character") as string },
        { field: "properties.tags.1", message: expect.stringContaining("NUL character") as string },
      ],
    );
    // A time far ahead would outrank every real change until then (an unsubscribe included).
    const ahead = await api.post("/v1/events", {
      ...event("x", "c"),
      occurredAt: "2030-01-01T00:00:00Z",
    });
    expect(ahead.status).toBe(400);
    expect(await ahead.text()).toContain(
      "occurredAt: is more than an hour ahead of this server's clock",
    );
    // Nor a lone UTF-16 surrogate: JSON can spell one, but it is not Unicode.
    const surrogate = await api.post(
      "/v1/events",
      event("x", "c", { customer: { attributes: { name: "\ud800" } } }),
    );
    expect(surrogate.status).toBe(400);
    expect((await surrogate.json()) as object).toMatchObject({
      errors: [
        {
          field: "customer.attributes.name",
          message: expect.stringContaining("lone UTF-16 surrogate") as string,
        },
      ],
    });
    expect(await h().schema.db.event.count({ where: { eventId: "x" } })).toBe(0);
    // A customer id in the path with a NUL (%00): a 400 naming it, not a database error.
    for (const method of ["GET", "PUT"]) {
      const res = await fetch(`${api.url}/v1/customers/a%00b`, {
        method,
        headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
        ...(method === "PUT" && { body: JSON.stringify({ email: "a@example.com" }) }),
      });
      expect(res.status, method).toBe(400);
      expect(await res.json()).toMatchObject({
        errors: [{ field: "id", message: expect.stringContaining("NUL") as string }],
      });
    }
  });

  it("validates a batch item by item, with a result per item", async () => {
    const res = await api.post("/v1/events", {
      events: [event("b1"), { ...event("b2"), occurredAt: "nope" }, event("b1"), event("b3")],
    });
    expect(res.status).toBe(202);
    const body = (await res.json()) as {
      results: { index: number; status: string; errors?: { field: string }[] }[];
    };
    expect(body.results.map((r) => r.status)).toEqual([
      "accepted",
      "invalid",
      "duplicate",
      "accepted",
    ]);
    expect(body.results[1]!.errors![0]!.field).toBe("events[1].occurredAt");
    const tooMany = await api.post(
      "/v1/events",
      { events: Array.from({ length: 1001 }, (_, i) => event(`m${i}`)) },
      {},
    );
    expect([413, 400]).toContain(tooMany.status);
  });

  it("applies profile and consent updates by occurredAt: an older one arriving later changes nothing", async () => {
    const put = (body: object) =>
      fetch(`${api.url}/v1/customers/c_profile`, {
        method: "PUT",
        headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
        body: JSON.stringify(body),
      });
    const newer = await put({
      occurredAt: "2026-11-02T10:00:00Z",
      email: "new@example.com",
      consents: { email: { promotions: "revoked" } },
    });
    expect(newer.status).toBe(200);
    await put({
      occurredAt: "2026-11-02T09:00:00Z",
      email: "old@example.com",
      consents: { email: { promotions: "granted" } },
    });
    const got = await fetch(`${api.url}/v1/customers/c_profile`, {
      headers: { authorization: `Bearer ${API_KEY}` },
    });
    const customer = (await got.json()) as {
      email: string;
      consents: { topic: string; status: string }[];
      points: { balance: number };
    };
    expect(customer.email).toBe("new@example.com");
    expect(customer.consents).toMatchObject([{ topic: "promotions", status: "revoked" }]);
    expect(customer.points.balance).toBe(0);
    // Field by field: a late signup still sets what no newer update did (its phone, its
    // city), and not what one did (the plan). It had been dropped whole.
    const traits = (body: object) =>
      fetch(`${api.url}/v1/customers/c_traits`, {
        method: "PUT",
        headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
        body: JSON.stringify(body),
      });
    await traits({ occurredAt: "2026-11-02T10:00:00Z", attributes: { plan: "pro" } });
    await traits({
      occurredAt: "2026-11-02T09:00:00Z",
      email: "late@example.com",
      phone: "+4915112340000",
      attributes: { plan: "free", city: "Berlin" },
    });
    const late = (await (
      await fetch(`${api.url}/v1/customers/c_traits`, {
        headers: { authorization: `Bearer ${API_KEY}` },
      })
    ).json()) as { email: string; phone: string; attributes: Record<string, unknown> };
    expect([late.email, late.phone, late.attributes]).toEqual([
      "late@example.com",
      "+4915112340000",
      { plan: "pro", city: "Berlin" },
    ]);
    // A customer first seen with a date at year 0 still takes later updates (its trait
    // times are written as Postgres reads them back).
    const ancient = (body: object) =>
      fetch(`${api.url}/v1/customers/c_year_zero`, {
        method: "PUT",
        headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
        body: JSON.stringify(body),
      });
    expect(
      (await ancient({ occurredAt: "0000-01-01T00:00:00Z", email: "zero@example.com" })).status,
    ).toBe(200);
    expect(
      (await ancient({ occurredAt: "2026-11-02T09:00:00Z", email: "now@example.com" })).status,
    ).toBe(200);
    // Two consent changes at the same moment: the revocation wins, whichever came last.
    const same = "2026-11-02T12:00:00Z";
    await traits({ occurredAt: same, consents: { email: { news: "revoked" } } });
    await traits({ occurredAt: same, consents: { email: { news: "granted" } } });
    const tied = (await (
      await fetch(`${api.url}/v1/customers/c_traits`, {
        headers: { authorization: `Bearer ${API_KEY}` },
      })
    ).json()) as { consents: { topic: string; status: string }[] };
    expect(tied.consents).toMatchObject([{ topic: "news", status: "revoked" }]);
    expect((await put({ occurredAt: "2026-11-02T11:00:00Z", phone: "12345" })).status).toBe(400);
    const reserved = await put({
      occurredAt: "2026-11-02T11:00:00Z",
      consents: { sms: { "*": "granted" } },
    });
    expect(reserved.status).toBe(400);
    expect(await reserved.text()).toContain("reserved for the channel-wide opt-out");
    const unknown = await put({
      occurredAt: "2026-11-02T11:00:00Z",
      consents: { email: {} },
      tier: 1,
    });
    expect(unknown.status).toBe(400);
    expect(((await unknown.json()) as { errors: unknown[] }).errors).toContainEqual({
      field: "tier",
      message: "unknown field",
    });
    const surrogate = await put({
      occurredAt: "2026-11-02T11:00:00Z",
      attributes: { name: "\udc00x" },
    });
    expect(surrogate.status).toBe(400);
    expect(await surrogate.text()).toContain("attributes.name: contains a lone UTF-16 surrogate");
  });

  it("serves unsubscribe links: GET asks, a one-click POST revokes, a forged token is refused", async () => {
    const db = h().schema.db;
    await db.customer.create({ data: { id: "c_unsub" } });
    // Granted by a sender whose clock runs half an hour ahead: the person's own unsubscribe,
    // now, still wins over it.
    await db.consent.create({
      data: {
        customerId: "c_unsub",
        channel: "email",
        topic: "news",
        status: "granted",
        occurredAt: new Date(Date.now() + 30 * 60_000),
        source: "test",
      },
    });
    const token = signUnsubscribeToken(SECRET, {
      customerId: "c_unsub",
      channel: "email",
      topic: "news",
    });
    const page = await fetch(`${api.url}/v1/unsubscribe/${token}`);
    expect([page.status, page.headers.get("content-type")]).toEqual([
      200,
      "text/html; charset=utf-8",
    ]);
    const forged = await fetch(`${api.url}/v1/unsubscribe/${token.slice(0, -3)}abc`, {
      method: "POST",
    });
    expect(forged.status).toBe(400);
    const oneClick = await fetch(`${api.url}/v1/unsubscribe/${token}`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: "List-Unsubscribe=One-Click",
    });
    expect(oneClick.status).toBe(200);
    const consent = await db.consent.findUniqueOrThrow({
      where: {
        customerId_channel_topic: { customerId: "c_unsub", channel: "email", topic: "news" },
      },
    });
    expect([consent.status, consent.source]).toEqual(["revoked", "unsubscribe_link"]);

    // The longest ids there are: a 200-character customer id and a 64-character topic.
    const long = { customerId: `c_${"7".repeat(198)}`, topic: "t".repeat(64) };
    await db.customer.create({ data: { id: long.customerId } });
    await db.consent.create({
      data: {
        ...long,
        channel: "email",
        status: "granted",
        occurredAt: new Date(),
        source: "test",
      },
    });
    const longToken = signUnsubscribeToken(SECRET, { ...long, channel: "email" });
    const longClick = await fetch(`${api.url}/v1/unsubscribe/${longToken}`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: "List-Unsubscribe=One-Click",
    });
    expect(longClick.status).toBe(200);
    const customer = await fetch(`${api.url}/v1/customers/${long.customerId}`, {
      headers: { authorization: `Bearer ${API_KEY}` },
    });
    expect(customer.status).toBe(200);
    expect(((await customer.json()) as { consents: { status: string }[] }).consents).toMatchObject([
      { status: "revoked" },
    ]);
  });

  it("refuses a Twilio webhook whose signature does not verify, and logs where it checked", async () => {
    const lines: string[] = [];
    const twilioApi = await startApi(h(), {
      twilioAuthToken: "twilio-token-0123456789",
      log: createLogger({ write: (line) => lines.push(line) }),
    });
    try {
      const res = await fetch(`${twilioApi.url}/v1/webhooks/twilio/inbound`, {
        method: "POST",
        headers: {
          "content-type": "application/x-www-form-urlencoded",
          "x-twilio-signature": "bm90LWEtc2lnbmF0dXJl",
        },
        body: "From=%2B4915112345678&Body=STOP",
      });
      expect(res.status).toBe(403);
      const warning = lines.find((l) => l.includes("X-Twilio-Signature does not verify"));
      expect(warning).toContain(
        "checkedAgainst=https://hooks.shop.example/v1/webhooks/twilio/inbound",
      );
      expect(lines.join("\n")).not.toContain("4915112345678");
      expect(lines.join("\n")).not.toContain("twilio-token");
    } finally {
      await twilioApi.close();
    }
  });

  it("serves health, readiness and its OpenAPI document", async () => {
    expect((await fetch(`${api.url}/healthz`)).status).toBe(200);
    expect(await (await fetch(`${api.url}/readyz`)).json()).toEqual({
      status: "ready",
      database: "ok",
      redis: "ok",
    });
    const doc = (await (await fetch(`${api.url}/openapi.json`)).json()) as {
      paths: Record<string, unknown>;
    };
    expect(Object.keys(doc.paths)).toContain("/v1/events");
  });

  it("keeps idempotency keys until they expire, then reaps them", async () => {
    const db = h().schema.db;
    expect(await db.idempotencyKey.count()).toBeGreaterThan(0);
    expect(await reapKeys(db, new Date(Date.now() + 23 * 3_600_000))).toBe(0);
    expect(await reapKeys(db, new Date(Date.now() + 25 * 3_600_000))).toBeGreaterThan(0);
  });

  it("lets a request that outlived its lease neither store its answer nor release the key", async () => {
    const db = h().schema.db;
    const opts = { ttlMs: 86_400_000, inFlightLeaseMs: 2_000 };
    const claim = (at: number) => claimKey(db, "k_hash", "slow-1", "req", new Date(at), opts);
    const t0 = Date.parse("2026-11-02T09:00:00Z");
    const first = await claim(t0);
    expect(first.kind).toBe("run");
    // The first request is still running when its lease ends: a retry takes the key over.
    expect((await claim(t0 + 1_000)).kind).toBe("in_flight");
    const second = await claim(t0 + 3_000);
    expect(second.kind).toBe("run");
    const since = (c: typeof first) => (c.kind === "run" ? c.since : new Date(0));
    /** The request of claim `c` answering `{ n }` at `at`. */
    const complete = (c: typeof first, n: number, at: number) =>
      completeKey(
        db,
        "k_hash",
        "slow-1",
        since(c),
        { status: 202, body: { n } },
        new Date(at),
        opts.ttlMs,
      );
    // The first one ends now: what it says or releases touches the second one's claim not at all.
    await complete(first, 1, t0 + 3_500);
    await releaseKey(db, "k_hash", "slow-1", since(first));
    expect((await claim(t0 + 3_600)).kind).toBe("in_flight");
    await complete(second, 2, t0 + 3_700);
    expect(await claim(t0 + 3_800)).toEqual({
      kind: "replay",
      response: { status: 202, body: { n: 2 } },
    });
    // A key claimed by a version that did not renew leases expires a ttl after its start: in
    // flight past a lease, it is free (it had answered 409 for a day).
    await db.$executeRaw`
      INSERT INTO "IdempotencyKey" ("apiKeyHash", key, "requestHash", status, "createdAt", "expiresAt")
      VALUES ('k_hash', 'old-1', 'req', 'in_flight', ${new Date(t0)}, ${new Date(t0 + opts.ttlMs)})`;
    const oldKey = (at: number) => claimKey(db, "k_hash", "old-1", "req", new Date(at), opts);
    expect((await oldKey(t0 + 1_000)).kind).toBe("in_flight");
    expect((await oldKey(t0 + 3_000)).kind).toBe("run");
  });
});

describe("nothing lost between Postgres and Redis", () => {
  const h = useHarness(JOURNEYS, { workers: 0, killWorkersAfterEach: true });

  it("processes an event once when Redis is flushed after the 202", async () => {
    const api = await startApi(h());
    try {
      expect((await api.post("/v1/events", event("e_flushed"))).status).toBe(202);
    } finally {
      await api.close();
    }
    expect(await flushPrefix(h().prefix)).toBeGreaterThan(0);
    h().workers.push(startWorker(h().env()));
    const db = h().schema.db;
    await eventually(async () =>
      (await db.pointsEntry.count({ where: { customerId: "c_e_flushed" } })) === 1
        ? true
        : undefined,
    );
    await new Promise((r) => setTimeout(r, 1_500));
    expect(await db.pointsEntry.count({ where: { customerId: "c_e_flushed" } })).toBe(1);
  });
});
