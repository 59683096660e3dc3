// Conditions are CEL (Common Expression Language): small, side-effect free, no eval, and
// checked before a journey is deployed. The engine only ever sees compiled `Predicate`s.
import { Environment, EvaluationError } from "@marcbachmann/cel-js";
import { CONDITION_ROOTS } from "./types";

const environment = CONDITION_ROOTS.reduce(
  (env, root) => env.registerVariable(root, "map"),
  new Environment({ homogeneousAggregateLiterals: false }),
);

/** A problem in a condition, at a character offset inside its source. */
export interface ExpressionProblem {
  offset: number;
  message: string;
}

/** Checks syntax, variable roots and that the result is a boolean. */
export function checkCondition(source: string): ExpressionProblem | undefined {
  const result = environment.check(source);
  if (!result.valid) {
    const error = result.error!;
    const unknown = /^Unknown variable: (\S+)/.exec(error.summary ?? error.message);
    const message = unknown
      ? `unknown variable "${unknown[1]}": conditions can read ${CONDITION_ROOTS.join(", ")}`
      : (error.summary ?? firstLine(error.message));
    return { offset: error.range?.start ?? 0, message: `condition: ${message}` };
  }
  if (result.type !== "bool" && result.type !== "dyn") {
    const type = result.type ?? "value";
    return {
      offset: 0,
      message: `condition must be true or false, but this one gives ${/^[aeiou]/.test(type) ? "an" : "a"} ${type}`,
    };
  }
  return undefined;
}

export type ConditionContext = Partial<Record<(typeof CONDITION_ROOTS)[number], unknown>>;

/** The outcome of a condition: a missing field makes it false, with the reason kept for audit. */
export type PredicateResult = { value: boolean; error?: string };
export type Predicate = (context: ConditionContext) => PredicateResult;

export function compileCondition(source: string): Predicate {
  const program = environment.parse(source);
  return (context) => {
    try {
      return { value: program(toCel(context) as Record<string, unknown>) === true };
    } catch (error) {
      if (error instanceof EvaluationError) return { value: false, error: error.summary };
      throw error;
    }
  };
}

/** JSON integers become CEL ints, so `event.properties.count + 1 > 2` type-checks at runtime. */
function toCel(value: unknown): unknown {
  if (typeof value === "number" && Number.isSafeInteger(value)) return BigInt(value);
  if (Array.isArray(value)) return value.map(toCel);
  if (value instanceof Date) return value.toISOString();
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, toCel(v)]));
  }
  return value;
}

function firstLine(text: string): string {
  return text.split("\n")[0] ?? text;
}
