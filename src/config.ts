// Environment variables are read here, once, and validated into a typed Config; nothing
// deeper in the code reads process.env.
import type { Logger } from "./log";
import { z } from "zod";
import type { FailpointName } from "./engine/engine";

const optionalUrl = (name: string, protocols: string[]) =>
  z
    .string()
    .trim()
    .min(1)
    .refine((v) => URL.canParse(v) && protocols.includes(new URL(v).protocol), {
      message: `${name} must be a URL starting with ${protocols.map((p) => `${p}//`).join(" or ")}`,
    })
    .optional();

/**
 * A duration in milliseconds: digits only (no "1e3", "0x10" or spaces, which a number parser
 * would take), and at least `min`, below which the setting cannot work.
 */
const milliseconds = (fallback: number, min: number, why: string) =>
  z
    .string()
    .regex(/^\d+$/, "must be a whole number of milliseconds, e.g. 30000")
    .transform(Number)
    .refine((n) => n >= min, `must be at least ${min} milliseconds: ${why}`)
    .default(fallback);

const envSchema = z.object({
  DATABASE_URL: optionalUrl("DATABASE_URL", ["postgresql:", "postgres:"]),
  REDIS_URL: optionalUrl("REDIS_URL", ["redis:", "rediss:"]),
  SMTP_URL: optionalUrl("SMTP_URL", ["smtp:", "smtps:"]),
  EMAIL_FROM: z.string().trim().optional(),
  SENDONCE_JOURNEYS_DIR: z.string().min(1).default("journeys"),
  SENDONCE_STATE_DIR: z.string().min(1).default(".sendonce"),
  SENDONCE_RECORD_ONLY: z.string().min(1).optional(),
  SENDONCE_QUEUE_PREFIX: z
    .string()
    .regex(/^[^:\s]+$/, "must not contain ':' or spaces")
    .default("sendonce"),
  SENDONCE_LEASE_MS: milliseconds(30_000, 1_000, "a job's lock is renewed at half the lease"),
  SENDONCE_SEND_TIMEOUT_MS: milliseconds(30_000, 500, "a provider call needs time to answer"),
  SENDONCE_RETRY_BASE_MS: milliseconds(5_000, 100, "retries would hammer the provider"),
  SENDONCE_SWEEP_INTERVAL_MS: milliseconds(5_000, 100, "the sweep queries Postgres each time"),
  SENDONCE_DB_POOL_SIZE: z.coerce
    .number({ message: "must be a number" })
    .int("must be a whole number")
    .min(1, "must be at least 1")
    .max(200, "must be at most 200")
    .optional(),
  TWILIO_ACCOUNT_SID: z
    .string()
    .regex(/^AC[0-9a-fA-F]{32}$/, "must look like AC followed by 32 hex digits")
    .optional(),
  TWILIO_AUTH_TOKEN: z.string().min(8, "is too short").optional(),
  TWILIO_FROM: z
    .string()
    .regex(
      /^\+[1-9]\d{6,14}$|^[A-Za-z0-9 ]{1,11}$/,
      "must be an E.164 number or an alphanumeric sender id",
    )
    .optional(),
  TWILIO_MESSAGING_SERVICE_SID: z
    .string()
    .regex(/^MG[0-9a-fA-F]{32}$/, "must look like MG followed by 32 hex digits")
    .optional(),
  TWILIO_API_BASE_URL: optionalUrl("TWILIO_API_BASE_URL", ["https:", "http:"]),
  PUBLIC_BASE_URL: optionalUrl("PUBLIC_BASE_URL", ["https:", "http:"]),
  SENDONCE_SECRET: z
    .string()
    .min(32, "must be at least 32 characters (e.g. openssl rand -hex 32)")
    .optional(),
  SENDONCE_INDOUBT_GRACE_MS: milliseconds(
    60_000,
    500,
    "the provider needs time to list a message it took",
  ),
  SENDONCE_FAILPOINT: z
    .enum(["after_claim", "before_call", "after_call", "after_outcome", "api_after_commit"])
    .optional(),
  SENDONCE_API_KEYS: z
    .string()
    .transform((v) =>
      v
        .split(",")
        .map((k) => k.trim())
        .filter(Boolean),
    )
    .refine((keys) => keys.every((k) => k.length >= 16), "each key must be at least 16 characters")
    .optional(),
  SENDONCE_BODY_LIMIT_BYTES: z.coerce
    .number({ message: "must be a number of bytes" })
    .int("must be a whole number of bytes")
    .positive("must be more than 0 bytes")
    .default(1_048_576),
  SENDONCE_IDEMPOTENCY_TTL_HOURS: z.coerce
    .number({ message: "must be a number of hours" })
    .min(24, "must be at least 24 hours")
    .default(24),
});

export interface Config {
  /** Unset means: start the embedded Postgres under the state directory (demo). */
  databaseUrl?: string;
  redisUrl?: string;
  /** Unset means: a file outbox under `<stateDir>/outbox/email`. */
  smtpUrl?: string;
  /**
   * Benchmarks only: deliver nothing, append `<channel> <action key>` per send to this file
   * (overrides SMTP, Twilio and the outboxes).
   */
  recordOnly?: string;
  /** The From address; its domain is also the Message-ID domain. */
  emailFrom: string;
  journeysDir: string;
  stateDir: string;
  /** Redis key prefix of every queue; one per deployment sharing a Redis. */
  queuePrefix: string;
  /** How long a crashed worker's job and claim stay locked before another worker takes over. */
  leaseMs: number;
  /** Provider call timeout (SMTP connection, greeting and socket inactivity). */
  sendTimeoutMs: number;
  retryBaseMs: number;
  sweepIntervalMs: number;
  /**
   * Database connections per worker process. Jobs wait for a connection rather than fail, and
   * every process's pool counts against Postgres' max_connections (100 by default).
   */
  dbPoolSize?: number;
  twilio?: {
    accountSid: string;
    authToken: string;
    from?: string;
    messagingServiceSid?: string;
    apiBaseUrl?: string;
  };
  /** Where this deployment's API is reachable from outside: unsubscribe links, status callbacks. */
  publicBaseUrl: string;
  /** PUBLIC_BASE_URL was not set: publicBaseUrl is the local default. */
  publicBaseUrlDefaulted: boolean;
  /** Signs unsubscribe tokens; unset means links cannot be made (a startup error for sends). */
  secret?: string;
  /** How long an in-doubt SMS waits before it is looked up in the provider's message list. */
  inDoubtGraceMs: number;
  /** Bearer keys the API accepts. */
  apiKeys: string[];
  bodyLimitBytes: number;
  idempotencyTtlMs: number;
  /** Fault injection for the crash tests and the chaos suite: the worker stops dead here. */
  failpoint?: FailpointName;
}

export class ConfigError extends Error {
  override readonly name = "ConfigError";
}

const EMAIL = /^[^\s@<>]+@[^\s@<>]+\.[^\s@<>]+$/;

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  // An empty variable counts as unset, as it does for most tools (`FOO= cmd`).
  const set = Object.fromEntries(
    Object.entries(env).filter(([, v]) => v !== undefined && v.trim() !== ""),
  );
  const result = envSchema.safeParse(set);
  const problems = result.success
    ? []
    : result.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`);
  const e = result.data;
  if (e?.SMTP_URL && !e.EMAIL_FROM) {
    problems.push(
      `EMAIL_FROM: required when SMTP_URL is set, e.g. EMAIL_FROM="Shop <news@shop.example>"`,
    );
  }
  // nodemailer would connect through the proxy on a socket of its own, which the send's
  // deadline (the end of its call's lease) cannot cut.
  if (e?.SMTP_URL && new URL(e.SMTP_URL).searchParams.has("proxy")) {
    problems.push(
      "SMTP_URL: a proxy= parameter is not supported: a send must be cut off at its timeout, and a proxied connection cannot be; connect to the relay directly",
    );
  }
  const from = e?.EMAIL_FROM ?? "sendonce@sendonce.local";
  if (e && !EMAIL.test(addressOf(from))) {
    problems.push(`EMAIL_FROM: not an email address or "Name <address>"`);
  }
  const twilioSet = [
    e?.TWILIO_ACCOUNT_SID,
    e?.TWILIO_AUTH_TOKEN,
    e?.TWILIO_FROM,
    e?.TWILIO_MESSAGING_SERVICE_SID,
  ].some(Boolean);
  if (e && twilioSet) {
    if (!e.TWILIO_ACCOUNT_SID)
      problems.push("TWILIO_ACCOUNT_SID: required when any TWILIO_* variable is set");
    if (!e.TWILIO_AUTH_TOKEN)
      problems.push("TWILIO_AUTH_TOKEN: required when any TWILIO_* variable is set");
    if (!e.TWILIO_FROM && !e.TWILIO_MESSAGING_SERVICE_SID) {
      problems.push("TWILIO_FROM: set a sender number, or TWILIO_MESSAGING_SERVICE_SID");
    }
  }
  if (!e || problems.length > 0) {
    // Name the variable and the rule, never the value: it may hold a password.
    throw new ConfigError(`invalid configuration:\n  ${problems.join("\n  ")}`);
  }
  return {
    ...(e.DATABASE_URL && { databaseUrl: e.DATABASE_URL }),
    ...(e.REDIS_URL && { redisUrl: e.REDIS_URL }),
    ...(e.SMTP_URL && { smtpUrl: e.SMTP_URL }),
    ...(e.SENDONCE_RECORD_ONLY && { recordOnly: e.SENDONCE_RECORD_ONLY }),
    emailFrom: from,
    journeysDir: e.SENDONCE_JOURNEYS_DIR,
    stateDir: e.SENDONCE_STATE_DIR,
    queuePrefix: e.SENDONCE_QUEUE_PREFIX,
    leaseMs: e.SENDONCE_LEASE_MS,
    sendTimeoutMs: e.SENDONCE_SEND_TIMEOUT_MS,
    retryBaseMs: e.SENDONCE_RETRY_BASE_MS,
    sweepIntervalMs: e.SENDONCE_SWEEP_INTERVAL_MS,
    ...(e.SENDONCE_DB_POOL_SIZE && { dbPoolSize: e.SENDONCE_DB_POOL_SIZE }),
    ...(twilioSet && {
      twilio: {
        accountSid: e.TWILIO_ACCOUNT_SID!,
        authToken: e.TWILIO_AUTH_TOKEN!,
        ...(e.TWILIO_FROM && { from: e.TWILIO_FROM }),
        ...(e.TWILIO_MESSAGING_SERVICE_SID && {
          messagingServiceSid: e.TWILIO_MESSAGING_SERVICE_SID,
        }),
        ...(e.TWILIO_API_BASE_URL && { apiBaseUrl: e.TWILIO_API_BASE_URL }),
      },
    }),
    publicBaseUrl: (e.PUBLIC_BASE_URL ?? "http://localhost:8080").replace(/\/$/, ""),
    publicBaseUrlDefaulted: e.PUBLIC_BASE_URL === undefined,
    ...(e.SENDONCE_SECRET && { secret: e.SENDONCE_SECRET }),
    inDoubtGraceMs: e.SENDONCE_INDOUBT_GRACE_MS,
    apiKeys: e.SENDONCE_API_KEYS ?? [],
    bodyLimitBytes: e.SENDONCE_BODY_LIMIT_BYTES,
    idempotencyTtlMs: e.SENDONCE_IDEMPOTENCY_TTL_HOURS * 3_600_000,
    ...(e.SENDONCE_FAILPOINT && { failpoint: e.SENDONCE_FAILPOINT }),
  };
}

/** `news@shop.example` out of `Shop <news@shop.example>`. */
export function addressOf(from: string): string {
  return /<([^>]+)>\s*$/.exec(from)?.[1] ?? from.trim();
}

/** For commands that cannot run on the embedded default. */
export function requireDatabaseUrl(config: Config): string {
  if (!config.databaseUrl) {
    throw new ConfigError(
      "DATABASE_URL is not set: export DATABASE_URL=postgresql://user@host:5432/database (add ?schema=name for a schema other than public)",
    );
  }
  return config.databaseUrl;
}

export function requireRedisUrl(config: Config): string {
  if (!config.redisUrl) {
    throw new ConfigError(
      "REDIS_URL is not set: export REDIS_URL=redis://host:6379 (sendonce demo starts its own Redis instead)",
    );
  }
  return config.redisUrl;
}

/**
 * Warns when the local default of PUBLIC_BASE_URL is likely wrong here: with Twilio or
 * unsubscribe links configured, status callbacks, STOP replies and links would all point at
 * localhost (and Twilio's signatures, made for the address it posts to, would not verify).
 */
export function warnOfPublicBaseUrl(config: Config, log: Logger): void {
  if (!config.publicBaseUrlDefaulted) return;
  const uses = [
    config.twilio && "Twilio status callbacks and inbound STOP replies",
    config.secret && "unsubscribe links",
  ].filter(Boolean);
  if (uses.length === 0) return;
  log.warn("configuration", {
    problem: `PUBLIC_BASE_URL is not set: ${uses.join(" and ")} use ${config.publicBaseUrl}; set it to the address the API is reachable at from outside`,
  });
}
