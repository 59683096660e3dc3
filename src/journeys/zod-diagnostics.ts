import type { z } from "zod";
import type { Diagnostic, Path, SourceMap } from "./diagnostics";
import { didYouMean } from "./diagnostics";

/**
 * Turns zod issues into located diagnostics with messages a marketer can act on: the field by
 * name, what it must be, and a "did you mean" for a misspelt field.
 */
export function zodDiagnostics(
  map: SourceMap,
  error: z.ZodError,
  raw: unknown,
  prefix: Path,
  fieldsAt: (path: Path) => string[],
): Diagnostic[] {
  const out: Diagnostic[] = [];
  for (const issue of error.issues) {
    const path = issue.path.filter((s): s is string | number => typeof s !== "symbol");
    const full = [...prefix, ...path];
    const field = describe(full);
    if (issue.code === "unrecognized_keys") {
      for (const key of issue.keys) {
        const where = field ? ` in ${field}` : "";
        out.push(
          map.diagnostic(
            "error",
            "unknown_field",
            [...full, key],
            `unknown field "${key}"${where}${didYouMean(key, fieldsAt(path))}`,
            { key: true },
          ),
        );
      }
      continue;
    }
    const value = valueAt(raw, path);
    if (value === undefined && issue.code === "invalid_type") {
      const parent = describe(full.slice(0, -1));
      out.push(
        map.diagnostic(
          "error",
          "missing_field",
          full.slice(0, -1),
          `${parent || "the file"} is missing "${String(full.at(-1))}"`,
        ),
      );
      continue;
    }
    out.push(map.diagnostic("error", "invalid_value", full, `${field}: ${message(issue, value)}`));
  }
  return out;
}

function message(issue: z.core.$ZodIssue, value: unknown): string {
  switch (issue.code) {
    case "invalid_value":
      return `must be one of ${issue.values.map((v) => JSON.stringify(v)).join(", ")}, not ${JSON.stringify(value)}`;
    case "invalid_type":
      return `must be ${article(issue.expected)}, not ${kindOf(value)}`;
    case "invalid_union": {
      // The form the value took (a mapping, say) failed inside: say where and why, not only
      // that no form fits.
      for (const branch of issue.errors) {
        const inner = branch.find((i) => i.path.length > 0);
        if (inner) {
          return `${inner.path.join(".")}: ${message(inner, valueAt(value, inner.path as Path))}`;
        }
      }
      return `${JSON.stringify(value)} is not allowed here`;
    }
    default:
      return issue.message;
  }
}

function article(expected: string): string {
  if (expected === "array") return "a list";
  if (expected === "record" || expected === "object") return "a mapping of fields";
  return /^[aeiou]/.test(expected) ? `an ${expected}` : `a ${expected}`;
}

function kindOf(value: unknown): string {
  if (value === null) return "empty";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "object") return "a mapping";
  return `${typeof value} ${JSON.stringify(value)}`;
}

/** `["steps", 2, "email", "subject"]` → `steps[2].email.subject`. */
export function describe(path: Path): string {
  return path.reduce<string>(
    (acc, s) => (typeof s === "number" ? `${acc}[${s}]` : acc ? `${acc}.${s}` : s),
    "",
  );
}

function valueAt(raw: unknown, path: Path): unknown {
  let node = raw;
  for (const segment of path) {
    if (node === null || typeof node !== "object") return undefined;
    node = (node as Record<string | number, unknown>)[segment];
  }
  return node;
}
