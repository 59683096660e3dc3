// Idempotency-Key edges beyond the race: keys are scoped per API key and per request (path
// included), the draft's quoted form names the same key, a request that failed on our side
// frees its key, and a batch with nothing valid answers as a problem naming every field.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { RunningApi } from "../support/api";
import { API_KEY, startApi } from "../support/api";
import { useHarness } from "../support/harness";
import { journeysDir } from "../support/journeys";

const OTHER_KEY = "test-api-key-other-0123456789";

const event = (id: string) => ({
  id,
  type: "page.viewed",
  customerId: `c_${id}`,
  occurredAt: "2026-11-02T09:00:00Z",
});

describe("Idempotency-Key scope and failures", () => {
  const h = useHarness(journeysDir({}), { workers: 0 });
  let api: RunningApi;
  beforeAll(async () => {
    api = await startApi(h(), { apiKeys: [API_KEY, OTHER_KEY] });
  });
  afterAll(() => api.close());

  const put = (customerId: string, body: object, key: string) =>
    fetch(`${api.url}/v1/customers/${customerId}`, {
      method: "PUT",
      headers: {
        authorization: `Bearer ${API_KEY}`,
        "content-type": "application/json",
        "idempotency-key": key,
      },
      body: JSON.stringify(body),
    });

  it("scopes keys per API key: another key's identical request runs on its own", async () => {
    const first = await api.post("/v1/events", event("s1"), { "idempotency-key": "shared" });
    const other = await api.post("/v1/events", event("s1"), {
      authorization: `Bearer ${OTHER_KEY}`,
      "idempotency-key": "shared",
    });
    expect([first.status, other.status]).toEqual([202, 202]);
    expect(other.headers.get("idempotent-replayed")).toBeNull();
    expect(await other.json()).toMatchObject({ id: "s1", status: "duplicate" });
    expect(await h().schema.db.idempotencyKey.count({ where: { key: "shared" } })).toBe(2);
  });

  it("treats the same body on another path as another request: 422, and nothing changes", async () => {
    const body = { occurredAt: "2026-11-02T09:00:00Z", email: "a@example.com" };
    expect((await put("c_path_a", body, "profile-1")).status).toBe(200);
    const elsewhere = await put("c_path_b", body, "profile-1");
    expect(elsewhere.status).toBe(422);
    expect(elsewhere.headers.get("content-type")).toMatch(/^application\/problem\+json/);
    expect(await h().schema.db.customer.findUnique({ where: { id: "c_path_b" } })).toBeNull();
    const again = await put("c_path_a", body, "profile-1");
    expect([again.status, again.headers.get("idempotent-replayed")]).toEqual([200, "true"]);
  });

  it('reads the draft\'s quoted form: "k" and k are one key', async () => {
    expect(
      (await api.post("/v1/events", event("q1"), { "idempotency-key": '"quoted-1"' })).status,
    ).toBe(202);
    const bare = await api.post("/v1/events", event("q1"), { "idempotency-key": "quoted-1" });
    expect(bare.headers.get("idempotent-replayed")).toBe("true");
    expect(await bare.json()).toMatchObject({ status: "accepted" });
    const empty = await api.post("/v1/events", event("q2"), { "idempotency-key": '""' });
    expect(empty.status).toBe(400);
  });

  it("frees the key of a request that failed on our side, so the retry runs", async () => {
    const failing = await startApi(h(), {
      afterCommit: () => Promise.reject(new Error("injected failure after commit")),
    });
    try {
      const failed = await failing.post("/v1/events", event("f1"), { "idempotency-key": "f-1" });
      expect(failed.status).toBe(500);
      expect(await failed.text()).not.toContain("injected");
    } finally {
      await failing.close();
    }
    const retried = await api.post("/v1/events", event("f1"), { "idempotency-key": "f-1" });
    expect([retried.status, retried.headers.get("idempotent-replayed")]).toEqual([202, null]);
    // The first attempt committed the row; the retry finds it, stores nothing new, enqueues it.
    expect(await retried.json()).toMatchObject({ id: "f1", status: "duplicate" });
    const row = await h().schema.db.event.findFirstOrThrow({ where: { eventId: "f1" } });
    expect(row.enqueuedAt).not.toBeNull();
  });

  it("frees a key once it has expired: after the retention it names a new request", async () => {
    expect((await api.post("/v1/events", event("x1"), { "idempotency-key": "exp-1" })).status).toBe(
      202,
    );
    const later = await startApi(h(), {
      clock: { now: () => new Date(Date.now() + 25 * 3_600_000) },
    });
    try {
      const reused = await later.post("/v1/events", event("x2"), { "idempotency-key": "exp-1" });
      expect([reused.status, reused.headers.get("idempotent-replayed")]).toEqual([202, null]);
      expect(await reused.json()).toMatchObject({ id: "x2", status: "accepted" });
    } finally {
      await later.close();
    }
  });

  it("answers a batch with no valid item as a problem naming every field, storing nothing", async () => {
    const res = await api.post("/v1/events", {
      events: [{ ...event("v1"), occurredAt: "later" }, { ...event("v2"), colour: "red" }, 42],
    });
    expect(res.status).toBe(400);
    expect(res.headers.get("content-type")).toMatch(/^application\/problem\+json/);
    const body = (await res.json()) as {
      title: string;
      errors: { field: string }[];
      results: { status: string }[];
    };
    expect(body.title).toBe("Invalid batch");
    expect(body.errors.map((e) => e.field)).toEqual([
      "events[0].occurredAt",
      "events[1]",
      "events[2]",
    ]);
    expect(body.results.map((r) => r.status)).toEqual(["invalid", "invalid", "invalid"]);
    expect(await h().schema.db.event.count({ where: { eventId: { in: ["v1", "v2"] } } })).toBe(0);
  });

  it("keeps no answer for a request that failed validation: the corrected one runs under its key", async () => {
    const bad = await api.post(
      "/v1/events",
      { ...event("fix1"), occurredAt: "soon" },
      { "idempotency-key": "order-7-completed" },
    );
    expect(bad.status).toBe(400);
    const fixed = await api.post("/v1/events", event("fix1"), {
      "idempotency-key": "order-7-completed",
    });
    expect([fixed.status, fixed.headers.get("idempotent-replayed")]).toEqual([202, null]);
    expect(await fixed.json()).toMatchObject({ id: "fix1", status: "accepted" });
    // Its answer is the one kept now.
    const again = await api.post("/v1/events", event("fix1"), {
      "idempotency-key": "order-7-completed",
    });
    expect([again.status, again.headers.get("idempotent-replayed")]).toEqual([202, "true"]);
  });
});

describe("a request that runs longer than the in-flight lease", () => {
  const h = useHarness(journeysDir({}), { workers: 0 });
  let api: RunningApi;
  beforeAll(async () => {
    // A lease of 300 ms, and a request held for 1.2 s after its rows commit.
    api = await startApi(h(), {
      idempotency: { ttlMs: 86_400_000, inFlightLeaseMs: 300 },
      afterCommit: () => new Promise((r) => setTimeout(r, 1_200)),
    });
  });
  afterAll(() => api.close());

  it("keeps its key while it runs: a retry meanwhile is a 409, then a replay", async () => {
    const send = () => api.post("/v1/events", event("long1"), { "idempotency-key": "long-1" });
    const first = send();
    await new Promise((r) => setTimeout(r, 700));
    // Past the lease, the running request has renewed it (it had been taken over: a second run).
    const retry = await send();
    expect(retry.status).toBe(409);
    expect((await first).status).toBe(202);
    const replay = await send();
    expect(replay.status).toBe(202);
    expect(replay.headers.get("idempotent-replayed")).toBe("true");
    expect(await replay.json()).toMatchObject({ id: "long1", status: "accepted" });
  });
});
