// Templates are Liquid, the language marketers know from the large platforms. Filters are
// strict (a misspelt filter is an error at validation, not an empty string in a live email).
import { Liquid, LiquidError } from "liquidjs";
import type { Template as LiquidTemplate } from "liquidjs";
import { TEMPLATE_ROOTS } from "./types";

// Bounded: a loop a marketer got wrong fails its own render (a template error, the send
// skipped) instead of holding a worker or its memory.
const OPTIONS = {
  strictFilters: true,
  strictVariables: false,
  jsTruthy: false,
  memoryLimit: 10_000_000,
  renderLimit: 1_000,
};

// The tags that read files would read them from the worker's working directory (its .env, its
// state), into a customer's message, and outside the journey's version. A template file
// (`template:`) is the way to share text.
const FILE_TAGS = ["include", "render", "layout"];
const notSupported = (tag: string) =>
  `{% ${tag} %} is not supported: templates cannot read files; put the text in the template, or use template: FILE for the whole body`;

/** What validate (and so every deploy) parses with: a tag that reads files is an error there. */
const checking = new Liquid(OPTIONS);
/**
 * What sends render with. A version deployed before those tags were refused (enrollments keep
 * theirs) still compiles, and its render fails, a template error that skips the send, without
 * reading anything.
 */
const rendering = new Liquid(OPTIONS);
for (const tag of FILE_TAGS) {
  checking.registerTag(tag, {
    parse() {
      throw new Error(notSupported(tag));
    },
    render: () => "",
  });
  rendering.registerTag(tag, {
    parse() {},
    render() {
      throw new Error(notSupported(tag));
    },
  });
}

/** A problem in a template, at a 1-based line and column inside the template's own text. */
export interface TemplateProblem {
  line: number;
  column: number;
  message: string;
}

/** Parses the template and checks that every variable it reads comes from a known root. */
export function checkTemplate(source: string): TemplateProblem[] {
  let parsed: LiquidTemplate[];
  try {
    parsed = checking.parse(source);
  } catch (error) {
    if (error instanceof LiquidError) {
      const [line = 1, column = 1] = error.token?.getPosition() ?? [];
      return [{ line, column, message: `Liquid: ${stripPosition(error.message)}` }];
    }
    throw error;
  }
  const problems: TemplateProblem[] = [];
  const { globals } = checking.analyzeSync(parsed, { partials: false });
  for (const [root, uses] of Object.entries(globals)) {
    if ((TEMPLATE_ROOTS as readonly string[]).includes(root)) continue;
    for (const use of uses) {
      problems.push({
        line: use.location.row,
        column: use.location.col,
        message: `unknown variable "${root}": templates can read ${TEMPLATE_ROOTS.join(", ")}`,
      });
    }
  }
  return problems;
}

export type TemplateContext = Partial<Record<(typeof TEMPLATE_ROOTS)[number], unknown>>;
export type Renderer = (context: TemplateContext) => string;

export function compileTemplate(source: string): Renderer {
  const parsed = rendering.parse(source);
  return (context) => rendering.renderSync(parsed, context) as string;
}

/** liquidjs appends ", line:2, col:7" to its messages; we place the problem ourselves. */
function stripPosition(message: string): string {
  return message.replace(/, line:\d+, col:\d+$/, "");
}
