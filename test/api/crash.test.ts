// The API process SIGKILLed after the event row committed and before it answered: the client
// retries with the same Idempotency-Key and the event exists, and is processed, once.
import { createServer } from "node:net";
import { describe, expect, it } from "vitest";
import { API_KEY } from "../support/api";
import { useHarness } from "../support/harness";
import { WELCOME_POINTS, journeysDir } from "../support/journeys";
import { eventually, startProcess } from "../support/workers";

const JOURNEYS = journeysDir({
  "welcome.yaml": WELCOME_POINTS,
});

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      s.close(() => resolve(typeof a === "object" && a ? a.port : 0));
    });
  });
}

describe("an API killed mid-request", () => {
  const h = useHarness(JOURNEYS);

  it("leaves one event when the request is retried with the same Idempotency-Key", async () => {
    const port = await freePort();
    const env = (extra: NodeJS.ProcessEnv = {}) =>
      h().env({ SENDONCE_API_KEYS: API_KEY, ...extra });
    const args = ["--port", String(port), "--host", "127.0.0.1"];
    const body = JSON.stringify({
      id: "e_crash",
      type: "signed_up",
      customerId: "c_crash",
      occurredAt: "2026-11-02T09:00:00Z",
    });
    const send = () =>
      fetch(`http://127.0.0.1:${port}/v1/events`, {
        method: "POST",
        headers: {
          authorization: `Bearer ${API_KEY}`,
          "content-type": "application/json",
          "idempotency-key": "crash-1",
        },
        body,
      });

    const doomed = startProcess("api", env({ SENDONCE_FAILPOINT: "api_after_commit" }), args);
    await doomed.waitFor(/api listening/);
    const lost = send().catch((e: Error) => e);
    await doomed.waitFor(/failpoint api_after_commit reached/);
    await doomed.kill("SIGKILL");
    expect(await lost).toBeInstanceOf(Error);

    const api = startProcess("api", env(), args);
    try {
      await api.waitFor(/api listening/);
      // The dead request's key is in flight until its lease runs out: 409, then the retry runs.
      const answer = await eventually(async () => {
        const r = await send();
        return r.status === 409 ? undefined : r;
      });
      expect(answer.status).toBe(202);
      expect(await answer.json()).toMatchObject({ id: "e_crash", status: "duplicate" });
      const db = h().schema.db;
      expect(await db.event.count({ where: { eventId: "e_crash" } })).toBe(1);
      await eventually(async () =>
        (await db.pointsEntry.count({ where: { customerId: "c_crash" } })) === 1 ? true : undefined,
      );
      await new Promise((r) => setTimeout(r, 1_000));
      expect(await db.pointsEntry.count({ where: { customerId: "c_crash" } })).toBe(1);
      expect(await db.enrollment.count({ where: { customerId: "c_crash" } })).toBe(1);
    } finally {
      await api.kill("SIGTERM");
    }
  });
});
