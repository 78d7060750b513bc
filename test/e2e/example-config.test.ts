/**
 * The example service's own settings: every duration it documents is read
 * by the library's one duration parser (`ShutdownConfig.duration`), and a
 * malformed `DATABASE_URL` is a configuration error named at start-up, not
 * a connection failure retried.
 */
import { rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import { type Fixture, spawnFixture } from "../support/fixture.ts"

const main = join(import.meta.dirname, "..", "..", "examples", "service", "main.ts")
let running: Array<Fixture> = []
const logFile = join(tmpdir(), `example-config-${process.pid}-${Math.random().toString(36).slice(2)}.jsonl`)
afterEach(() => {
  for (const service of running) service.cleanup()
  running = []
  rmSync(logFile, { force: true })
})

const spawnExample = (env: Record<string, string>) => {
  const service = spawnFixture(main, {
    NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ""} --conditions=@effect-graceful/source`,
    PORT: "0",
    ...env
  })
  running.push(service)
  return service
}

const waitForOutput = async (service: Fixture, pattern: RegExp) => {
  const deadline = Date.now() + 60_000
  while (!pattern.test(service.output())) {
    if (Date.now() > deadline || service.child.exitCode !== null) {
      throw new Error(`no ${pattern} in:\n${service.output()}`)
    }
    await new Promise((resolve) => setTimeout(resolve, 10)) // polling interval of a bounded wait on a fact
  }
}

describe("example service configuration", { timeout: 90_000 }, () => {
  it("DATABASE_CONNECT_TIMEOUT=3s is accepted like SHUTDOWN_TIMEOUT=3s (one duration parser)", async () => {
    // Before: a SchemaError at start-up.
    const service = spawnExample({
      LOG_FILE: logFile,
      DATABASE_URL: "postgres://postgres@127.0.0.1:5432/test",
      DATABASE_CONNECT_TIMEOUT: "3s",
      SHUTDOWN_TIMEOUT: "3s"
    })
    await waitForOutput(service, /listening on http:\/\/127\.0\.0\.1:\d+/)
    service.kill("SIGTERM")
    expect((await service.exited).code, service.output()).toBe(0)
  })

  it("a DATABASE_URL with a non-numeric port fails the start-up at once, naming the variable", async () => {
    // Before: reported as localhost:5432 and retried until the connect timeout.
    const started = Date.now()
    const service = spawnExample({
      LOG_FILE: logFile,
      DATABASE_URL: "postgres://postgres:secret@127.0.0.1:notaport/test",
      DATABASE_CONNECT_TIMEOUT: "30 seconds"
    })
    const exit = await service.exited
    expect(exit.code).toBe(1)
    expect(service.output()).toMatch(/DATABASE_URL=.*not a valid URL/)
    expect(service.output()).not.toContain("secret")
    expect(service.output()).not.toMatch(/retry/i)
    expect(exit.at - started).toBeLessThan(20_000)
  })
})
