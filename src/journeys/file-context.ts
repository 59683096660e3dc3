import type { z } from "zod";
import type { Diagnostic, Path, SourceMap } from "./diagnostics";
import { checkCondition } from "./expressions";
import { checkTemplate } from "./templates";
import type { Template } from "./types";
import { zodDiagnostics } from "./zod-diagnostics";

/** Reads a template file named in a journey; `undefined` when it does not exist. */
export type ReadTemplate = (relativePath: string) => string | undefined;

/** Per-file state while parsing a journey: where problems go, and the templates read so far. */
export class FileContext {
  readonly templateSources = new Map<string, string>();

  constructor(
    readonly map: SourceMap,
    private readonly diagnostics: Diagnostic[],
    private readonly readTemplate: ReadTemplate,
    private readonly templateDisplayPath: (relativePath: string) => string,
  ) {}

  error(code: string, path: Path, message: string, key = false): void {
    this.diagnostics.push(this.map.diagnostic("error", code, path, message, { key }));
  }

  validate<T>(
    schema: {
      safeParse(v: unknown): { success: true; data: T } | { success: false; error: z.ZodError };
    },
    value: unknown,
    path: Path,
    fields: string[],
  ): T | undefined {
    const result = schema.safeParse(value);
    if (result.success) return result.data;
    this.diagnostics.push(...zodDiagnostics(this.map, result.error, value, path, () => fields));
    return undefined;
  }

  condition(source: string | undefined, path: Path): void {
    if (source === undefined) return;
    const problem = checkCondition(source);
    if (!problem) return;
    const before = source.slice(0, problem.offset).split("\n");
    const pos = this.map.inScalar(path, before.length, before.at(-1)!.length + 1);
    this.diagnostics.push({
      severity: "error",
      code: "bad_condition",
      file: this.map.file,
      ...pos,
      message: problem.message,
    });
  }

  inlineTemplate(source: string | undefined, path: Path): Template | undefined {
    if (source === undefined) return undefined;
    const problems = checkTemplate(source);
    for (const p of problems) {
      const pos = this.map.inScalar(path, p.line, p.column);
      this.diagnostics.push({
        severity: "error",
        code: "bad_template",
        file: this.map.file,
        ...pos,
        message: p.message,
      });
    }
    return problems.length === 0 ? { source } : undefined;
  }

  fileTemplate(relativePath: string, path: Path): Template | undefined {
    const normalized = relativePath.replace(/\\/g, "/");
    if (normalized.startsWith("/") || normalized.split("/").includes("..")) {
      this.error(
        "template_outside_dir",
        path,
        `template "${relativePath}" must be a path inside the journeys directory`,
      );
      return undefined;
    }
    const source = this.readTemplate(normalized);
    if (source === undefined) {
      this.error(
        "template_not_found",
        path,
        `template file "${relativePath}" not found (paths are relative to the journeys directory)`,
      );
      return undefined;
    }
    this.templateSources.set(normalized, source);
    const problems = checkTemplate(source);
    const file = this.templateDisplayPath(normalized);
    for (const p of problems) {
      this.diagnostics.push({
        severity: "error",
        code: "bad_template",
        file,
        line: p.line,
        column: p.column,
        message: p.message,
      });
    }
    return problems.length === 0 ? { source, file: normalized } : undefined;
  }

  /** Step ids and jumps are checked even when some steps failed; the whole graph only when none did. */
}
