import { PrismaPg } from "@prisma/adapter-pg";
import { PrismaClient } from "../generated/prisma/client";
import { connectionOptions } from "./url";

export type Db = PrismaClient;

/** A Prisma client on the pg driver adapter (Prisma 7 has no query-engine binary). */
export function createDb(databaseUrl: string, opts: { poolSize?: number } = {}): Db {
  const { connectionString, schema } = connectionOptions(databaseUrl);
  const adapter = new PrismaPg({ connectionString, max: opts.poolSize ?? 10 }, { schema });
  return new PrismaClient({ adapter });
}
