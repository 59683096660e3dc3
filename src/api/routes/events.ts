// POST /v1/events: one event, or `{ "events": [...] }` with up to 1000, each validated and
// stored on its own. The row commits before the 202.
import type { FastifyInstance } from "fastify";
import type { ApiDeps, Idempotent } from "../app";
import type { IngestResult } from "../../ingest/ingest";
import { ingestEvents } from "../../ingest/ingest";
import type { ParsedEvent } from "../../ingest/event";
import { EventValidationError, parseEvent } from "../../ingest/event";
import type { FieldError } from "../problem";
import { problem } from "../problem";

export const MAX_BATCH = 1000;

type ItemResult =
  (IngestResult & { index: number }) | { index: number; status: "invalid"; errors: FieldError[] };

function fieldErrors(error: EventValidationError): FieldError[] {
  return error.problems.map((p) => ({
    field: p.path || "(body)",
    message: p.message,
  }));
}

export function registerEventRoutes(
  app: FastifyInstance,
  deps: ApiDeps,
  idempotent: Idempotent,
): void {
  const parse = (raw: unknown): ParsedEvent | FieldError[] => {
    try {
      return parseEvent(raw);
    } catch (error) {
      if (error instanceof EventValidationError) return fieldErrors(error);
      throw error;
    }
  };
  const ingest = (events: ParsedEvent[]) =>
    ingestEvents(deps.db, deps.queues, events, "api", {
      now: deps.clock.now(),
      log: deps.log,
      ...(deps.afterCommit && { afterCommit: deps.afterCommit }),
    });

  app.post("/v1/events", (req, reply) =>
    idempotent(req, reply, async () => {
      const body = req.body;
      const batch =
        body !== null && typeof body === "object" && !Array.isArray(body) && "events" in body;
      if (!batch) {
        const parsed = parse(body);
        if (Array.isArray(parsed)) {
          return {
            status: 400,
            body: problem(
              400,
              "Invalid event",
              parsed.map((e) => `${e.field}: ${e.message}`).join("; "),
              parsed,
            ),
          };
        }
        const [item] = await ingest([parsed]);
        if (item!.status === "conflict") {
          return {
            status: 409,
            body: problem(
              409,
              "Event id conflict",
              `event ${item!.source}/${item!.id} was already received with a different payload; the first one stands`,
            ),
          };
        }
        return { status: 202, body: item };
      }
      const { events, ...rest } = body;
      const extra = Object.keys(rest);
      if (extra.length > 0) {
        return {
          status: 400,
          body: problem(
            400,
            "Invalid batch",
            `unknown field ${extra.map((k) => `"${k}"`).join(", ")}`,
            extra.map((k) => ({ field: k, message: "unknown field" })),
          ),
        };
      }
      if (!Array.isArray(events) || events.length === 0 || events.length > MAX_BATCH) {
        return {
          status: 400,
          body: problem(
            400,
            "Invalid batch",
            `"events" must be an array of 1 to ${MAX_BATCH} events`,
            [{ field: "events", message: `1 to ${MAX_BATCH} events` }],
          ),
        };
      }
      // Every item is validated on its own; the valid ones are stored in order.
      const parsed = events.map((raw) => parse(raw));
      const valid = parsed.filter((p): p is ParsedEvent => !Array.isArray(p));
      const stored = (await ingest(valid)).values();
      const results: ItemResult[] = parsed.map((p, index) =>
        Array.isArray(p)
          ? {
              index,
              status: "invalid",
              errors: p.map((e) => ({
                ...e,
                field: e.field === "(body)" ? `events[${index}]` : `events[${index}].${e.field}`,
              })),
            }
          : { index, ...stored.next().value! },
      );
      const count = (s: string) => results.filter((r) => r.status === s).length;
      const summary = {
        accepted: count("accepted"),
        duplicate: count("duplicate"),
        conflict: count("conflict"),
        invalid: count("invalid"),
      };
      if (summary.invalid < results.length) return { status: 202, body: { ...summary, results } };
      // Nothing stored: a problem document (every field named), with the per-item results.
      return {
        status: 400,
        body: {
          ...problem(
            400,
            "Invalid batch",
            "every event in the batch is invalid; nothing was stored",
            results.flatMap((r) => (r.status === "invalid" ? r.errors : [])),
          ),
          ...summary,
          results,
        },
      };
    }),
  );
}
