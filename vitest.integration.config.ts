import { defineConfig } from "vitest/config"

// Integration suite: real Postgres and Redis on their standard local ports.
export default defineConfig({
  test: {
    include: ["test/integration/**/*.test.ts"],
    testTimeout: 120_000,
    hookTimeout: 60_000,
    fileParallelism: false
  }
})
