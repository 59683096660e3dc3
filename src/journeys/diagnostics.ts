import type { Document, LineCounter, Node } from "yaml";
import { isMap, isPair, isScalar, isSeq } from "yaml";

/** One problem found in a journey file, located at the character a marketer must fix. */
export interface Diagnostic {
  severity: "error" | "warning";
  file: string;
  line: number;
  column: number;
  message: string;
  /** A stable code for machines: unknown_step_kind, missing_goto_target, ... */
  code: string;
}

export type Path = readonly (string | number)[];

/** `file:line:column: severity: message`, the form editors and CI logs link from. */
export function formatDiagnostic(d: Diagnostic): string {
  return `${d.file}:${d.line}:${d.column}: ${d.severity}: ${d.message}`;
}

export function compareDiagnostics(a: Diagnostic, b: Diagnostic): number {
  return a.file.localeCompare(b.file) || a.line - b.line || a.column - b.column;
}

/**
 * Maps paths inside a parsed YAML document back to line and column. `key: true` points at the
 * key of a map entry instead of its value (where an unknown or misspelt key is the problem).
 */
export class SourceMap {
  constructor(
    readonly file: string,
    private readonly source: string,
    private readonly doc: Document,
    private readonly lines: LineCounter,
  ) {}

  /** Position of the node at `path`, or of its nearest existing ancestor. */
  locate(path: Path, opts: { key?: boolean } = {}): { line: number; column: number } {
    let node: unknown = this.doc.contents;
    let keyNode: unknown;
    for (const segment of path) {
      const next = childOf(node, segment);
      if (!next) break;
      keyNode = next.key;
      node = next.value;
    }
    const target = opts.key && keyNode ? keyNode : node;
    const start = rangeStart(target) ?? 0;
    const pos = this.lines.linePos(start);
    return { line: pos.line, column: pos.col };
  }

  /**
   * Position of 1-based `line`/`column` inside the text of the string scalar at `path`, so a
   * problem in an inline template or condition points into the YAML file itself.
   */
  inScalar(path: Path, line: number, column: number): { line: number; column: number } {
    const node = this.doc.getIn(path, true);
    if (!isScalar(node) || !node.range) return this.locate(path);
    const start = this.lines.linePos(node.range[0]);
    if (node.type === "BLOCK_LITERAL" || node.type === "BLOCK_FOLDED") {
      // Content starts on the line after the `|` or `>` header, at the block's indentation.
      const yamlLine = start.line + line;
      const text = this.source.split("\n")[yamlLine - 1] ?? "";
      return { line: yamlLine, column: text.length - text.trimStart().length + column };
    }
    const quote = node.type === "QUOTE_DOUBLE" || node.type === "QUOTE_SINGLE" ? 1 : 0;
    return line === 1
      ? { line: start.line, column: start.col + quote + column - 1 }
      : { line: start.line + line - 1, column };
  }

  diagnostic(
    severity: Diagnostic["severity"],
    code: string,
    path: Path,
    message: string,
    opts: { key?: boolean } = {},
  ): Diagnostic {
    return { severity, code, file: this.file, message, ...this.locate(path, opts) };
  }
}

function childOf(
  node: unknown,
  segment: string | number,
): { key: unknown; value: unknown } | undefined {
  if (isMap(node)) {
    const pair = node.items.find((p) => isPair(p) && isScalar(p.key) && p.key.value === segment);
    return pair ? { key: pair.key, value: pair.value ?? pair.key } : undefined;
  }
  if (isSeq(node) && typeof segment === "number") {
    const item = node.items[segment];
    return item ? { key: item, value: item } : undefined;
  }
  return undefined;
}

function rangeStart(node: unknown): number | undefined {
  return (node as Node | undefined)?.range?.[0];
}

/** The closest candidate within a small edit distance, for "did you mean" hints. */
export function suggest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Math.max(1, Math.floor(word.length / 3)) + 1;
  for (const candidate of candidates) {
    const d = editDistance(word.toLowerCase(), candidate.toLowerCase());
    if (d < bestDistance) {
      best = candidate;
      bestDistance = d;
    }
  }
  return best;
}

export function didYouMean(word: string, candidates: readonly string[]): string {
  const hint = suggest(word, candidates);
  return hint ? ` — did you mean "${hint}"?` : "";
}

/** Damerau-Levenshtein (optimal string alignment): a swapped pair of letters costs one edit. */
function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) =>
    Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)),
  );
  const at = (i: number, j: number): number => d[i]![j]!;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(at(i - 1, j) + 1, at(i, j - 1) + 1, at(i - 1, j - 1) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        v = Math.min(v, at(i - 2, j - 2) + 1);
      }
      d[i]![j] = v;
    }
  }
  return at(a.length, b.length);
}
