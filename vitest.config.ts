import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    exclude: ["test/e2e/**", "test/integration/**", "node_modules/**"],
    testTimeout: 10_000
  }
})
