import { defineConfig } from "vitest/config"
import e2e, { serialFiles } from "./vitest.e2e.config.ts"

/**
 * The end-to-end files whose time bounds are the point (the demo's "under
 * 30 s", exits within an emergency budget + 100 ms, a release at the budget
 * within 200 ms): one file at a time, after the parallel group
 * (`npm run test:e2e` runs both).
 */
export default defineConfig({
  test: {
    ...e2e.test,
    include: serialFiles,
    exclude: [],
    maxWorkers: 1
  }
})
