// What --since and --until accept: an ISO date, a date and time with its zone, or a duration
// back from now; anything JavaScript's lenient Date.parse would guess at is refused by name.
import { describe, expect, it } from "vitest";
import { parseWhen } from "../../src/cli/backfill";

const now = new Date("2026-12-02T12:00:00Z");
const when = (value: string, flag = "since") => parseWhen(flag, value, now);

describe("--since and --until", () => {
  it("take a date (midnight UTC), a date and time with its zone, or a duration", () => {
    expect(when("2026-11-01")).toBe("2026-11-01T00:00:00.000Z");
    expect(when("2026-11-01T09:00:00Z")).toBe("2026-11-01T09:00:00.000Z");
    expect(when("2026-11-01T09:00Z")).toBe("2026-11-01T09:00:00.000Z");
    expect(when("2026-11-01T09:00:00.250+01:00")).toBe("2026-11-01T08:00:00.250Z");
    expect(when("2026-11-01T09:00:00-0500")).toBe("2026-11-01T14:00:00.000Z");
    expect(when("30d")).toBe("2026-11-02T12:00:00.000Z");
    expect(when("2027-01-01", "until")).toBe("2027-01-01T00:00:00.000Z");
  });

  it("refuse what Date.parse would guess at, naming the flag and the value", () => {
    // Date.parse: "7" is 2001-07-01, "Nov 1" 2001-11-01, 2026-02-30 is March 2nd, and a time
    // without a zone is the machine's local time.
    expect(() => when("7")).toThrow(/^--since 7: not a date; use an ISO-8601 date/);
    expect(() => when("Nov 1")).toThrow(/--since Nov 1: not a date/);
    expect(() => when("2026-02-30", "until")).toThrow(/--until 2026-02-30: no such date or time/);
    expect(() => when("2026-11-01T25:00:00Z")).toThrow(/no such date or time/);
    expect(() => when("2026-11-01T09:00:00")).toThrow(
      /--since 2026-11-01T09:00:00: a time needs its zone \(Z or \+01:00\)/,
    );
    expect(() => when("2099-01-01")).toThrow(/--since 2099-01-01 is in the future/);
  });
});
