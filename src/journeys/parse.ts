// One journey file in, a parsed `Journey` (or located diagnostics) out. Pure: files are read
// by the caller (load.ts) and passed in.
import { createHash } from "node:crypto";
import { LineCounter, parseDocument } from "yaml";
import type { Diagnostic } from "./diagnostics";
import { SourceMap } from "./diagnostics";
import { FileContext } from "./file-context";
import type { ReadTemplate } from "./file-context";
import type { RawJourney } from "./schema";
import { journeySchema, knownFields } from "./schema";
import { StepParser } from "./steps";
import type { Cap, Condition, Journey, Step } from "./types";
import { zodDiagnostics } from "./zod-diagnostics";

export interface ParsedFile<T> {
  value?: T;
  diagnostics: Diagnostic[];
  /** For checks across files that must point into this one. */
  map?: SourceMap;
  /** The journey's id as written, also when the file has errors: ids are checked across files. */
  id?: string;
}

/** Parses YAML text into a plain value, with the source map for locating problems. */
export function parseYaml(
  file: string,
  text: string,
): { raw?: unknown; map: SourceMap; diagnostics: Diagnostic[] } {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  const map = new SourceMap(file, text, doc, lines);
  const diagnostics = doc.errors.map((e): Diagnostic => {
    const pos = lines.linePos(e.pos[0]);
    return {
      severity: "error",
      code: "yaml_syntax",
      file,
      line: pos.line,
      column: pos.col,
      message: `YAML: ${e.message.split("\n")[0]}`,
    };
  });
  if (diagnostics.length > 0) return { map, diagnostics };
  return { raw: doc.toJS() as unknown, map, diagnostics };
}

export function parseJourney(
  file: string,
  text: string,
  readTemplate: ReadTemplate,
  templateDisplayPath: (relativePath: string) => string,
): ParsedFile<Journey> {
  const { raw, map, diagnostics } = parseYaml(file, text);
  if (diagnostics.length > 0) return { diagnostics };
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    return {
      diagnostics: [
        map.diagnostic(
          "error",
          "not_a_mapping",
          [],
          "a journey file must be a mapping with id, name, trigger and steps",
        ),
      ],
    };
  }
  const top = journeySchema.safeParse(raw);
  if (!top.success) {
    diagnostics.push(...zodDiagnostics(map, top.error, raw, [], (p) => knownFields("journey", p)));
  }
  // Everything that can be checked on its own is, even when the top level has problems, so
  // one run reports every problem.
  const r = raw as {
    steps?: unknown;
    trigger?: { when?: unknown };
    exit?: unknown;
    entry?: { reference?: unknown };
  };
  const rawSteps = Array.isArray(r.steps) ? (r.steps as unknown[]) : [];
  const ctx = new FileContext(map, diagnostics, readTemplate, templateDisplayPath);
  const stepParser = new StepParser(ctx);
  const steps = rawSteps.map((s, i) => stepParser.step(s, i));
  stepParser.graph(steps, rawSteps);
  ctx.condition(stringOrUndefined(r.trigger?.when), ["trigger", "when"]);
  if (Array.isArray(r.exit)) {
    r.exit.forEach((rule: { when?: unknown } | null, i) =>
      ctx.condition(stringOrUndefined(rule?.when), ["exit", i, "when"]),
    );
  }
  const reference = ctx.inlineTemplate(stringOrUndefined(r.entry?.reference), [
    "entry",
    "reference",
  ]);
  const id = stringOrUndefined((raw as { id?: unknown }).id);
  const failed = () => ({ diagnostics, map, ...(id !== undefined && { id }) });
  if (!top.success) return failed();

  const j = top.data;
  if (j.entry.once === "per_reference" && !j.entry.reference) {
    diagnostics.push(
      map.diagnostic(
        "error",
        "missing_field",
        ["entry"],
        'entry "once: per_reference" needs a "reference", e.g. "{{ event.properties.cart_id }}"',
      ),
    );
  }
  if (j.entry.once !== "per_reference" && j.entry.reference) {
    diagnostics.push(
      map.diagnostic(
        "warning",
        "ignored_field",
        ["entry", "reference"],
        `entry "reference" is only used with "once: per_reference"; with "${j.entry.once}" it is ignored`,
        { key: true },
      ),
    );
  }
  const parsedSteps = steps.filter((s): s is Step => s !== undefined);
  // Without a topic, nothing the customer says about consent reaches a send.
  if (!j.consent) {
    parsedSteps.forEach((s, i) => {
      if (s.kind !== "email" && s.kind !== "sms") return;
      if (j.category === "marketing") {
        // An error, not a warning: nothing would be checked before the send, and neither a STOP
        // nor an unsubscribe link (which revoke topics) would stop it.
        diagnostics.push(
          map.diagnostic(
            "error",
            "no_consent_topic",
            ["steps", i, s.kind],
            `marketing ${s.kind} step "${s.id}" has no consent topic: set "consent:" on the journey (a marketing send goes only to customers who granted its topic, and STOP and unsubscribe links revoke it), or "category: transactional" for a message the customer asked for`,
            { key: true },
          ),
        );
      }
      if (s.resend.kind === "on_reopt_in") {
        diagnostics.push(
          map.diagnostic(
            "error",
            "resend_without_topic",
            ["steps", i, "resend"],
            `step "${s.id}": resend: on_reopt_in waits for a fresh grant of the journey's consent topic, and this journey has none: it would never send the step again; set "consent:" or use another resend policy`,
          ),
        );
      }
    });
  }
  if (diagnostics.some((d) => d.severity === "error")) return failed();

  const journey: Journey = {
    id: j.id,
    name: j.name,
    ...(j.description !== undefined && { description: j.description }),
    category: j.category,
    ...(j.consent !== undefined && { consent: j.consent }),
    trigger: { event: j.trigger.event, ...condition(j.trigger.when) },
    entry: {
      once: j.entry.once,
      ...(reference && j.entry.once === "per_reference" && { reference }),
      ...(j.entry.cooldown !== undefined && { cooldownMs: j.entry.cooldown }),
    },
    exit: j.exit.map((rule) => ({ event: rule.event, ...condition(rule.when) })),
    steps: parsedSteps.map((s) =>
      s.kind === "reverse_points" && s.journey === "" ? { ...s, journey: j.id } : s,
    ),
    caps: caps(j.caps, j.id),
    ...(j.on_cap !== undefined && { onCap: j.on_cap }),
    version: versionOf(text, ctx.templateSources),
    file,
  };
  return { value: journey, diagnostics, map, id: journey.id };
}

function stringOrUndefined(value: unknown): string | undefined {
  return typeof value === "string" ? value : undefined;
}

function condition(source: string | undefined): { when?: Condition } {
  return source === undefined ? {} : { when: { source } };
}

export function caps(raw: RawJourney["caps"], scope: string): Cap[] {
  return raw.map((c, i) => ({
    id: c.id ?? `${scope}-cap-${i + 1}`,
    channel: c.channel,
    max: c.max,
    windowMs: c.per,
  }));
}

/** sha256 of the journey file and every template it reads: an edited template is a new version. */
function versionOf(text: string, templates: Map<string, string>): string {
  const hash = createHash("sha256").update(text);
  for (const [path, source] of [...templates].sort(([a], [b]) => a.localeCompare(b))) {
    hash.update(`\0${path}\0${source}`);
  }
  return hash.digest("hex");
}
