// A deployment of its own for engine tests: a Postgres schema, a Redis queue prefix, a real
// SMTP server, and the environment that points `sendonce worker` children at them.
import { Queue } from "bullmq";
import { actionKey } from "../../src/engine/keys";
import { JOB_OPTIONS } from "../../src/queue/queues";
import type { TestSchema } from "./db";
import { createTestSchema } from "./db";
import { REDIS_URL, flushPrefix, uniquePrefix } from "./redis";
import type { SmtpSink } from "./smtp";
import { startSmtpSink } from "./smtp";
import type { WorkerProcess } from "./workers";
import { eventually, startWorker } from "./workers";
import { afterAll, afterEach, beforeAll } from "vitest";

export interface Harness {
  schema: TestSchema;
  prefix: string;
  sink: SmtpSink;
  queue: Queue;
  workers: WorkerProcess[];
  env(extra?: NodeJS.ProcessEnv): NodeJS.ProcessEnv;
  deliver(event: object, times?: number): Promise<void>;
}

/** Signs the unsubscribe links of every test deployment. */
export const SECRET = "test-secret-0123456789abcdef0123456789abcdef";

/** A schema, a queue prefix and an SMTP sink of their own, for workers started with `env()`. */
export async function startHarness(
  journeys: string,
  baseEnv: NodeJS.ProcessEnv = {},
): Promise<Harness> {
  const schema = await createTestSchema("send");
  const prefix = uniquePrefix("send");
  const sink = await startSmtpSink();
  // With the job options of sendonce's own enqueuers: a delivery whose intake failed is retried.
  const queue = new Queue("events", {
    connection: { url: REDIS_URL },
    prefix,
    defaultJobOptions: JOB_OPTIONS,
  });
  return {
    schema,
    prefix,
    sink,
    queue,
    workers: [],
    env: (extra = {}) => ({
      DATABASE_URL: schema.url,
      REDIS_URL,
      SENDONCE_QUEUE_PREFIX: prefix,
      SMTP_URL: sink.url,
      EMAIL_FROM: "Shop <news@shop.example>",
      SENDONCE_JOURNEYS_DIR: journeys,
      SENDONCE_LEASE_MS: "1500",
      SENDONCE_SEND_TIMEOUT_MS: "1500",
      SENDONCE_SWEEP_INTERVAL_MS: "500",
      SENDONCE_SECRET: SECRET,
      ...baseEnv,
      ...extra,
    }),
    // Each delivery is its own job, as each webhook redelivery would be.
    async deliver(event, times = 1) {
      await Promise.all(
        Array.from({ length: times }, () => queue.add("deliver", { delivery: event, via: "test" })),
      );
    },
  };
}

export async function teardown(h: Harness): Promise<void> {
  await Promise.all(h.workers.map((w) => w.kill("SIGKILL")));
  await h.queue.close();
  await h.sink.close();
  await flushPrefix(h.prefix);
  await h.schema.drop();
}

export function signup(customerId: string, id = `evt_${customerId}`) {
  return {
    id,
    type: "signed_up",
    customerId,
    occurredAt: "2026-11-02T09:00:00Z",
    customer: { email: `${customerId}@example.com`, attributes: { name: customerId } },
  };
}

export function messageId(
  journeyId: string,
  stepId: string,
  customerId: string,
  reference = "",
): string {
  return `<${actionKey({ journeyId, stepId, customerId, reference })}@shop.example>`;
}

export async function actionState(h: Harness, key: string) {
  return h.schema.db.action.findUnique({ where: { key } });
}

/** Worker environment for SMS through a Twilio-compatible test server. */
export function twilioEnv(server: {
  url: string;
  accountSid: string;
  authToken: string;
}): NodeJS.ProcessEnv {
  return {
    TWILIO_ACCOUNT_SID: server.accountSid,
    TWILIO_AUTH_TOKEN: server.authToken,
    TWILIO_FROM: "+15005550006",
    TWILIO_API_BASE_URL: server.url,
    PUBLIC_BASE_URL: "https://hooks.shop.example",
    SENDONCE_INDOUBT_GRACE_MS: "800",
  };
}

export interface UseHarnessOptions {
  /** Environment for every worker (evaluated when the harness starts). */
  env?: () => NodeJS.ProcessEnv;
  /** Workers started once for the block; 0 when each test starts its own. */
  workers?: number;
  /** Kill every worker after each test (tests that start and crash their own). */
  killWorkersAfterEach?: boolean;
  /** Command-line arguments of the block's workers. */
  args?: string[];
}

/** Registers the hooks that give a describe block its own deployment; call the getter in tests. */
export function useHarness(journeys: string, opts: UseHarnessOptions = {}): () => Harness {
  let h: Harness | undefined;
  beforeAll(async () => {
    h = await startHarness(journeys, opts.env?.());
    h.workers = Array.from({ length: opts.workers ?? 1 }, () => startWorker(h!.env(), opts.args));
    await Promise.all(h.workers.map((w) => w.waitFor(/worker started/)));
  }, 60_000);
  if (opts.killWorkersAfterEach) {
    afterEach(async () => {
      await Promise.all(h!.workers.map((w) => w.kill("SIGKILL")));
      h!.workers = [];
    });
  }
  afterAll(() => h && teardown(h));
  return () => h!;
}

/** Waits until the action is in one of `states`, and returns it. */
export function settledAction(
  h: Harness,
  key: string,
  states: string | string[],
  timeoutMs = 20_000,
) {
  const wanted = typeof states === "string" ? [states] : states;
  return eventually(
    async () => {
      const action = await actionState(h, key);
      return action && wanted.includes(action.state) ? action : undefined;
    },
    timeoutMs,
    `action in ${wanted.join(" or ")}`,
  );
}

/** Waits until the action is sent or skipped; "sent", or "skipped:<reason>". */
export async function settledOutcome(h: Harness, key: string): Promise<string> {
  const action = await settledAction(h, key, ["sent", "skipped"]);
  return action.reason && action.state === "skipped" ? `skipped:${action.reason}` : action.state;
}
