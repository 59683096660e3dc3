// Customer profiles: PUT applies a profile and consents as of `occurredAt` (an older update
// arriving later changes nothing); GET shows profile, consents and points balance.
import { poolOf } from "../../db/sql";
import type { FastifyInstance } from "fastify";
import { z } from "zod";
import { customerTraitsSchema, occurredAtSchema } from "../../ingest/event";
import { refineStorable } from "../../ingest/storable";
import { applyTraits } from "../../ingest/store";
import { ALL_TOPICS } from "../../policies/consent";
import type { ApiDeps, Idempotent } from "../app";
import { fieldErrorsOf, problem } from "../problem";

const putSchema = customerTraitsSchema
  .extend({
    occurredAt: occurredAtSchema(),
    source: z.string().min(1).max(100).default("api"),
  })
  .superRefine(refineStorable);

const idSchema = z
  .string()
  .min(1, "1 to 200 characters")
  .max(200, "1 to 200 characters")
  .superRefine(refineStorable);

/** A customer id from the path, or the 400 that says what is wrong with it. */
function pathId(raw: string): { id: string } | { problem: ReturnType<typeof problem> } {
  const id = idSchema.safeParse(raw);
  if (id.success) return { id: id.data };
  const message = id.error.issues[0]?.message ?? "1 to 200 characters";
  return {
    problem: problem(400, "Invalid customer id", message, [{ field: "id", message }]),
  };
}

export function registerCustomerRoutes(
  app: FastifyInstance,
  deps: ApiDeps,
  idempotent: Idempotent,
): void {
  const view = async (id: string) => {
    const customer = await deps.db.customer.findUnique({
      where: { id },
      include: { consents: true, pointsBalance: true },
    });
    if (!customer) return undefined;
    return {
      id: customer.id,
      email: customer.email,
      phone: customer.phone,
      timezone: customer.timezone,
      attributes: customer.attributes,
      profileOccurredAt: customer.profileOccurredAt,
      consents: customer.consents
        .filter((c) => c.topic !== ALL_TOPICS)
        .map((c) => ({
          channel: c.channel,
          topic: c.topic,
          status: c.status,
          occurredAt: c.occurredAt,
          source: c.source,
        })),
      // Channels the person opted out of as a whole (a STOP reply): no topic sends on them
      // under a grant dated before it.
      optedOut: customer.consents
        .filter((c) => c.topic === ALL_TOPICS && c.status === "revoked")
        .map((c) => ({ channel: c.channel, occurredAt: c.occurredAt, source: c.source })),
      points: { balance: customer.pointsBalance?.balance ?? 0 },
    };
  };

  app.put<{ Params: { id: string } }>("/v1/customers/:id", (req, reply) =>
    idempotent(req, reply, async () => {
      const id = pathId(req.params.id);
      if ("problem" in id) return { status: 400, body: id.problem };
      const parsed = putSchema.safeParse(req.body);
      if (!parsed.success) {
        const errors = fieldErrorsOf(parsed.error);
        return {
          status: 400,
          body: problem(
            400,
            "Invalid customer",
            errors.map((e) => `${e.field}: ${e.message}`).join("; "),
            errors,
          ),
        };
      }
      const { occurredAt, source, ...traits } = parsed.data;
      await poolOf(deps.db).tx((tx) => applyTraits(tx, id.id, traits, occurredAt, source));
      return { status: 200, body: await view(id.id) };
    }),
  );

  app.get<{ Params: { id: string } }>("/v1/customers/:id", async (req, reply) => {
    const id = pathId(req.params.id);
    if ("problem" in id) return reply.code(400).type("application/problem+json").send(id.problem);
    const customer = await view(id.id);
    if (!customer)
      return reply
        .code(404)
        .type("application/problem+json")
        .send(problem(404, "Customer not found", `no customer "${req.params.id}"`));
    return customer;
  });
}
