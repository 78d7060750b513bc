import { defineConfig } from "vitest/config"

// Process-level tests: real child processes, real signals. Each test spawns
// its own fixture, so files run in parallel but tests inside a file do not.
// The files whose time bounds are the point run after, one at a time
// (vitest.e2e-serial.config.ts); `npm run test:e2e` runs both.
/** Run one at a time by vitest.e2e-serial.config.ts: their time bounds are the point. */
export const serialFiles = ["test/e2e/demo.test.ts", "test/e2e/exit-codes.test.ts", "test/e2e/report-file.test.ts"]

export default defineConfig({
  test: {
    include: ["test/e2e/**/*.test.ts"],
    exclude: serialFiles,
    // Bun's binary for the Bun tests (BUN_BIN, or installed from npm on first use).
    globalSetup: ["test/e2e/bun-binary.ts"],
    // Two files at a time, even on two CPUs (vitest's default there is one):
    // the tests mostly wait on child processes and real time, and the suite
    // is most of .ci/run's time. Timing bounds in the tests leave room for it.
    maxWorkers: 2,
    testTimeout: 30_000,
    hookTimeout: 30_000
  }
})
