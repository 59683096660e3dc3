// Steps: each has an id and exactly one kind (wait, email, sms, points, branch) or `exit: true`.
import type { z } from "zod";
import type { Path } from "./diagnostics";
import { didYouMean } from "./diagnostics";
import type { FileContext } from "./file-context";
import { checkGraph } from "./graph";
import type { GraphStep } from "./graph";
import type { RawStepKind } from "./schema";
import {
  STEP_KINDS,
  branchCaseSchema,
  branchOtherwiseSchema,
  branchSchema,
  emailSchema,
  pointsSchema,
  reversePointsSchema,
  smsSchema,
  stepOptionsSchema,
  waitSchema,
} from "./schema";
import type { Condition, ResendPolicy, Step, StepBody } from "./types";

type ParsedResend = z.infer<typeof stepOptionsSchema>["resend"];

const SEND_KINDS = new Set<RawStepKind>(["email", "sms"]);
const OPTION_FIELDS = Object.keys(stepOptionsSchema.shape);

/** Per-file state while parsing: the source map, the diagnostics, templates read so far. */

/** Parses the steps of one journey file, reporting into its FileContext. */
export class StepParser {
  constructor(private readonly ctx: FileContext) {}

  step(raw: unknown, index: number): Step | undefined {
    const path: Path = ["steps", index];
    if (raw === null || typeof raw !== "object" || Array.isArray(raw)) return undefined;
    const fields = raw as Record<string, unknown>;
    const name = typeof fields.id === "string" ? `step "${fields.id}"` : `step ${index + 1}`;
    if (fields.id === undefined) {
      this.ctx.error(
        "missing_step_id",
        path,
        `${name} has no "id": step ids are part of every action key, so give each step a stable name`,
      );
    }
    const kinds = Object.keys(fields).filter((k): k is RawStepKind =>
      (STEP_KINDS as readonly string[]).includes(k),
    );
    for (const key of Object.keys(fields)) {
      if (OPTION_FIELDS.includes(key) || kinds.includes(key as RawStepKind)) continue;
      const asKind = kinds.length === 0;
      this.ctx.error(
        asKind ? "unknown_step_kind" : "unknown_field",
        [...path, key],
        asKind
          ? `${name}: unknown step kind "${key}"${didYouMean(key, STEP_KINDS)} (steps are ${STEP_KINDS.join(", ")}, or exit: true)`
          : `${name}: unknown field "${key}"${didYouMean(key, OPTION_FIELDS)}`,
        true,
      );
    }
    if (kinds.length > 1) {
      this.ctx.error(
        "several_step_kinds",
        [...path, kinds[1]!],
        `${name} has both "${kinds[0]}" and "${kinds[1]}": give each step one kind`,
        true,
      );
      return undefined;
    }
    const options = this.ctx.validate(
      fields.id === undefined ? stepOptionsSchema.partial({ id: true }) : stepOptionsSchema,
      Object.fromEntries(Object.entries(fields).filter(([k]) => OPTION_FIELDS.includes(k))),
      path,
      OPTION_FIELDS,
    );
    const kind = kinds[0];
    if (kind === undefined && fields.exit !== true) {
      if (Object.keys(fields).every((k) => OPTION_FIELDS.includes(k))) {
        this.ctx.error(
          "empty_step",
          path,
          `${name} does nothing: give it one of ${STEP_KINDS.join(", ")}, or exit: true`,
        );
      }
      return undefined;
    }
    if (options?.resend !== undefined && (kind === undefined || !SEND_KINDS.has(kind))) {
      this.ctx.error(
        "resend_not_send",
        [...path, "resend"],
        `${name}: "resend" applies to email and sms steps only`,
        true,
      );
    }
    if (options?.exit && kind === "branch") {
      this.ctx.error(
        "exit_on_branch",
        [...path, "exit"],
        `${name}: a branch cannot also exit; add an exit step and goto it`,
        true,
      );
    }
    const body =
      kind === undefined
        ? { kind: "exit" as const }
        : this.stepBody(kind, fields[kind], [...path, kind], options?.resend);
    if (!options || !body) return undefined;
    if (options.id === undefined) return undefined;
    return { id: options.id, exit: options.exit ?? false, ...body };
  }

  private stepBody(
    kind: RawStepKind,
    value: unknown,
    path: Path,
    rawResend: ParsedResend,
  ): StepBody | undefined {
    switch (kind) {
      case "wait": {
        const ms = this.ctx.validate(waitSchema, value, path, []);
        return ms === undefined ? undefined : { kind, ms };
      }
      case "email": {
        const email = this.ctx.validate(emailSchema, value, path, Object.keys(emailSchema.shape));
        if (!email) return undefined;
        if (email.template && email.html) {
          this.ctx.error(
            "template_and_html",
            [...path, "html"],
            'an email takes "template" or "html", not both',
            true,
          );
        }
        if (!email.template && !email.html && !email.text) {
          this.ctx.error(
            "email_without_body",
            path,
            'an email needs a body: "template" (a Liquid file), "html" or "text"',
            true,
          );
        }
        const subject = this.ctx.inlineTemplate(email.subject, [...path, "subject"]);
        const html = email.template
          ? this.ctx.fileTemplate(email.template, [...path, "template"])
          : this.ctx.inlineTemplate(email.html, [...path, "html"]);
        const text = this.ctx.inlineTemplate(email.text, [...path, "text"]);
        return (
          subject && {
            kind,
            subject,
            ...(html && { html }),
            ...(text && { text }),
            resend: resendPolicy(rawResend),
          }
        );
      }
      case "sms": {
        const sms = this.ctx.validate(smsSchema, value, path, Object.keys(smsSchema.shape));
        const body = sms && this.ctx.inlineTemplate(sms.body, [...path, "body"]);
        return body && { kind, body, resend: resendPolicy(rawResend) };
      }
      case "points": {
        if (value && typeof value === "object" && "reverse" in value) {
          const p = this.ctx.validate(
            reversePointsSchema,
            value,
            path,
            Object.keys(reversePointsSchema.shape),
          );
          // An unnamed journey means "this journey": parse.ts fills in the id; load.ts checks
          // the target across files.
          return (
            p && {
              kind: "reverse_points",
              journey: p.reverse.journey ?? "",
              step: p.reverse.step,
              reason: p.reason,
            }
          );
        }
        const p = this.ctx.validate(pointsSchema, value, path, Object.keys(pointsSchema.shape));
        return p && { kind, amount: p.amount, reason: p.reason };
      }
      case "branch":
        return this.branch(value, path);
    }
  }

  private branch(value: unknown, path: Path): StepBody | undefined {
    const items = this.ctx.validate(branchSchema, value, path, []);
    if (!items) return undefined;
    const cases: { when: Condition; goto: string }[] = [];
    let otherwise: string | undefined;
    let ok = true;
    items.forEach((item, i) => {
      const itemPath = [...path, i];
      if ("otherwise" in item) {
        const o = this.ctx.validate(branchOtherwiseSchema, item, itemPath, ["otherwise"]);
        if (i !== items.length - 1)
          this.ctx.error(
            "otherwise_not_last",
            [...itemPath, "otherwise"],
            '"otherwise" must be the last entry of a branch',
            true,
          );
        otherwise = o?.otherwise;
        ok &&= o !== undefined;
        return;
      }
      const c = this.ctx.validate(branchCaseSchema, item, itemPath, ["when", "goto", "otherwise"]);
      if (c) {
        this.ctx.condition(c.when, [...itemPath, "when"]);
        cases.push({ when: { source: c.when }, goto: c.goto });
      } else ok = false;
    });
    return ok
      ? { kind: "branch", cases, ...(otherwise !== undefined && { otherwise }) }
      : undefined;
  }

  graph(parsed: (Step | undefined)[], raw: unknown[]): void {
    const firstUse = new Map<string, number>();
    raw.forEach((step, i) => {
      const id = (step as { id?: unknown } | null)?.id;
      if (typeof id !== "string") return;
      const first = firstUse.get(id);
      if (first === undefined) firstUse.set(id, i);
      else {
        const line = this.ctx.map.locate(["steps", first, "id"]).line;
        this.ctx.error(
          "duplicate_step_id",
          ["steps", i, "id"],
          `duplicate step id "${id}" (first used on line ${line}): step ids must be unique, they are part of every action key`,
        );
      }
    });
    const ids = [...firstUse.keys()];
    parsed.forEach((step, i) => {
      if (step?.kind !== "branch") return;
      step.cases.forEach((c, k) => this.gotoTarget(c.goto, ["steps", i, "branch", k, "goto"], ids));
      if (step.otherwise !== undefined)
        this.gotoTarget(
          step.otherwise,
          ["steps", i, "branch", step.cases.length, "otherwise"],
          ids,
        );
    });
    const steps = parsed.filter((s): s is Step => s !== undefined);
    if (steps.length !== raw.length || firstUse.size !== steps.length) return;
    if (
      steps.some(
        (s) =>
          s.kind === "branch" &&
          [...s.cases.map((c) => c.goto), s.otherwise].some(
            (t) => t !== undefined && !firstUse.has(t),
          ),
      )
    )
      return;
    const nodes: GraphStep[] = steps.map((s) => ({
      id: s.id,
      isWait: s.kind === "wait",
      ends: s.exit || s.kind === "exit",
      gotos:
        s.kind === "branch"
          ? [...s.cases.map((c) => c.goto), ...(s.otherwise ? [s.otherwise] : [])]
          : [],
      fallsThrough: s.kind !== "branch" || s.otherwise === undefined,
    }));
    for (const problem of checkGraph(nodes)) {
      if (problem.kind === "unreachable") {
        const step = steps[problem.step]!;
        this.ctx.error(
          "unreachable_step",
          ["steps", problem.step, "id"],
          `step "${step.id}" can never run: no step leads to it (the step before it exits or branches away, and no goto names it)`,
        );
      } else {
        const names = problem.steps.map((i) => `"${steps[i]!.id}"`).join(" → ");
        this.ctx.error(
          "loop_without_wait",
          ["steps", problem.steps[0]!, "id"],
          `steps ${names} form a loop with no wait step: a customer would go round it without pause; add a wait inside the loop`,
        );
      }
    }
  }

  private gotoTarget(target: string, path: Path, ids: string[]): void {
    if (!ids.includes(target)) {
      this.ctx.error(
        "missing_goto_target",
        path,
        `goto "${target}": no step has this id${didYouMean(target, ids)}`,
      );
    }
  }
}

function resendPolicy(parsed: ParsedResend): ResendPolicy {
  if (parsed === undefined) return { kind: "per_reference" };
  return typeof parsed === "object" ? { kind: "after", ms: parsed.after } : { kind: parsed };
}
