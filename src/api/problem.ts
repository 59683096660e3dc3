// RFC 9457 problem details: every API error names what went wrong and, for bad input, which
// field, so a client can fix the request without reading our logs.
import type { FastifyReply } from "fastify";
import type { z } from "zod";
import { issueMessage } from "../ingest/event";

export interface FieldError {
  field: string;
  message: string;
}

/**
 * Schema issues as field errors: each at its path in dots, an unknown field at its own path,
 * and `(body)` for the body as a whole.
 */
export function fieldErrorsOf(error: z.ZodError): FieldError[] {
  return error.issues.flatMap((i) =>
    i.code === "unrecognized_keys"
      ? i.keys.map((k) => ({ field: fieldPath([...i.path, k]), message: "unknown field" }))
      : [{ field: fieldPath(i.path) || "(body)", message: issueMessage(i) }],
  );
}

/** A field's path as the event API names it: `events[1].customer.email`. */
export function fieldPath(path: readonly PropertyKey[]): string {
  return path
    .map((p, i) => (typeof p === "number" ? `[${p}]` : `${i === 0 ? "" : "."}${String(p)}`))
    .join("");
}

export interface Problem {
  type: string;
  title: string;
  status: number;
  detail?: string;
  errors?: FieldError[];
}

export function problem(
  status: number,
  title: string,
  detail?: string,
  errors?: FieldError[],
): Problem {
  return {
    type: `https://sendonce.dev/problems/${title
      .toLowerCase()
      .replace(/[^a-z0-9]+/g, "-")
      .replace(/-$/, "")}`,
    title,
    status,
    ...(detail !== undefined && { detail }),
    ...(errors && { errors }),
  };
}

export function sendProblem(reply: FastifyReply, p: Problem): FastifyReply {
  return reply.code(p.status).type("application/problem+json").send(p);
}
