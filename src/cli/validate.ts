import { reasonOf } from "../log";
import { posix } from "node:path";
import { loadConfig } from "../config";
import { createDb } from "../db/client";
import { stepIdChanges } from "../journeys/deployed";
import type { Diagnostic } from "../journeys/diagnostics";
import { compareDiagnostics, formatDiagnostic } from "../journeys/diagnostics";
import type { Journey } from "../journeys/types";
import { loadJourneys } from "../journeys/load";

export interface ValidateOptions {
  format: "text" | "json";
}

/**
 * `sendonce validate [dir]`: one line per problem; exit code 1 when any is an error. With
 * DATABASE_URL set, also warns of step ids the deployed versions have and these lack.
 */
export async function runValidate(dir: string, opts: ValidateOptions): Promise<number> {
  const loaded = loadJourneys(dir);
  const { journeys } = loaded;
  const diagnostics = [...loaded.diagnostics, ...(await againstDeployed(dir, journeys))].sort(
    compareDiagnostics,
  );
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

/** Step ids gone since the deployed versions, when there is a database to ask. */
async function againstDeployed(dir: string, journeys: Journey[]): Promise<Diagnostic[]> {
  const url = loadConfig().databaseUrl;
  if (!url || journeys.length === 0) return [];
  const db = createDb(url, { poolSize: 1 });
  try {
    return await stepIdChanges(db, journeys, (j) => posix.join(dir.replace(/\\/g, "/"), j.file));
  } catch (error) {
    console.error(
      `sendonce: could not compare with the deployed versions in DATABASE_URL: ${reasonOf(error)}`,
    );
    return [];
  } finally {
    await db.$disconnect();
  }
}
