// /openapi.json: the API described for clients, with request schemas taken from the same zod
// schemas that validate requests, so the document cannot drift from the code.
import { z } from "zod";
import { customerTraitsSchema, eventSchema } from "../ingest/event";

const input = (schema: z.ZodType) =>
  z.toJSONSchema(schema, { io: "input", unrepresentable: "any" });

const problemSchema = {
  type: "object",
  properties: {
    type: { type: "string" },
    title: { type: "string" },
    status: { type: "integer" },
    detail: { type: "string" },
    errors: {
      type: "array",
      items: {
        type: "object",
        properties: { field: { type: "string" }, message: { type: "string" } },
      },
    },
  },
};
const problemResponse = (description: string) => ({
  description,
  content: { "application/problem+json": { schema: { $ref: "#/components/schemas/Problem" } } },
});
const idempotencyKey = {
  name: "Idempotency-Key",
  in: "header",
  required: false,
  schema: { type: "string", maxLength: 255 },
  description:
    "Replays the first response for a repeat (Idempotent-Replayed: true); 422 for another payload; 409 while the first is in flight.",
};

export const OPENAPI = {
  openapi: "3.1.0",
  info: { title: "sendonce", version: "0.1.0", description: "Marketing journeys that send once." },
  components: {
    securitySchemes: { bearer: { type: "http", scheme: "bearer" } },
    schemas: {
      Event: input(eventSchema),
      CustomerUpdate: input(
        customerTraitsSchema.extend({ occurredAt: z.string(), source: z.string().optional() }),
      ),
      Problem: problemSchema,
    },
  },
  security: [{ bearer: [] }],
  paths: {
    "/v1/events": {
      post: {
        summary: "Send one event, or a batch of up to 1000 as { events: [...] }",
        parameters: [idempotencyKey],
        requestBody: {
          content: {
            "application/json": {
              schema: {
                oneOf: [
                  { $ref: "#/components/schemas/Event" },
                  {
                    type: "object",
                    properties: {
                      events: {
                        type: "array",
                        maxItems: 1000,
                        items: { $ref: "#/components/schemas/Event" },
                      },
                    },
                    required: ["events"],
                  },
                ],
              },
            },
          },
        },
        responses: {
          "202": {
            description:
              "Stored (accepted) or already stored (duplicate); a batch answers per item",
          },
          "400": problemResponse(
            "Invalid event, or a batch with no valid item (nothing stored): errors name each field",
          ),
          "401": problemResponse("No or unknown API key"),
          "409": problemResponse(
            "Same event id with another payload, or the Idempotency-Key is in flight (Retry-After)",
          ),
          "413": problemResponse("Body over the size limit"),
          "422": problemResponse("Idempotency-Key reused with another method, path or body"),
        },
      },
    },
    "/v1/customers/{id}": {
      put: {
        summary: "Upsert a profile and consents as of occurredAt",
        parameters: [
          { name: "id", in: "path", required: true, schema: { type: "string" } },
          idempotencyKey,
        ],
        requestBody: {
          content: {
            "application/json": { schema: { $ref: "#/components/schemas/CustomerUpdate" } },
          },
        },
        responses: {
          "200": { description: "The profile after the update" },
          "400": problemResponse("Invalid update"),
        },
      },
      get: {
        summary: "Profile, consents and points balance",
        parameters: [{ name: "id", in: "path", required: true, schema: { type: "string" } }],
        responses: {
          "200": { description: "The customer" },
          "404": problemResponse("No such customer"),
        },
      },
    },
    "/healthz": {
      get: {
        security: [],
        summary: "The process is up",
        responses: { "200": { description: "ok" } },
      },
    },
    "/readyz": {
      get: {
        security: [],
        summary: "Database and Redis reachable",
        responses: { "200": { description: "ready" }, "503": problemResponse("not ready") },
      },
    },
    "/v1/webhooks/twilio/status": {
      post: {
        security: [],
        summary: "Twilio status callback (X-Twilio-Signature)",
        responses: { "204": { description: "recorded" } },
      },
    },
    "/v1/webhooks/twilio/inbound": {
      post: {
        security: [],
        summary: "Twilio inbound message: STOP / START",
        responses: { "200": { description: "TwiML" } },
      },
    },
    "/v1/unsubscribe/{token}": {
      get: {
        security: [],
        summary: "Confirmation page",
        responses: { "200": { description: "HTML" } },
      },
      post: {
        security: [],
        summary: "Unsubscribe now (RFC 8058 one-click)",
        responses: { "200": { description: "HTML" } },
      },
    },
  },
} as const;
