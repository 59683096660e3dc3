// The HTTP API (fastify): event ingestion with Idempotency-Key, customer profiles, health,
// and the public endpoints that providers and recipients call (Twilio webhooks, unsubscribe).
import formbody from "@fastify/formbody";
import Fastify from "fastify";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { Redis } from "ioredis";
import type { Db } from "../db/client";
import type { Clock } from "../engine/engine";
import type { Logger } from "../log";
import type { Queues } from "../queue/queues";
import { pendingMigrations } from "../db/migrate";
import { recordAudit } from "../ledger/audit";
import { keyRing } from "./auth";
import type { IdempotencyOptions, StoredResponse } from "./idempotency";
import {
  claimKey,
  completeKey,
  idempotencyKeyValue,
  releaseKey,
  renewKey,
  requestHash,
} from "./idempotency";
import { createMetrics } from "../reports/metrics";
import { OPENAPI } from "./openapi";
import { problem, sendProblem } from "./problem";
import { registerCustomerRoutes } from "./routes/customers";
import { registerEmailEventRoutes } from "./routes/email-events";
import { registerEventRoutes } from "./routes/events";
import { registerPublicRoutes } from "./routes/public";

export interface ApiDeps {
  db: Db;
  queues: Queues;
  redis: Redis;
  apiKeys: string[];
  bodyLimitBytes: number;
  idempotency: IdempotencyOptions;
  clock: Clock;
  log: Logger;
  publicBaseUrl: string;
  twilioAuthToken?: string;
  secret?: string;
  /** Test and chaos hook: stop dead after an event row committed, before answering. */
  afterCommit?: () => Promise<void>;
}

declare module "fastify" {
  interface FastifyRequest {
    /** sha256 of the caller's API key: scopes idempotency keys; never the key itself. */
    apiKeyHash?: string;
  }
}

export async function buildApi(deps: ApiDeps): Promise<FastifyInstance> {
  // Fastify's own logger would print URLs with tokens and bodies with PII: we log ids only.
  // A path parameter may be a customer id of up to 200 characters, percent-encoded up to three
  // times that, or an unsubscribe token that carries one: Fastify's default of 100 answered
  // such links 414.
  const app = Fastify({
    logger: false,
    bodyLimit: deps.bodyLimitBytes,
    routerOptions: { maxParamLength: 2_048 },
  });
  await app.register(formbody);
  const keys = keyRing(deps.apiKeys);

  app.setErrorHandler(
    (error: { code?: string; statusCode?: number; message: string }, req, reply) => {
      if (error.code === "FST_ERR_CTP_BODY_TOO_LARGE") {
        return sendProblem(
          reply,
          problem(413, "Body too large", `the limit is ${deps.bodyLimitBytes} bytes`),
        );
      }
      if (error.code === "FST_ERR_CTP_INVALID_MEDIA_TYPE") {
        return sendProblem(reply, problem(415, "Unsupported media type", "send application/json"));
      }
      if (error.statusCode === 400) {
        return sendProblem(
          reply,
          problem(400, "Malformed body", error.message, [
            { field: "(body)", message: error.message },
          ]),
        );
      }
      deps.log.error("request failed", {
        method: req.method,
        route: req.routeOptions.url,
        error: error.message,
      });
      return sendProblem(
        reply,
        problem(500, "Internal error", "the request failed on our side; retry it"),
      );
    },
  );
  app.setNotFoundHandler((req, reply) =>
    sendProblem(reply, problem(404, "Not found", `${req.method} ${req.url.split("?")[0]}`)),
  );

  const authenticate = async (req: FastifyRequest, reply: FastifyReply) => {
    const hash = keys.match(req.headers.authorization);
    if (!hash) {
      void reply.header("WWW-Authenticate", 'Bearer realm="sendonce"');
      return sendProblem(
        reply,
        problem(401, "Unauthorized", "send Authorization: Bearer <API key>"),
      );
    }
    req.apiKeyHash = hash;
  };

  /**
   * The client API takes JSON only: a form body (curl's default) would parse as an object
   * with the whole text as a key, and be named as an unknown field.
   */
  const jsonOnly = async (req: FastifyRequest, reply: FastifyReply) => {
    if (req.method !== "POST" && req.method !== "PUT") return;
    if (/^application\/([\w.+-]+\+)?json\b/i.test(req.headers["content-type"] ?? "")) return;
    return sendProblem(
      reply,
      problem(
        415,
        "Unsupported media type",
        "send the body as JSON, with Content-Type: application/json",
      ),
    );
  };

  /** Runs `handler` under the request's Idempotency-Key, if it sent one. */
  const idempotent = async (
    req: FastifyRequest,
    reply: FastifyReply,
    handler: () => Promise<StoredResponse>,
  ): Promise<FastifyReply> => {
    const send = (r: StoredResponse) =>
      r.status >= 400
        ? reply.code(r.status).type("application/problem+json").send(r.body)
        : reply.code(r.status).send(r.body);
    const header = req.headers["idempotency-key"];
    if (header === undefined) return send(await handler());
    const key = idempotencyKeyValue(header);
    if (key === undefined) {
      return sendProblem(
        reply,
        problem(400, "Invalid Idempotency-Key", "one header of 1 to 255 characters", [
          { field: "Idempotency-Key", message: "1 to 255 characters" },
        ]),
      );
    }
    // The path as sent, not the route pattern: one key on two customers is two requests.
    const hash = requestHash(req.method, req.url, req.body);
    const claim = await claimKey(
      deps.db,
      req.apiKeyHash!,
      key,
      hash,
      deps.clock.now(),
      deps.idempotency,
    );
    switch (claim.kind) {
      case "mismatch":
        return sendProblem(
          reply,
          problem(
            422,
            "Idempotency-Key reused",
            "this key was used with a different request; use a new key for a new request",
          ),
        );
      case "in_flight":
        void reply.header("Retry-After", String(claim.retryAfterSeconds));
        return sendProblem(
          reply,
          problem(
            409,
            "Request in progress",
            "a request with this Idempotency-Key is still being processed; retry later",
          ),
        );
      case "replay":
        await recordAudit(deps.db, {
          kind: "idempotent_replay",
          at: deps.clock.now(),
          rule: req.routeOptions.url ?? "",
          detail: { status: claim.response.status },
        });
        void reply.header("Idempotent-Replayed", "true");
        return send(claim.response);
      case "run":
        break;
    }
    // The claim is renewed while the request runs; a process that died renews nothing, and
    // its key is free once the lease is over.
    const { inFlightLeaseMs, ttlMs } = deps.idempotency;
    const renewal = setInterval(
      () =>
        void renewKey(
          deps.db,
          req.apiKeyHash!,
          key,
          claim.since,
          new Date(deps.clock.now().getTime() + inFlightLeaseMs),
        ).catch((error: Error) =>
          deps.log.warn("idempotency key not renewed", { error: error.message }),
        ),
      Math.max(50, Math.floor(inFlightLeaseMs / 3)),
    );
    let response: StoredResponse;
    try {
      response = await handler();
    } catch (error) {
      clearInterval(renewal);
      await releaseKey(deps.db, req.apiKeyHash!, key, claim.since);
      throw error;
    } finally {
      clearInterval(renewal);
    }
    // A request that failed on our side, or failed validation and so did nothing, keeps no
    // answer: the key is free for the retry, or for the corrected request (as Stripe does).
    if (response.status >= 500 || response.status === 400)
      await releaseKey(deps.db, req.apiKeyHash!, key, claim.since);
    else {
      const now = deps.clock.now();
      await completeKey(deps.db, req.apiKeyHash!, key, claim.since, response, now, ttlMs);
    }
    return send(response);
  };

  app.get("/healthz", () => ({ status: "ok" }));
  app.get("/readyz", async (_req, reply) => {
    const [database, redis] = await Promise.all([
      // Answering is not enough: a schema missing a migration fails every request.
      pendingMigrations(deps.db).then(
        (pending) => (pending.length === 0 ? "ok" : `${pending.length} migrations not applied`),
        () => "unreachable",
      ),
      deps.redis.ping().then(
        () => "ok",
        () => "unreachable",
      ),
    ]);
    if (database === "ok" && redis === "ok") return { status: "ready", database, redis };
    return sendProblem(reply, {
      ...problem(503, "Not ready", `database: ${database}, redis: ${redis}`),
    });
  });
  app.get("/openapi.json", () => OPENAPI);
  const metrics = createMetrics(deps.db);
  app.get("/metrics", async (_req, reply) =>
    reply.type(metrics.contentType).send(await metrics.metrics()),
  );

  // Authentication covers exactly the client API, in a scope of its own.
  await app.register((v1, _opts, done) => {
    v1.addHook("onRequest", authenticate);
    v1.addHook("onRequest", jsonOnly);
    registerEventRoutes(v1, deps, idempotent);
    registerCustomerRoutes(v1, deps, idempotent);
    registerEmailEventRoutes(v1, deps);
    done();
  });
  registerPublicRoutes(app, deps);
  return app;
}

export type Idempotent = (
  req: FastifyRequest,
  reply: FastifyReply,
  handler: () => Promise<StoredResponse>,
) => Promise<FastifyReply>;
