// Each test file uses its own queue prefix on the shared Redis, so no file sees another's jobs.
import { Redis } from "ioredis";
import { uniqueName } from "./db";

export const REDIS_URL = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379";

export function uniquePrefix(name = "t"): string {
  return uniqueName(`so_${name}`);
}

/** Deletes every key under a prefix (a scoped FLUSHALL: other test files share this Redis). */
export async function flushPrefix(prefix: string): Promise<number> {
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
  try {
    let deleted = 0;
    let cursor = "0";
    do {
      const [next, keys] = await redis.scan(cursor, "MATCH", `${prefix}:*`, "COUNT", 1000);
      cursor = next;
      if (keys.length > 0) deleted += await redis.del(...keys);
    } while (cursor !== "0");
    return deleted;
  } finally {
    redis.disconnect();
  }
}
