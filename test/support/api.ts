// The HTTP API in-process on a real port, over a harness's schema and queue prefix.
import type { FastifyInstance } from "fastify";
import type { ApiDeps } from "../../src/api/app";
import { buildApi } from "../../src/api/app";
import { systemClock } from "../../src/engine/engine";
import { createLogger } from "../../src/log";
import type { Queues } from "../../src/queue/queues";
import { createQueues } from "../../src/queue/queues";
import type { Harness } from "./harness";
import { SECRET } from "./harness";
import { REDIS_URL } from "./redis";

export const API_KEY = "test-api-key-0123456789abcdef";

export interface RunningApi {
  url: string;
  app: FastifyInstance;
  queues: Queues;
  post(path: string, body: unknown, headers?: Record<string, string>): Promise<Response>;
  close(): Promise<void>;
}

export async function startApi(h: Harness, over: Partial<ApiDeps> = {}): Promise<RunningApi> {
  const queues = createQueues(REDIS_URL, h.prefix);
  const app = await buildApi({
    db: h.schema.db,
    queues,
    redis: queues.connection,
    apiKeys: [API_KEY],
    bodyLimitBytes: 64 * 1024,
    idempotency: { ttlMs: 24 * 3_600_000, inFlightLeaseMs: 30_000 },
    clock: systemClock,
    log: createLogger({ quiet: true }),
    publicBaseUrl: "https://hooks.shop.example",
    secret: SECRET,
    ...over,
  });
  const url = await app.listen({ port: 0, host: "127.0.0.1" });
  return {
    url,
    app,
    queues,
    post: (path, body, headers = {}) =>
      fetch(`${url}${path}`, {
        method: "POST",
        headers: {
          authorization: `Bearer ${API_KEY}`,
          "content-type": "application/json",
          ...headers,
        },
        body: typeof body === "string" ? body : JSON.stringify(body),
      }),
    async close() {
      await app.close();
      await queues.close();
    },
  };
}
