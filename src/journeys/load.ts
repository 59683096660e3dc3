// Reads a journeys directory: every `*.yaml` / `*.yml` is a journey except `policies.yaml`,
// which holds the global policies. Problems come back as diagnostics, never as exceptions.
import { existsSync, readFileSync, readdirSync, statSync } from "node:fs";
import { join, posix } from "node:path";
import type { Diagnostic, SourceMap } from "./diagnostics";
import { compareDiagnostics, didYouMean } from "./diagnostics";
import { caps, parseJourney, parseYaml } from "./parse";
import type { ParsedFile } from "./parse";
import { knownFields, policiesSchema } from "./schema";
import type { Journey, Policies, QuietHours } from "./types";
import { DEFAULT_POLICIES } from "./types";
import { zodDiagnostics } from "./zod-diagnostics";

export const POLICIES_FILE = "policies.yaml";

export interface LoadedJourneys {
  /** Journeys without errors, in file-name order. */
  journeys: Journey[];
  policies: Policies;
  /** Errors and warnings of every file, in file and line order. */
  diagnostics: Diagnostic[];
}

export function loadJourneys(dir: string): LoadedJourneys {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    return {
      journeys: [],
      policies: DEFAULT_POLICIES,
      diagnostics: [
        {
          severity: "error",
          code: "no_directory",
          file: dir,
          line: 1,
          column: 1,
          message: existsSync(dir)
            ? "not a directory: give the journeys directory, not one file in it"
            : "journeys directory not found",
        },
      ],
    };
  }
  const display = (name: string) => posix.join(dir.replace(/\\/g, "/"), name);
  const readTemplate = (relative: string) => {
    const path = join(dir, relative);
    return existsSync(path) && statSync(path).isFile() ? readFileSync(path, "utf8") : undefined;
  };
  const diagnostics: Diagnostic[] = [];
  const names = readdirSync(dir)
    .filter((n) => /\.ya?ml$/.test(n))
    .sort();

  let policies = DEFAULT_POLICIES;
  if (names.includes(POLICIES_FILE)) {
    const parsed = parsePolicies(
      display(POLICIES_FILE),
      readFileSync(join(dir, POLICIES_FILE), "utf8"),
    );
    diagnostics.push(...parsed.diagnostics);
    policies = parsed.value ?? DEFAULT_POLICIES;
  }

  if (names.every((n) => n === POLICIES_FILE)) {
    diagnostics.push({
      severity: "error",
      code: "no_journeys",
      file: dir,
      line: 1,
      column: 1,
      message:
        "no journey files (*.yaml) in this directory: a worker without journeys would mark every event processed and enroll no one",
    });
  }
  const journeys: Journey[] = [];
  // Every journey that parsed, by id, also one whose file clashes with another's: a reversal
  // of its points is not also reported as pointing at nothing.
  const parsedById = new Map<string, Journey>();
  const files = new Map<string, string>();
  const maps = new Map<string, SourceMap>();
  for (const name of names.filter((n) => n !== POLICIES_FILE)) {
    const parsed = parseJourney(
      display(name),
      readFileSync(join(dir, name), "utf8"),
      readTemplate,
      display,
    );
    diagnostics.push(...parsed.diagnostics);
    // Ids are compared also for files with errors: fixing those must not uncover a clash.
    if (parsed.id === undefined) continue;
    if (parsed.value && !parsedById.has(parsed.id)) parsedById.set(parsed.id, parsed.value);
    const other = files.get(parsed.id);
    if (other) {
      const message = `journey id "${parsed.id}" is already used by ${other}: ids must be unique, they are part of every action key`;
      diagnostics.push(
        parsed.map?.diagnostic("error", "duplicate_journey_id", ["id"], message) ?? {
          severity: "error",
          code: "duplicate_journey_id",
          file: display(name),
          line: 1,
          column: 1,
          message,
        },
      );
      continue;
    }
    files.set(parsed.id, display(name));
    const journey = parsed.value;
    if (!journey) continue;
    if (parsed.map) maps.set(journey.id, parsed.map);
    journeys.push({ ...journey, file: name });
  }
  diagnostics.push(...checkPointReversals(journeys, maps, parsedById));
  const failed = new Set(diagnostics.filter((d) => d.severity === "error").map((d) => d.file));
  return {
    journeys: journeys.filter((j) => !failed.has(display(j.file))),
    policies,
    diagnostics: diagnostics.sort(compareDiagnostics),
  };
}

/** A `points: { reverse: ... }` step must name a points step that grants points. */
function checkPointReversals(
  journeys: Journey[],
  maps: Map<string, SourceMap>,
  byId: Map<string, Journey>,
): Diagnostic[] {
  const out: Diagnostic[] = [];
  for (const journey of journeys) {
    journey.steps.forEach((step, index) => {
      if (step.kind !== "reverse_points") return;
      const target = byId.get(step.journey);
      const map = maps.get(journey.id)!;
      const reverse = ["steps", index, "points", "reverse"];
      if (!target) {
        out.push(
          map.diagnostic(
            "error",
            "missing_reverse_target",
            [...reverse, "journey"],
            `step "${step.id}" reverses points of journey "${step.journey}", which does not exist${didYouMean(step.journey, [...byId.keys()])}`,
          ),
        );
        return;
      }
      const granted = target.steps.find((s) => s.id === step.step);
      if (granted?.kind !== "points" || granted.amount <= 0) {
        const ids = target.steps.filter((s) => s.kind === "points").map((s) => s.id);
        out.push(
          map.diagnostic(
            "error",
            "missing_reverse_target",
            [...reverse, "step"],
            `step "${step.id}" reverses "${step.journey}.${step.step}", which is not a points step that grants points${didYouMean(step.step, ids)}`,
          ),
        );
      }
    });
  }
  return out;
}

export function parsePolicies(file: string, text: string): ParsedFile<Policies> {
  const { raw, map, diagnostics } = parseYaml(file, text);
  if (diagnostics.length > 0) return { diagnostics };
  const result = policiesSchema.safeParse(raw ?? {});
  if (!result.success) {
    return {
      diagnostics: zodDiagnostics(map, result.error, raw, [], (p) => knownFields("policies", p)),
    };
  }
  const p = result.data;
  const quietHours: Policies["quietHours"] = {};
  for (const channel of ["email", "sms"] as const) {
    const window = p.quiet_hours[channel];
    if (!window) continue;
    if (window.start === window.end) {
      diagnostics.push(
        map.diagnostic(
          "error",
          "empty_quiet_hours",
          ["quiet_hours", channel],
          `quiet hours for ${channel} start and end at the same time`,
        ),
      );
    }
    quietHours[channel] = { startMinute: window.start, endMinute: window.end } satisfies QuietHours;
  }
  if (diagnostics.length > 0) return { diagnostics };
  return {
    value: {
      caps: caps(p.caps, "global"),
      onCap: p.on_cap,
      quietHours,
      defaultTimezone: p.default_timezone,
    },
    diagnostics,
  };
}
