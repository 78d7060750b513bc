import { defineConfig } from "vitest/config"

// Process-level tests: real child processes, real signals. Each test spawns
// its own fixture, so files run in parallel but tests inside a file do not.
export default defineConfig({
  test: {
    include: ["test/e2e/**/*.test.ts"],
    // Bun's binary for the Bun tests (BUN_BIN, or installed from npm on first use).
    globalSetup: ["test/e2e/bun-binary.ts"],
    testTimeout: 30_000,
    hookTimeout: 30_000
  }
})
