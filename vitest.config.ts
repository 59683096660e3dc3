import { defineConfig } from "vitest/config";

// Test files run in parallel processes; each isolates itself with its own Postgres schema
// and Redis key prefix (test/support/), so no file can see another's rows or jobs.
export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    pool: "forks",
    testTimeout: 30_000,
    hookTimeout: 60_000,
  },
});
