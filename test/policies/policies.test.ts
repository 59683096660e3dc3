// The send policies as pure decisions, with time pinned: resend, caps, quiet hours across
// daylight-saving changes, and unsubscribe tokens that cannot be forged or altered.
import { describe, expect, it } from "vitest";
import type { SendFacts } from "../../src/policies/evaluate";
import { evaluateSend } from "../../src/policies/evaluate";
import { quietHoursEnd } from "../../src/policies/quiet-hours";
import {
  signUnsubscribeToken,
  unsubscribeLinks,
  verifyUnsubscribeToken,
} from "../../src/policies/unsubscribe";

const DAY = 86_400_000;
const at = (iso: string) => new Date(iso);
const base = (over: Partial<SendFacts> = {}): SendFacts => ({
  now: at("2026-06-10T12:00:00Z"),
  channel: "email",
  category: "marketing",
  journeyId: "promo",
  topic: "promotions",
  address: "ana@example.com",
  consent: { status: "granted", grantedAt: at("2026-01-01T00:00:00Z") },
  resend: { kind: "per_reference" },
  globalCaps: [],
  journeyCaps: [],
  onCap: "skip",
  recentSends: [],
  timezone: "Europe/Berlin",
  ...over,
});

describe("resend policies", () => {
  const last = at("2026-06-01T12:00:00Z");
  it("never: once per customer, whatever the reference", () => {
    expect(evaluateSend(base({ resend: { kind: "never" } }))).toEqual({ allow: true });
    expect(evaluateSend(base({ resend: { kind: "never" }, lastSendOfStep: last }))).toMatchObject({
      reason: "resend_policy",
    });
  });
  it("after: not before the cooldown since the last send", () => {
    expect(
      evaluateSend(base({ resend: { kind: "after", ms: 30 * DAY }, lastSendOfStep: last })),
    ).toMatchObject({
      reason: "resend_policy",
    });
    expect(
      evaluateSend(base({ resend: { kind: "after", ms: 5 * DAY }, lastSendOfStep: last })),
    ).toEqual({ allow: true });
  });
  it("on_reopt_in: again only after a grant newer than the last send", () => {
    const policy = { resend: { kind: "on_reopt_in" as const }, lastSendOfStep: last };
    expect(evaluateSend(base(policy))).toMatchObject({ reason: "resend_policy" });
    const regranted = { status: "granted" as const, grantedAt: at("2026-06-05T00:00:00Z") };
    expect(evaluateSend(base({ ...policy, consent: regranted }))).toEqual({ allow: true });
  });
  it("on_reopt_in in a version without a topic: a START is no fresh opt-in to the step", () => {
    const last = at("2026-06-01T12:00:00Z");
    const started = { status: "granted" as const, grantedAt: at("2026-06-05T12:00:00Z") };
    expect(
      evaluateSend(
        base({ resend: { kind: "on_reopt_in" }, lastSendOfStep: last, consent: started }),
      ),
    ).toEqual({ allow: true });
    expect(
      evaluateSend(
        base({
          topic: undefined,
          resend: { kind: "on_reopt_in" },
          lastSendOfStep: last,
          consent: started,
        }),
      ),
    ).toMatchObject({ allow: false, reason: "resend_policy" });
  });
});

describe("frequency caps", () => {
  const cap = { id: "email-daily", channel: "email" as const, max: 2, windowMs: DAY };
  const sends = (...isos: string[]) =>
    isos.map((iso) => ({ journeyId: "other", channel: "email" as const, at: at(iso) }));
  it("count every journey's sends in the window, and skip at the limit", () => {
    const two = sends("2026-06-10T01:00:00Z", "2026-06-10T08:00:00Z");
    expect(evaluateSend(base({ globalCaps: [cap], recentSends: two }))).toMatchObject({
      allow: false,
      reason: "frequency_cap",
    });
    expect(
      evaluateSend(
        base({
          globalCaps: [cap],
          recentSends: sends("2026-06-09T01:00:00Z", "2026-06-10T08:00:00Z"),
        }),
      ),
    ).toEqual({
      allow: true,
    });
  });
  it("delay to when a slot frees, with on_cap: delay", () => {
    const two = sends("2026-06-10T01:00:00Z", "2026-06-10T08:00:00Z");
    expect(
      evaluateSend(base({ globalCaps: [cap], recentSends: two, onCap: "delay" })),
    ).toMatchObject({
      delayUntil: at("2026-06-11T01:00:00Z"),
      reason: "frequency_cap",
    });
  });
  it("journey caps count only the journey's own sends; transactional journeys are exempt", () => {
    const own = { id: "promo-weekly", channel: "any" as const, max: 1, windowMs: 7 * DAY };
    expect(
      evaluateSend(base({ journeyCaps: [own], recentSends: sends("2026-06-10T01:00:00Z") })),
    ).toEqual({ allow: true });
    const mine = [{ journeyId: "promo", channel: "sms" as const, at: at("2026-06-09T00:00:00Z") }];
    expect(evaluateSend(base({ journeyCaps: [own], recentSends: mine }))).toMatchObject({
      reason: "frequency_cap",
    });
    expect(
      evaluateSend(base({ journeyCaps: [own], recentSends: mine, category: "transactional" })),
    ).toEqual({ allow: true });
  });
});

describe("quiet hours across daylight-saving changes", () => {
  const night = { startMinute: 21 * 60, endMinute: 8 * 60 };
  it("end at 08:00 local on the morning the clocks went back (Berlin, 25 Oct 2026)", () => {
    // 22:00 CEST (UTC+2) on the 24th; 08:00 the next morning is CET (UTC+1).
    expect(quietHoursEnd(at("2026-10-24T20:00:00Z"), night, "Europe/Berlin")).toEqual(
      at("2026-10-25T07:00:00Z"),
    );
  });
  it("end at 08:00 local on the morning the clocks went forward (Berlin, 29 Mar 2026)", () => {
    expect(quietHoursEnd(at("2026-03-28T21:00:00Z"), night, "Europe/Berlin")).toEqual(
      at("2026-03-29T06:00:00Z"),
    );
    expect(quietHoursEnd(at("2026-03-29T06:00:00Z"), night, "Europe/Berlin")).toBeUndefined();
  });
  it("follow the customer's zone: New York's fall-back night", () => {
    expect(quietHoursEnd(at("2026-11-01T05:30:00Z"), night, "America/New_York")).toEqual(
      at("2026-11-01T13:00:00Z"),
    );
  });
  it("end after now when they end inside the hour the clocks skip or repeat", () => {
    const late = { startMinute: 21 * 60, endMinute: 2 * 60 + 30 };
    // New York, 8 Mar 2026: 02:00 EST became 03:00 EDT at 07:00Z, so 02:30 never showed; at
    // 01:45 EST quiet hours end when the clocks jump (they had ended at 01:30 EST, in the past:
    // the step re-ran every few milliseconds until 03:00).
    expect(quietHoursEnd(at("2026-03-08T06:45:00Z"), late, "America/New_York")).toEqual(
      at("2026-03-08T07:00:00Z"),
    );
    // Berlin, 29 Mar 2026: 02:00 CET became 03:00 CEST at 01:00Z (it had said 03:30 CEST).
    expect(quietHoursEnd(at("2026-03-29T00:15:00Z"), late, "Europe/Berlin")).toEqual(
      at("2026-03-29T01:00:00Z"),
    );
    // New York, 1 Nov 2026: 01:00–02:00 showed twice (EDT, then EST from 06:00Z). At 01:10
    // EST, the second time round, 01:30 is the EST one, not the EDT one already past.
    const early = { startMinute: 21 * 60, endMinute: 90 };
    expect(quietHoursEnd(at("2026-11-01T06:10:00Z"), early, "America/New_York")).toEqual(
      at("2026-11-01T06:30:00Z"),
    );
    // Chatham, 27 Sep 2026: 02:45 +1245 became 03:45 +1345 at 14:00Z the day before (UTC).
    // At 01:45 local (13:00Z), 02:15 local is 13:30Z (it had said 12:30Z, in the past).
    const chatham = { startMinute: 22 * 60, endMinute: 2 * 60 + 15 };
    expect(quietHoursEnd(at("2026-09-26T13:00:00Z"), chatham, "Pacific/Chatham")).toEqual(
      at("2026-09-26T13:30:00Z"),
    );
    // The first time round, the first 01:30 (EDT).
    expect(quietHoursEnd(at("2026-11-01T05:10:00Z"), early, "America/New_York")).toEqual(
      at("2026-11-01T05:30:00Z"),
    );
    // Every end is after now, on each minute of both nights.
    // Chatham (+12:45, +13:45 in summer from 27 Sep 2026), Lord Howe (a half-hour change),
    // Santiago (clocks change at midnight) and Kolkata (no change) too.
    for (const [zone, day] of [
      ["America/New_York", "2026-03-08"],
      ["America/New_York", "2026-11-01"],
      ["Europe/Berlin", "2026-03-29"],
      ["Europe/Berlin", "2026-10-25"],
      ["Pacific/Chatham", "2026-09-26"],
      ["Pacific/Chatham", "2026-04-04"],
      ["Australia/Lord_Howe", "2026-10-03"],
      ["America/Santiago", "2026-09-06"],
      ["Asia/Kolkata", "2026-06-01"],
    ] as const) {
      for (let m = 0; m < 24 * 60; m += 1) {
        const now = new Date(Date.parse(`${day}T00:00:00Z`) + m * 60_000);
        for (const window of [late, early]) {
          const end = quietHoursEnd(now, window, zone);
          if (end)
            expect(end.getTime(), `${zone} ${now.toISOString()}`).toBeGreaterThan(now.getTime());
        }
      }
    }
  });

  it("delay a marketing send that falls inside, not drop it", () => {
    const verdict = evaluateSend(
      base({
        channel: "sms",
        address: "+4915112345678",
        now: at("2026-10-24T20:00:00Z"),
        quietHours: night,
      }),
    );
    expect(verdict).toMatchObject({
      allow: false,
      reason: "quiet_hours",
      delayUntil: at("2026-10-25T07:00:00Z"),
    });
  });
});

describe("unsubscribe tokens", () => {
  const secret = "s".repeat(40);
  const target = { customerId: "c_1", channel: "email" as const, topic: "promotions" };
  it("round-trip, and reject forged, altered and foreign-key tokens", () => {
    const token = signUnsubscribeToken(secret, target);
    expect(verifyUnsubscribeToken(secret, token)).toEqual(target);
    const [payload, mac] = token.split(".");
    const other = Buffer.from(JSON.stringify({ c: "c_2", ch: "email", t: "promotions" })).toString(
      "base64url",
    );
    expect(verifyUnsubscribeToken(secret, `${other}.${mac}`)).toBeUndefined();
    expect(verifyUnsubscribeToken(secret, `${payload}.${mac!.slice(0, -2)}AA`)).toBeUndefined();
    expect(verifyUnsubscribeToken("another-secret-of-enough-length-000000", token)).toBeUndefined();
    expect(verifyUnsubscribeToken(secret, "garbage")).toBeUndefined();
    expect(verifyUnsubscribeToken(secret, `${token}.x`)).toBeUndefined();
  });
  it("make RFC 8058 one-click headers with an https link and a mailto", () => {
    const links = unsubscribeLinks(secret, "https://news.shop.example", "shop.example", target);
    expect(links.headers["List-Unsubscribe-Post"]).toBe("List-Unsubscribe=One-Click");
    expect(links.headers["List-Unsubscribe"]).toMatch(
      /^<https:\/\/news\.shop\.example\/v1\/unsubscribe\/[\w-]+\.[\w-]+>, <mailto:unsubscribe@shop\.example\?subject=unsubscribe%20[\w-]+\.[\w-]+>$/,
    );
  });
});
