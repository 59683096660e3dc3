// POST /v1/events: one event, or `{ "events": [...] }` with up to 1000, each validated and
// stored on its own. The row commits before the 202.
import type { FastifyInstance } from "fastify";
import type { ApiDeps, Idempotent } from "../app";
import type { IngestResult } from "../../ingest/ingest";
import { ingestEvent } from "../../ingest/ingest";
import { EventValidationError, parseEvent } from "../../ingest/event";
import type { FieldError } from "../problem";
import { problem } from "../problem";

export const MAX_BATCH = 1000;

type ItemResult =
  (IngestResult & { index: number }) | { index: number; status: "invalid"; errors: FieldError[] };

function fieldErrors(error: EventValidationError, prefix = ""): FieldError[] {
  return error.problems.map((p) => ({
    field: `${prefix}${p.path}` || "(body)",
    message: p.message,
  }));
}

export function registerEventRoutes(
  app: FastifyInstance,
  deps: ApiDeps,
  idempotent: Idempotent,
): void {
  const ingest = async (raw: unknown, index: number): Promise<ItemResult> => {
    let event;
    try {
      event = parseEvent(raw);
    } catch (error) {
      if (error instanceof EventValidationError)
        return { index, status: "invalid", errors: fieldErrors(error) };
      throw error;
    }
    const result = await ingestEvent(deps.db, deps.queues, event, "api", {
      now: deps.clock.now(),
      log: deps.log,
      ...(deps.afterCommit && { afterCommit: deps.afterCommit }),
    });
    return { index, ...result };
  };

  app.post("/v1/events", (req, reply) =>
    idempotent(req, reply, async () => {
      const body = req.body;
      const batch =
        body !== null && typeof body === "object" && !Array.isArray(body) && "events" in body;
      if (!batch) {
        const result = await ingest(body, 0);
        if (result.status === "invalid") {
          return {
            status: 400,
            body: problem(
              400,
              "Invalid event",
              result.errors.map((e) => `${e.field}: ${e.message}`).join("; "),
              result.errors,
            ),
          };
        }
        const { index: _index, ...item } = result;
        if (item.status === "conflict") {
          return {
            status: 409,
            body: problem(
              409,
              "Event id conflict",
              `event ${item.source}/${item.id} was already received with a different payload; the first one stands`,
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
      const results: ItemResult[] = [];
      // In order, one by one: a batch may carry the same event twice, and order matters for profiles.
      for (const [i, raw] of events.entries()) {
        const r = await ingest(raw, i);
        results.push(
          r.status === "invalid"
            ? { ...r, errors: r.errors.map((e) => ({ ...e, field: `events[${i}].${e.field}` })) }
            : r,
        );
      }
      const count = (s: string) => results.filter((r) => r.status === s).length;
      const summary = {
        accepted: count("accepted"),
        duplicate: count("duplicate"),
        conflict: count("conflict"),
        invalid: count("invalid"),
      };
      return {
        status: summary.invalid === results.length ? 400 : 202,
        body: { ...summary, results },
      };
    }),
  );
}
