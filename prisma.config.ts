// Loaded first by every prisma CLI command. Prisma 7 tries to download its Rust schema
// engine for each command and fails offline; `generate` only needs the variable to point at
// an existing file, so point it at this one. Migrations are applied by `sendonce db migrate`.
import { defineConfig } from "prisma/config";

process.env.PRISMA_SCHEMA_ENGINE_BINARY ??= new URL(import.meta.url).pathname;

export default defineConfig({
  schema: "prisma/schema.prisma",
  migrations: { path: "prisma/migrations" },
  datasource: { url: process.env.DATABASE_URL ?? "" },
});
