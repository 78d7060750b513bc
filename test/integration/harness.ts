/**
 * Integration fixtures (test/integration/fixtures) as real child processes;
 * see test/support/fixture.ts.
 */
import { randomBytes } from "node:crypto"
import { join } from "node:path"
import { type Fixture, spawnFixture } from "../support/fixture.ts"

export type { Fixture } from "../support/fixture.ts"

/** A name no other test run uses (Redis keys, Postgres tables, application names). */
export const uniqueName = (prefix: string): string =>
  `${prefix}_${Date.now().toString(36)}_${randomBytes(3).toString("hex")}`

export const start = (fixture: string, env: Record<string, string> = {}): Fixture =>
  spawnFixture(join(import.meta.dirname, "fixtures", fixture), env)
