// The chaos suite's small variant (`npm run chaos` is the full one): a few hundred events with
// redeliveries, two worker processes SIGKILLed a few times, the API SIGKILLed once, Redis
// flushed once and SIGKILLed once, Postgres restarted once — and still no duplicate send,
// nothing lost, in_doubt bounded, no customer over the offer cap, repeated requests replayed.
import { describe, expect, it } from "vitest";
import type pg from "pg";
import { actionKey } from "../../src/engine/keys";
import { runChaos } from "../support/chaos/run";
import type { ExpectedAction } from "../support/chaos/traffic";
import { verify } from "../support/chaos/verify";
import type { SmtpSink } from "../support/smtp";
import type { TwilioServer } from "../support/twilio";

describe("the chaos run", () => {
  it("keeps every invariant through kills, Redis flushed and killed, a Postgres restart", async () => {
    const lines: string[] = [];
    const report = await runChaos({
      events: 300,
      workers: 2,
      concurrency: 6,
      duplicates: 0.3,
      durationMs: 16_000,
      killEveryMs: 4_000,
      settleTimeoutMs: 40_000,
      seed: 11,
      // A quiet-hours window is whole minutes: the full run has one, this one could not wait.
      quietHours: false,
      log: (line) => lines.push(line),
    }).catch((error: unknown) => {
      // A run that could not finish: its timeline says what went wrong.
      throw new Error(`${(error as Error).message}\n${lines.join("\n")}`);
    });
    // The whole verdict at once, so a failure shows every broken invariant and the timeline.
    expect(report.violations, lines.join("\n")).toEqual([]);
    expect(report.ok).toBe(true);
    const s = report.stats;
    // The chaos really happened, and there was real work to survive it.
    expect(s["workers killed"]).toBeGreaterThanOrEqual(2);
    expect(report.disruptions.map((d) => d.kind)).toEqual(
      expect.arrayContaining(["kill", "api_kill", "redis_flush", "redis_kill", "postgres_restart"]),
    );
    expect(s["redeliveries planned"]).toBeGreaterThan(50);
    expect(s["API: duplicate"]).toBeGreaterThanOrEqual(s["redeliveries planned"]!);
    expect(s["emails received by SMTP"]).toBeGreaterThan(100);
    expect(s["SMS received by Twilio"]).toBeGreaterThan(50);
    expect(s["  of which points"]).toBeGreaterThan(200);
    expect(s["actions skipped"]).toBeGreaterThan(0);
    // The offer cap was reached for some customers, and some requests were answered by replay.
    expect(s["  frequency_cap"]).toBeGreaterThan(0);
    expect(s["  answered by a replay of the first answer"]).toBeGreaterThan(0);
    // About 40-50 s alone on the reference machine; the whole suite runs beside it.
    expect(report.totalMs).toBeLessThan(170_000);
  }, 180_000);
});

describe("the chaos verdict", () => {
  const key = (stepId: string, customerId: string, reference = "") =>
    actionKey({ journeyId: "purchase", stepId, customerId, reference });
  const expected: ExpectedAction[] = [
    {
      key: key("receipt_email", "c_1", "o_1"),
      journeyId: "purchase",
      stepId: "receipt_email",
      customerId: "c_1",
      channel: "email",
      points: 0,
      expect: { allowed: true },
    },
    {
      key: key("receipt_sms", "c_1", "o_1"),
      journeyId: "purchase",
      stepId: "receipt_sms",
      customerId: "c_1",
      channel: "sms",
      points: 0,
      expect: { allowed: true },
    },
    {
      key: key("order_points", "c_1", "o_1"),
      journeyId: "purchase",
      stepId: "order_points",
      customerId: "c_1",
      channel: "points",
      points: 100,
      expect: { allowed: true },
    },
  ];
  const [email, sms, points] = expected.map((e) => e.key) as [string, string, string];

  /** A ledger and providers as a broken engine would leave them. */
  function broken(): Parameters<typeof verify>[0] {
    const tables: Record<string, pg.QueryResultRow[]> = {
      Action: [
        { key: email, customerId: "c_1", channel: "email", state: "sent", attempt: 1 },
        { key: sms, customerId: "c_1", channel: "sms", state: "in_doubt", attempt: 1 },
        { key: points, customerId: "c_1", channel: "points", state: "sent", attempt: 1 },
      ],
      PointsEntry: [{ customerId: "c_1", total: "100", n: "1" }],
      PointsBalance: [{ customerId: "c_1", balance: 200 }],
      Event: [{ stored: "1", unprocessed: "0", dups: "0" }],
    };
    const query = <T extends pg.QueryResultRow>(sql: string): Promise<T[]> => {
      const table = /FROM "(\w+)"/.exec(sql)![1]!;
      return Promise.resolve((tables[table] ?? []) as T[]);
    };
    const sink = {
      messages: [{}, {}],
      // The email arrived twice.
      countByMessageId: () => new Map([[`<${email}@shop.example>`, 2]]),
    } as unknown as SmtpSink;
    const twilio = { messages: [] } as unknown as TwilioServer;
    return {
      query,
      sink,
      twilio,
      messageIdDomain: "shop.example",
      expected,
      uniqueEvents: 1,
      inFlight: { kills: new Set<string>(), restart: new Set<string>() },
      permanentFaults: 0,
    };
  }

  it("names a duplicate send, an unexplained in_doubt and a balance off the ledger", async () => {
    const verdict = await verify(broken());
    const failed = verdict.invariants.filter((i) => !i.ok).map((i) => i.name);
    expect(failed).toEqual([
      "duplicate sends received (email + SMS)",
      "in_doubt ≤ sends in flight at kills and restart",
      "in_doubt not in flight at any kill or restart",
      "points balances ≠ sum of ledger entries",
      "points balances ≠ points the journeys grant",
    ]);
    expect(verdict.violations[0]).toContain(email.slice(0, 16));
  });

  it("names a send given up too soon, and refusals beyond the faults armed", async () => {
    const input = broken();
    const gaveUp = [
      {
        key: email,
        customerId: "c_1",
        channel: "email",
        state: "failed_permanent",
        reason: "retries_exhausted",
        attempt: 3,
      },
      {
        key: sms,
        customerId: "c_1",
        channel: "sms",
        state: "failed_permanent",
        reason: "provider_refused",
        attempt: 1,
      },
    ];
    const query = <T extends pg.QueryResultRow>(sql: string) =>
      sql.includes('FROM "Action"')
        ? Promise.resolve(gaveUp as unknown as T[])
        : input.query<T>(sql);
    const given = async (permanentFaults: number) =>
      (await verify({ ...input, query, permanentFaults })).invariants
        .filter((i) => i.name.includes("failed_permanent") || i.name.startsWith("refused"))
        .map((i) => [i.name, i.actual, i.ok]);
    expect(await given(0)).toEqual([
      ["failed_permanent that no fault explains", "1", false],
      ["refused for good ≤ refusals the providers were told to give", "1", false],
    ]);
    // One refusal armed explains the SMS; the email, given up after 3 attempts, stays unexplained.
    expect(await given(1)).toEqual([
      ["failed_permanent that no fault explains", "1", false],
      ["refused for good ≤ refusals the providers were told to give", "1", true],
    ]);
  });

  it("accepts the same in_doubt when it was in flight at a kill", async () => {
    const input = {
      ...broken(),
      inFlight: { kills: new Set([`${sms}#1`]), restart: new Set<string>() },
    };
    const verdict = await verify(input);
    expect(verdict.invariants.find((i) => i.name.startsWith("in_doubt not"))?.ok).toBe(true);
  });

  /**
   * Three offers to c_2 under a cap of 2: their final states, how many the server received (the
   * first ones), and the order in which they were decided (claimed, or skipped).
   */
  function offers(
    states: [string, string | null][],
    received: number,
    order = [0, 1, 2],
  ): Parameters<typeof verify>[0] {
    const keys = states.map((_, i) =>
      actionKey({
        journeyId: "promo",
        stepId: "offer_email",
        customerId: "c_2",
        reference: `o_${i}`,
      }),
    );
    const input = broken();
    const rows = states.map(([state, reason], i) => ({
      key: keys[i],
      customerId: "c_2",
      channel: "email",
      state,
      reason,
      attempt: 1,
    }));
    const decisions = order.map((i) =>
      states[i]![0] === "skipped"
        ? { kind: "skipped", rule: states[i]![1], actionKey: keys[i] }
        : { kind: "step_claimed", rule: null, actionKey: keys[i] },
    );
    return {
      ...input,
      query: <T extends pg.QueryResultRow>(sql: string) =>
        Promise.resolve(
          (sql.includes("AS stored")
            ? [{ stored: "1", unprocessed: "0", dups: "0" }]
            : sql.includes('FROM "AuditEntry"')
              ? decisions
              : sql.includes('FROM "Action"')
                ? rows
                : []) as unknown as T[],
        ),
      sink: {
        messages: keys.slice(0, received).map(() => ({})),
        countByMessageId: () =>
          new Map(keys.slice(0, received).map((k) => [`<${k}@shop.example>`, 1])),
      } as unknown as SmtpSink,
      expected: keys.map((key) => ({
        key,
        journeyId: "promo",
        stepId: "offer_email",
        customerId: "c_2",
        channel: "email",
        points: 0,
        expect: { allowed: true, cap: 2 },
      })),
    };
  }
  const failing = async (input: Parameters<typeof verify>[0]) =>
    (await verify(input)).invariants.filter((i) => !i.ok).map((i) => i.name);
  const early = "cap skips before the cap was full";
  const over = "customers sent more capped emails than the cap";

  it("names a customer sent more capped emails than the cap, an in_doubt one counting", async () => {
    const sent: [string, null] = ["sent", null];
    expect(await failing(offers([sent, sent, sent], 3))).toContain(over);
    const unsure: [string, string] = ["in_doubt", "unknown_outcome"];
    expect(await failing(offers([sent, sent, unsure], 2))).toContain(over);
  });

  it("names a cap skip decided before the cap was full, and accepts one decided after", async () => {
    const states: [string, string | null][] = [
      ["sent", null],
      ["skipped", "frequency_cap"],
      ["sent", null],
    ];
    // Two offers sent in the end, but the skip came after only one of them was claimed.
    expect(await failing(offers(states, 2, [0, 1, 2]))).toContain(early);
    const names = await failing(offers(states, 2, [0, 2, 1]));
    expect(names).not.toContain(early);
    expect(names).not.toContain(over);
    expect(names).not.toContain("skips that disagree with consent, address and cap");
  });

  /**
   * Marketing SMS to c_3 and c_4 under a quiet window 10:00–10:05 UTC: `claimedAt` is when each
   * was claimed, `until` where its quiet-hours delay pointed, `receivedAt` when Twilio got it.
   */
  function quiet(
    sms: { claimedAt: string; until?: string; receivedAt: string }[],
  ): Parameters<typeof verify>[0] {
    const window = {
      from: new Date("2026-11-02T10:00:00Z"),
      until: new Date("2026-11-02T10:05:00Z"),
    };
    const keys = sms.map((_, i) =>
      actionKey({
        journeyId: "signup",
        stepId: "welcome_sms",
        customerId: `c_${3 + i}`,
        reference: "",
      }),
    );
    const audits = sms.flatMap((m, i) => [
      ...(m.until
        ? [{ kind: "delayed", rule: "quiet_hours", actionKey: keys[i], detail: { until: m.until } }]
        : []),
      {
        kind: "step_claimed",
        rule: null,
        actionKey: keys[i],
        at: new Date(m.claimedAt),
        detail: {},
      },
    ]);
    const input = broken();
    return {
      ...input,
      query: <T extends pg.QueryResultRow>(sql: string, params?: unknown[]) =>
        sql.includes("'delayed'")
          ? Promise.resolve(audits as unknown as T[])
          : input.query<T>(sql, params),
      twilio: {
        messages: sms.map((m, i) => ({
          sid: `SM${i}`,
          actionKey: keys[i],
          dateCreated: new Date(m.receivedAt),
        })),
      } as unknown as TwilioServer,
      expected: [
        ...input.expected,
        ...keys.map((key, i) => ({
          key,
          journeyId: "signup",
          stepId: "welcome_sms",
          customerId: `c_${3 + i}`,
          channel: "sms" as const,
          points: 0,
          expect: { allowed: true as const },
        })),
      ],
      quiet: window,
    };
  }
  const quietFailures = async (input: Parameters<typeof verify>[0]) =>
    (await failing(input)).filter((n) => n.includes("quiet") || n.includes("held"));

  it("names an SMS claimed in quiet hours, a delay that ends elsewhere, one received early", async () => {
    expect(
      await quietFailures(
        quiet([
          // Claimed inside the window: nothing held it back.
          { claimedAt: "2026-11-02T10:02:00Z", receivedAt: "2026-11-02T10:02:01Z" },
          // Held, but to the wrong time, and received before the window's end.
          {
            claimedAt: "2026-11-02T10:05:00Z",
            until: "2026-11-02T10:04:00Z",
            receivedAt: "2026-11-02T10:04:30Z",
          },
        ]),
      ),
    ).toEqual([
      "marketing SMS claimed in quiet hours (15:30–15:35 Asia/Kolkata)",
      "quiet-hours delays not to the window's end",
      "held SMS received before the window's end",
    ]);
    // Nothing held back at all: quiet hours were not exercised.
    expect(
      await quietFailures(
        quiet([{ claimedAt: "2026-11-02T09:59:59Z", receivedAt: "2026-11-02T10:00:01Z" }]),
      ),
    ).toEqual(["marketing SMS held back by quiet hours"]);
  });

  it("accepts SMS claimed before the window, and held ones claimed and received after it", async () => {
    expect(
      await quietFailures(
        quiet([
          { claimedAt: "2026-11-02T09:59:59Z", receivedAt: "2026-11-02T10:00:01Z" },
          {
            claimedAt: "2026-11-02T10:05:00.200Z",
            until: "2026-11-02T10:05:00.000Z",
            receivedAt: "2026-11-02T10:05:00.300Z",
          },
        ]),
      ),
    ).toEqual([]);
  });
});
