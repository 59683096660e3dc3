// Strings Postgres cannot store: U+0000 (neither text nor jsonb takes it) and a lone UTF-16
// surrogate (JSON can spell one, `"\ud800"`, but it is not Unicode, and jsonb refuses it).
// Found at validation, with the field named, so such a value is a 400 and never a database
// error half-way through storing a request.
import type { z } from "zod";

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function problemWith(s: string): string | undefined {
  if (s.includes("\u0000"))
    return "contains a NUL character (\\u0000), which Postgres cannot store";
  if (LONE_SURROGATE.test(s))
    return "contains a lone UTF-16 surrogate (such as \\ud800), which is not valid Unicode";
  return undefined;
}

/** Each string (or object key) in `value` that cannot be stored, with where it is. */
export function unstorable(
  value: unknown,
  path: (string | number)[] = [],
): { path: (string | number)[]; message: string }[] {
  if (typeof value === "string") {
    const message = problemWith(value);
    return message ? [{ path, message }] : [];
  }
  if (Array.isArray(value)) return value.flatMap((v, i) => unstorable(v, [...path, i]));
  if (value === null || typeof value !== "object" || value instanceof Date) return [];
  return Object.entries(value).flatMap(([k, v]) => {
    const message = problemWith(k);
    return message ? [{ path: [...path, k], message }] : unstorable(v, [...path, k]);
  });
}

/** Adds an issue for each unstorable string: for a schema's superRefine. */
export function refineStorable(value: unknown, ctx: z.RefinementCtx): void {
  for (const { path, message } of unstorable(value))
    ctx.addIssue({ code: "custom", path, message });
}
