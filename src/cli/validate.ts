import { formatDiagnostic } from "../journeys/diagnostics";
import { loadJourneys } from "../journeys/load";

export interface ValidateOptions {
  format: "text" | "json";
}

/** `sendonce validate [dir]`: one line per problem; exit code 1 when any is an error. */
export function runValidate(dir: string, opts: ValidateOptions): number {
  const { journeys, diagnostics } = loadJourneys(dir);
  const errors = diagnostics.filter((d) => d.severity === "error").length;
  const warnings = diagnostics.length - errors;
  if (opts.format === "json") {
    const summary = journeys.map((j) => ({
      id: j.id,
      file: j.file,
      version: j.version,
      steps: j.steps.length,
    }));
    console.log(
      JSON.stringify(
        { ok: errors === 0, errors, warnings, diagnostics, journeys: summary },
        null,
        2,
      ),
    );
  } else {
    for (const d of diagnostics) console.log(formatDiagnostic(d));
    const verdict = errors === 0 ? "ok" : "failed";
    console.log(
      `${verdict}: ${journeys.length} valid journeys, ${plural(errors, "error")}, ${plural(warnings, "warning")}`,
    );
  }
  return errors > 0 ? 1 : 0;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}
