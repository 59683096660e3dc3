// The API while its Redis is away: an event is stored and answered at once (the enqueue fails
// fast, and the workers' sweep enqueues it), and /readyz says Redis is unreachable. Waiting for
// Redis to come back would hold every client's request open for the whole outage.
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { actionKey } from "../../src/engine/keys";
import type { RunningService } from "../../src/infra/embedded";
import { freePort, startRedisServer } from "../../src/infra/embedded";
import { API_KEY } from "../support/api";
import { settledAction, signup, useHarness } from "../support/harness";
import { HELLO_EMAIL, journeysDir } from "../support/journeys";
import { startProcess } from "../support/workers";

const JOURNEYS = journeysDir({ "hello.yaml": HELLO_EMAIL });

describe("an API whose Redis goes away", () => {
  // The workers run on the suite's Redis; the API has a Redis of its own, which the test stops.
  const h = useHarness(JOURNEYS);
  const stateDir = mkdtempSync(join(tmpdir(), "sendonce-redis-down-"));
  let redis: RunningService | undefined;
  afterAll(() => redis?.stop());

  it("stores and answers each event at once, and says it is not ready", async () => {
    redis = await startRedisServer(stateDir);
    const port = await freePort();
    const api = startProcess("api", h().env({ SENDONCE_API_KEYS: API_KEY, REDIS_URL: redis.url }), [
      "--port",
      String(port),
      "--host",
      "127.0.0.1",
    ]);
    try {
      await api.waitFor(/api listening/);
      const base = `http://127.0.0.1:${port}`;
      const post = (customerId: string) =>
        fetch(`${base}/v1/events`, {
          method: "POST",
          headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
          body: JSON.stringify(signup(customerId)),
          signal: AbortSignal.timeout(15_000),
        });
      expect((await post("c_up")).status).toBe(202);
      expect((await fetch(`${base}/readyz`)).status).toBe(200);

      await redis.stop();
      redis = undefined;
      const started = Date.now();
      const answer = await post("c_down");
      // Before the change the request waited for Redis: no answer within the 15 s abort.
      expect(Date.now() - started).toBeLessThan(6_000);
      expect(answer.status).toBe(202);
      expect(await answer.json()).toMatchObject({ status: "accepted" });
      const ready = await fetch(`${base}/readyz`, { signal: AbortSignal.timeout(15_000) });
      expect(ready.status).toBe(503);
      expect(await ready.text()).toContain("redis: unreachable");

      const stored = await h().schema.db.event.findFirstOrThrow({
        where: { customerId: "c_down" },
      });
      expect(stored.enqueuedAt).toBeNull();
      // Not lost: the workers' sweep finds the stored event, and its email goes.
      const key = actionKey({
        journeyId: "hello",
        stepId: "hello_email",
        customerId: "c_down",
        reference: "",
      });
      await settledAction(h(), key, "sent");
      expect(api.output()).toContain("events stored but not enqueued");
      expect(api.output()).not.toMatch(/c_down@|"email"/);
    } finally {
      await api.kill("SIGTERM");
    }
  }, 90_000);
});
