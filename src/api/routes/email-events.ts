// POST /v1/webhooks/email: delivery events from any email provider, in a generic shape, by
// Message-ID (ours are <actionKey@domain>). One that says the provider took the message settles
// an in-doubt send as sent; reconciliation reads them too, for events that came before the doubt.
import type { FastifyInstance } from "fastify";
import { z } from "zod";
import { occurredAtSchema } from "../../ingest/event";
import { refineStorable } from "../../ingest/storable";
import { REPORTED_ACTION, openToFinding, recordFoundSent } from "../../ledger/actions";
import { recordAudit } from "../../ledger/audit";
import { PROVIDER_TOOK_IT } from "../../ledger/provider-match";
import type { ApiDeps } from "../app";
import { fieldErrorsOf, problem, sendProblem } from "../problem";

const deliveryEvent = z.strictObject({
  messageId: z
    .string()
    .min(3, "must be the message's Message-ID, e.g. <key@shop.example>")
    .max(998, "must be at most 998 characters (a header line)"),
  event: z.enum(["delivered", "bounced", "complained", "deferred", "dropped", "opened", "clicked"]),
  at: occurredAtSchema().optional(),
  provider: z.string().max(100).optional(),
});
const single = deliveryEvent.superRefine(refineStorable);
const batch = z
  .strictObject({ events: z.array(deliveryEvent).min(1).max(1000) })
  .superRefine(refineStorable);
/** A body with `events` is a batch; any other is one event, so errors name its fields. */
const bodySchema = (b: unknown) =>
  b !== null && typeof b === "object" && !Array.isArray(b) && "events" in b ? batch : single;

export function registerEmailEventRoutes(app: FastifyInstance, deps: ApiDeps): void {
  app.post("/v1/webhooks/email", async (req, reply) => {
    const parsed = bodySchema(req.body).safeParse(req.body);
    if (!parsed.success) {
      const errors = fieldErrorsOf(parsed.error);
      return sendProblem(
        reply,
        problem(
          400,
          "Invalid delivery event",
          errors.map((e) => `${e.field}: ${e.message}`).join("; "),
          errors,
        ),
      );
    }
    const events = "events" in parsed.data ? parsed.data.events : [parsed.data];
    let matched = 0;
    for (const e of events) {
      const key = /^<?([0-9a-f]{64})@/.exec(e.messageId)?.[1] ?? e.messageId.replace(/^<|>$/g, "");
      const action = await deps.db.action.findUnique({ where: { key }, select: REPORTED_ACTION });
      if (action) matched += 1;
      await recordAudit(deps.db, {
        kind: "delivery_status",
        at: e.at ? new Date(e.at) : deps.clock.now(),
        actionKey: key,
        rule: e.event,
        ...(action && {
          customerId: action.customerId,
          journeyId: action.journeyId,
          stepId: action.stepId,
          enrollmentId: action.enrollmentId,
        }),
        detail: { messageId: e.messageId, ...(e.provider && { provider: e.provider }) },
      });
      // In doubt, or handed back by a person as never sent and not sent again yet: the
      // provider is the better witness.
      if (
        action?.channel === "email" &&
        openToFinding(action) &&
        PROVIDER_TOOK_IT.includes(e.event)
      )
        await recordFoundSent(deps.db, {
          key,
          token: action.fencingToken,
          providerId: e.messageId,
          reason: "found_at_provider",
          resolvedBy: `delivery event ${e.event}`,
          now: deps.clock.now(),
        });
    }
    return reply.code(202).send({ received: events.length, matched });
  });
}
