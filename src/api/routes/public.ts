// Endpoints called by providers and recipients, not by API clients: Twilio's webhooks
// (verified by X-Twilio-Signature) and unsubscribe links (verified by their HMAC token).
import type { FastifyInstance, FastifyRequest } from "fastify";
import type { TwilioWebhookRequest } from "../../webhooks/twilio";
import { handleInboundMessage, handleStatusCallback } from "../../webhooks/twilio";
import { confirmUnsubscribe, showUnsubscribe } from "../../webhooks/unsubscribe";
import type { ApiDeps } from "../app";
import { problem, sendProblem } from "../problem";

export function registerPublicRoutes(app: FastifyInstance, deps: ApiDeps): void {
  const now = () => deps.clock.now();
  // Twilio signs the URL it was configured with: our public base plus the path and query.
  const webhook = (req: FastifyRequest): TwilioWebhookRequest => ({
    url: `${deps.publicBaseUrl}${req.url}`,
    params: Object.fromEntries(
      Object.entries((req.body ?? {}) as Record<string, unknown>).map(([k, v]) => [k, String(v)]),
    ),
    signature:
      typeof req.headers["x-twilio-signature"] === "string"
        ? req.headers["x-twilio-signature"]
        : undefined,
  });
  // A signature that does not verify is most often PUBLIC_BASE_URL not being the address
  // Twilio posts to: then every STOP reply is refused, so it is said, once a minute at most.
  let warnedAt = 0;
  const badSignature = (path: string) => {
    if (Date.now() - warnedAt < 60_000) return;
    warnedAt = Date.now();
    deps.log.warn("Twilio webhook refused: X-Twilio-Signature does not verify", {
      path,
      checkedAgainst: `${deps.publicBaseUrl}${path}`,
      hint: "PUBLIC_BASE_URL must be the address Twilio posts to, and TWILIO_AUTH_TOKEN its account's",
    });
  };
  const twilioRoute = (path: string, handle: typeof handleStatusCallback) =>
    app.post(path, async (req, reply) => {
      if (!deps.twilioAuthToken)
        return sendProblem(reply, problem(404, "Not found", "Twilio is not configured"));
      const result = await handle(
        { db: deps.db, authToken: deps.twilioAuthToken, now },
        webhook(req),
      );
      if (result.status === 200) return reply.code(200).type("text/xml").send(result.body);
      if (result.status === 204) return reply.code(204).send();
      if (result.status === 403) badSignature(path);
      return sendProblem(
        reply,
        problem(result.status, result.status === 403 ? "Forbidden" : "Bad request", result.body),
      );
    });
  twilioRoute("/v1/webhooks/twilio/status", handleStatusCallback);
  twilioRoute("/v1/webhooks/twilio/inbound", handleInboundMessage);

  const unsubscribeDeps = () =>
    deps.secret ? { db: deps.db, secret: deps.secret, now } : undefined;
  app.get<{ Params: { token: string } }>("/v1/unsubscribe/:token", (req, reply) => {
    const d = unsubscribeDeps();
    if (!d)
      return sendProblem(reply, problem(404, "Not found", "unsubscribe links are not configured"));
    const page = showUnsubscribe(d, req.params.token);
    return reply.code(page.status).type("text/html; charset=utf-8").send(page.html);
  });
  // The confirmation page's button, and RFC 8058 one-click from mail clients.
  app.post<{ Params: { token: string } }>("/v1/unsubscribe/:token", async (req, reply) => {
    const d = unsubscribeDeps();
    if (!d)
      return sendProblem(reply, problem(404, "Not found", "unsubscribe links are not configured"));
    const page = await confirmUnsubscribe(d, req.params.token);
    return reply.code(page.status).type("text/html; charset=utf-8").send(page.html);
  });
}
