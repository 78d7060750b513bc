/**
 * End-to-end fixtures (test/e2e/fixtures) as real child processes; see
 * test/support/fixture.ts.
 */
import { join } from "node:path"
import { type Fixture, spawnFixture } from "../support/fixture.ts"

export type { Fixture } from "../support/fixture.ts"

const fixtures = join(import.meta.dirname, "fixtures")

export const start = (
  env: Record<string, string> = {},
  options: { readonly ipc?: boolean; readonly fixture?: string; readonly runtime?: string | undefined } = {}
): Fixture =>
  spawnFixture(join(fixtures, options.fixture ?? "service.ts"), env, {
    ...options,
    runtime: options.runtime ?? process.env.E2E_FIXTURE_RUNTIME
  })

/** Bun's binary: BUN_BIN, set by the suite's global setup (./bun-binary.ts) when not given. */
export const bunBin = process.env.BUN_BIN ?? "bun"
