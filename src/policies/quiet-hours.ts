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

/** The instant at which the wall clock in `timeZone` shows this local date and minute. */
export function zonedInstant(l: LocalTime, timeZone: string): Date {
  const wall = Date.UTC(l.year, l.month - 1, l.day, 0, l.minute);
  let t = wall - offsetMs(timeZone, wall);
  // Near a DST change the offset at the first guess can differ from the offset at the answer.
  const second = offsetMs(timeZone, t);
  if (wall - second !== t) t = wall - second;
  // A local time that does not exist (the spring-forward gap) lands on the first one after it.
  return new Date(t);
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
  );
}
