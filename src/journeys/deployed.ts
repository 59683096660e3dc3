// What changed since a journey's deployed version that changes action keys: a step id that is
// gone, or the journey's own id. Keys are `journey + step id + customer + reference`, so a step
// renamed from `welcome` to `welcome_v2` is a new action for everyone: customers who already
// had `welcome` get it again. Compared with the latest version in Postgres (every version that
// was deployed is kept).
import type { Db } from "../db/client";
import type { Diagnostic } from "./diagnostics";
import type { Journey } from "./types";

interface Deployed {
  journeyId: string;
  version: string;
  stepIds: string[];
  deployedAt: Date;
}

/**
 * A warning for each step id of a journey's last deployed version that `journeys` lack, and
 * for a journey whose file was last deployed under another id.
 */
export async function stepIdChanges(
  db: Db,
  journeys: Journey[],
  fileOf: (j: Journey) => string,
): Promise<Diagnostic[]> {
  if (journeys.length === 0) return [];
  const deployed = await db.$queryRaw<Deployed[]>`
    SELECT DISTINCT ON ("journeyId") "journeyId", version, "stepIds", "deployedAt"
    FROM "JourneyVersion" WHERE "journeyId" = ANY(${journeys.map((j) => j.id)})
    ORDER BY "journeyId", "deployedAt" DESC`;
  const last = new Map(deployed.map((d) => [d.journeyId, d]));
  const out: Diagnostic[] = [];
  for (const j of journeys) {
    const d = last.get(j.id);
    if (!d || d.version === j.version) continue;
    const now = new Set(j.steps.map((s) => s.id));
    const gone = d.stepIds.filter((id) => !now.has(id));
    const added = j.steps.map((s) => s.id).filter((id) => !d.stepIds.includes(id));
    for (const id of gone) {
      const renamed = gone.length === 1 && added.length === 1 ? ` (renamed to "${added[0]}"?)` : "";
      out.push({
        severity: "warning",
        code: "step_id_removed",
        file: fileOf(j),
        line: 1,
        column: 1,
        message:
          `step "${id}" of journey "${j.id}" is in the deployed version (${d.version.slice(0, 12)}, ` +
          `${d.deployedAt.toISOString()}) but not here${renamed}: action keys contain the step id, ` +
          "so a renamed step is a new action, sent again to customers who already had it",
      });
    }
  }
  // A journey id changed in its file: every key contains it, so every send is new.
  const gone = await db.$queryRaw<{ journeyId: string; file: string; deployedAt: Date }[]>`
    SELECT DISTINCT ON ("journeyId") "journeyId", definition->>'file' AS file, "deployedAt"
    FROM "JourneyVersion" WHERE NOT ("journeyId" = ANY(${journeys.map((j) => j.id)}))
    ORDER BY "journeyId", "deployedAt" DESC`;
  for (const j of journeys) {
    for (const d of gone.filter((g) => g.file === j.file)) {
      out.push({
        severity: "warning",
        code: "journey_id_changed",
        file: fileOf(j),
        line: 1,
        column: 1,
        message:
          `journey "${j.id}" in ${j.file} was deployed as "${d.journeyId}" (last ${d.deployedAt.toISOString()}): ` +
          "action keys contain the journey id, so a renamed journey sends everything anew, also to customers who already had it",
      });
    }
  }
  return out;
}

/** A journey id that no worker has deployed to this database: most often a typo. */
export class UnknownJourneyError extends Error {
  override readonly name = "UnknownJourneyError";
}

/**
 * Refuses a `--journey` that this database has never run, naming the ones it has: a typo would
 * otherwise read as a report of nothing, or an empty timeline.
 */
export async function requireDeployed(db: Db, journeyId: string): Promise<void> {
  const rows = await db.$queryRaw<{ journeyId: string }[]>`
    SELECT DISTINCT "journeyId" FROM "JourneyVersion" ORDER BY "journeyId"`;
  if (rows.some((r) => r.journeyId === journeyId)) return;
  const known = rows.map((r) => r.journeyId);
  throw new UnknownJourneyError(
    `unknown journey "${journeyId}": ` +
      (known.length > 0
        ? `this database has run ${known.join(", ")}`
        : "no worker has deployed a journey to this database yet"),
  );
}
