// Quiet hours in the customer's own timezone, with daylight-saving changes handled by the
// platform's time zone database (Intl), not by fixed offsets.
import type { QuietHours } from "../journeys/types";

const formatters = new Map<string, Intl.DateTimeFormat>();

function formatter(timeZone: string): Intl.DateTimeFormat {
  let f = formatters.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat("en-US", {
      timeZone,
      hourCycle: "h23",
      year: "numeric",
      month: "2-digit",
      day: "2-digit",
      hour: "2-digit",
      minute: "2-digit",
      second: "2-digit",
    });
    formatters.set(timeZone, f);
  }
  return f;
}

interface LocalTime {
  year: number;
  month: number;
  day: number;
  /** Minutes after local midnight. */
  minute: number;
}

export function localTime(at: Date, timeZone: string): LocalTime & { second: number } {
  const parts = Object.fromEntries(
    formatter(timeZone)
      .formatToParts(at)
      .map((p) => [p.type, Number(p.value)]),
  );
  return {
    year: parts.year!,
    month: parts.month!,
    day: parts.day!,
    minute: parts.hour! * 60 + parts.minute!,
    second: parts.second!,
  };
}

/** How far local wall-clock time is ahead of UTC at `utcMs`. */
function offsetMs(timeZone: string, utcMs: number): number {
  const l = localTime(new Date(utcMs), timeZone);
  const wall = Date.UTC(l.year, l.month - 1, l.day, 0, l.minute, l.second);
  return wall - Math.floor(utcMs / 1000) * 1000;
}

const DAY_MS = 86_400_000;
const MINUTE_MS = 60_000;

/** Whether the wall clock in `timeZone` shows this local date and minute at `t`. */
function shows(t: number, l: LocalTime, timeZone: string): boolean {
  const at = localTime(new Date(t), timeZone);
  return at.year === l.year && at.month === l.month && at.day === l.day && at.minute === l.minute;
}

/**
 * The instant at which the wall clock in `timeZone` shows this local date and minute: the first
 * after `after` when the clocks went back and it shows it twice, and the first instant after
 * the gap when the clocks went forward over it (02:30 on a spring-forward night is 03:00).
 */
export function zonedInstant(l: LocalTime, timeZone: string, after?: Date): Date {
  const wall = Date.UTC(l.year, l.month - 1, l.day, 0, l.minute);
  // Offsets run from -12 to +14 hours, and a zone changes its offset at most once in two days:
  // the offsets a day either side are the only ones this wall time can have (half a day was
  // not enough for Chatham's +13:45).
  const earlier = offsetMs(timeZone, wall - DAY_MS);
  const later = offsetMs(timeZone, wall + DAY_MS);
  const candidates = [...new Set([wall - later, wall - earlier])]
    .filter((t) => shows(t, l, timeZone))
    .sort((a, b) => a - b);
  const chosen =
    candidates.find((t) => after === undefined || t > after.getTime()) ?? candidates.at(-1);
  if (chosen !== undefined) return new Date(chosen);
  // In the gap: the clocks jumped at a minute between the two guesses; find it.
  let lo = Math.min(wall - later, wall - earlier);
  let hi = Math.max(wall - later, wall - earlier);
  while (hi - lo > MINUTE_MS) {
    const mid = lo + Math.floor((hi - lo) / 2 / MINUTE_MS) * MINUTE_MS;
    if (offsetMs(timeZone, mid) === later) hi = mid;
    else lo = mid;
  }
  return new Date(hi);
}

/** When quiet hours apply at `now`, the instant they end; otherwise undefined. */
export function quietHoursEnd(now: Date, window: QuietHours, timeZone: string): Date | undefined {
  const local = localTime(now, timeZone);
  const { startMinute: start, endMinute: end } = window;
  const m = local.minute;
  const inside = start < end ? m >= start && m < end : m >= start || m < end;
  if (!inside) return undefined;
  // A window that wraps midnight and started today ends tomorrow.
  const tomorrow = start > end && m >= start;
  const date = new Date(Date.UTC(local.year, local.month - 1, local.day + (tomorrow ? 1 : 0)));
  return zonedInstant(
    {
      year: date.getUTCFullYear(),
      month: date.getUTCMonth() + 1,
      day: date.getUTCDate(),
      minute: end,
    },
    timeZone,
    now,
  );
}
