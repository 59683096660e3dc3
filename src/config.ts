// Environment variables are read here, once, and validated into a typed Config; nothing
// deeper in the code reads process.env.
import { z } from "zod";

const optionalUrl = (name: string, protocols: string[]) =>
  z
    .string()
    .trim()
    .min(1)
    .refine((v) => URL.canParse(v) && protocols.includes(new URL(v).protocol), {
      message: `${name} must be a URL starting with ${protocols.map((p) => `${p}//`).join(" or ")}`,
    })
    .optional();

const envSchema = z.object({
  DATABASE_URL: optionalUrl("DATABASE_URL", ["postgresql:", "postgres:"]),
  REDIS_URL: optionalUrl("REDIS_URL", ["redis:", "rediss:"]),
  SENDONCE_JOURNEYS_DIR: z.string().min(1).default("journeys"),
});

export interface Config {
  /** Unset means: start the embedded Postgres under .sendonce/. */
  databaseUrl?: string;
  redisUrl?: string;
  journeysDir: string;
}

export class ConfigError extends Error {
  override readonly name = "ConfigError";
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  // An empty variable counts as unset, as it does for most tools (`FOO= cmd`).
  const set = Object.fromEntries(
    Object.entries(env).filter(([, v]) => v !== undefined && v.trim() !== ""),
  );
  const result = envSchema.safeParse(set);
  if (!result.success) {
    // Name the variable and the rule, never the value: it may hold a password.
    const problems = result.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`);
    throw new ConfigError(`invalid configuration:\n  ${problems.join("\n  ")}`);
  }
  const e = result.data;
  return {
    ...(e.DATABASE_URL && { databaseUrl: e.DATABASE_URL }),
    ...(e.REDIS_URL && { redisUrl: e.REDIS_URL }),
    journeysDir: e.SENDONCE_JOURNEYS_DIR,
  };
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
