/** A parsed duration such as `90s`, `1h30m` or `7d`: the text as written and its milliseconds. */
export interface Duration {
  text: string;
  ms: number;
}

const UNIT_MS = {
  ms: 1,
  s: 1_000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 604_800_000,
} as const;
const PART = /(\d+)(ms|s|m|h|d|w)/y;

/** The longest duration anything takes: ten years. */
const MAX_DURATION_MS = 3_650 * 86_400_000;
const MAX_DURATION_TEXT = "ten years";

/**
 * Parses `<number><unit>` parts (ms, s, m, h, d, w), largest unit first: `90s`, `1h30m`, `7d`.
 * Returns an error message instead of throwing, so callers can place it in the file.
 */
export function parseDuration(text: string): Duration | { error: string } {
  const trimmed = text.trim();
  const usage = `use a number and a unit (ms, s, m, h, d, w), e.g. "90s", "1h30m" or "7d"`;
  if (trimmed === "") return { error: `empty duration: ${usage}` };
  let ms = 0;
  let lastUnit = Infinity;
  PART.lastIndex = 0;
  while (PART.lastIndex < trimmed.length) {
    const start = PART.lastIndex;
    const match = PART.exec(trimmed);
    if (!match || match.index !== start) return { error: `bad duration "${text}": ${usage}` };
    const unit = UNIT_MS[match[2] as keyof typeof UNIT_MS];
    if (unit >= lastUnit)
      return { error: `bad duration "${text}": put larger units first, each once` };
    lastUnit = unit;
    ms += Number(match[1]) * unit;
  }
  if (ms <= 0) return { error: `bad duration "${text}": it must be longer than zero` };
  // A date that far out is no date at all (JavaScript's end of time is 275,760 years away):
  // a wait or a window longer than this is a typo.
  if (ms > MAX_DURATION_MS)
    return {
      error: `bad duration "${text}": at most ${MAX_DURATION_TEXT} (${formatDuration(MAX_DURATION_MS)})`,
    };
  return { text: trimmed, ms };
}

export function isDurationError(d: Duration | { error: string }): d is { error: string } {
  return "error" in d;
}

/** `5400000` → `1h30m`: for messages and reports. */
export function formatDuration(ms: number): string {
  if (ms === 0) return "0s";
  const parts: string[] = [];
  let rest = ms;
  for (const [unit, size] of [
    ["d", 86_400_000],
    ["h", 3_600_000],
    ["m", 60_000],
    ["s", 1_000],
    ["ms", 1],
  ] as const) {
    if (rest >= size) {
      parts.push(`${Math.floor(rest / size)}${unit}`);
      rest %= size;
    }
  }
  return parts.join("");
}
