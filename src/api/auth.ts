// Bearer keys from SENDONCE_API_KEYS, compared in constant time: both sides are hashed to the
// same length first, so neither the content nor the length of a key leaks through timing.
import { createHash, timingSafeEqual } from "node:crypto";

export function hashKey(key: string): Buffer {
  return createHash("sha256").update(key).digest();
}

export interface KeyRing {
  /** The sha256 (hex) of the matching configured key, or undefined. Never the key itself. */
  match(authorization: string | undefined): string | undefined;
}

export function keyRing(keys: string[]): KeyRing {
  const hashes = keys.map(hashKey);
  return {
    match(authorization) {
      const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? "");
      if (!m) return undefined;
      const given = hashKey(m[1]!);
      let found: Buffer | undefined;
      // Compare with every key, always: the time taken does not depend on which one matched.
      for (const h of hashes) if (timingSafeEqual(h, given)) found = h;
      return found?.toString("hex");
    },
  };
}
