/**
 * Faults and bad input against real processes and real signals (issue 10
 * items 3, 4, 5, 7, 8): start-up that fails or hangs, budgets at the edges,
 * causes printed as text, the signal policy, a signal storm.
 */
import { afterEach, describe, expect, it } from "vitest"
import { type Fixture, start } from "./harness.ts"

let running: Array<Fixture> = []
const run = (env: Record<string, string> = {}) => {
  const fixture = start(env)
  running.push(fixture)
  return fixture
}
afterEach(() => {
  for (const fixture of running) fixture.cleanup()
  running = []
})

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

describe("start-up that fails or hangs", () => {
  it(
    "a layer that fails after another acquired: its release runs within the budget, is reported, the cause printed as text",
    async () => {
      const service = run({
        FIXTURE_SLOW_RELEASE: "8000",
        FIXTURE_START_FAILURE: "port in use",
        SHUTDOWN_TIMEOUT: "2 seconds"
      })
      const failedAt = await service.waitFor("start-failure")
      const exit = await service.exited
      expect(exit.code, service.output()).toBe(1)
      // Was: the 8 s release ran unbounded before anything else, outside the report.
      expect(exit.at - failedAt).toBeLessThan(4_000)
      console.log(
        `[timing] start-up failure, 8 s release, 2 s budget: exit ${exit.code} ${
          exit.at - failedAt
        } ms after the failure`
      )
      const report = service.report()
      expect(report.trigger._tag).toBe("Failed")
      expect(report.releases.map((r) => `${r.name}:${r.outcome}`)).toContain("slow:timedOut")
      // The cause is readable text at ERROR, not only inside the JSON.
      expect(service.output()).toMatch(/ERROR[^\n]*the program failed/)
      expect(service.output()).toContain("start-up failed on purpose: port in use")
    },
    20_000
  )

  it("SIGTERM during a hung acquire stops it at once and names it", async () => {
    const service = run({ FIXTURE_HUNG_ACQUIRE: "1" })
    await service.waitFor("acquiring-cache")
    const sent = service.kill("SIGTERM")
    const exit = await service.exited
    // Was: the full 25 s budget, then a watchdog exit.
    expect(exit.at - sent, service.output()).toBeLessThan(2_000)
    console.log(`[timing] SIGTERM during a hung acquire: exit ${exit.code} after ${exit.at - sent} ms`)
    expect(exit.code).toBe(1)
    const report = service.report()
    expect(report.cut.map((c) => `${c.kind} ${c.label}`)).toEqual(["acquire cache"])
    expect(report.releases.map((r) => `${r.name}:${r.outcome}`)).toEqual(["db:released", "log:released"])
  }, 20_000)
})

describe("budgets at the edges", () => {
  for (const value of ["25 days", "1000000000 seconds", "500 micros"]) {
    it(`SHUTDOWN_TIMEOUT="${value}" is rejected at start-up by name`, async () => {
      const service = run({ SHUTDOWN_TIMEOUT: value })
      const exit = await service.exited
      expect(exit.code).toBe(1)
      expect(service.output()).toContain(`SHUTDOWN_TIMEOUT=${JSON.stringify(value)}`)
      expect(service.has("acquire-log")).toBe(false)
    })
  }

  it("SHUTDOWN_DRAIN_TIMEOUT=0s with nothing in flight: a clean exit 0, every hook and release run", async () => {
    const service = run({ SHUTDOWN_DRAIN_TIMEOUT: "0s" })
    await service.waitFor("ready")
    service.kill("SIGTERM")
    const exit = await service.exited
    expect(exit.code, service.output()).toBe(0)
    expect(service.report().releases.map((r) => `${r.name}:${r.outcome}`)).toEqual(["db:released", "log:released"])
  })

  it("Go-style durations are accepted (SHUTDOWN_TIMEOUT=3s, SHUTDOWN_DELAY=0s)", async () => {
    const service = run({ SHUTDOWN_TIMEOUT: "3s", SHUTDOWN_DELAY: "0s" })
    await service.waitFor("ready")
    service.kill("SIGTERM")
    expect((await service.exited).code, service.output()).toBe(0)
  })
})

describe("signal policy", () => {
  it("SIGHUP drains and exits 0 (it used to kill the process at once)", async () => {
    const service = run({ FIXTURE_JOB_MS: "300" })
    await service.waitFor("ready")
    service.kill("SIGHUP")
    const exit = await service.exited
    expect(exit.code, service.output()).toBe(0)
    expect(service.has("job-done")).toBe(true)
    expect(service.report().trigger).toEqual({ _tag: "Signal", signal: "SIGHUP" })
  })

  it("SIGUSR2 (nodemon's restart) drains when SHUTDOWN_SIGNALS names it", async () => {
    const service = run({ FIXTURE_JOB_MS: "300", SHUTDOWN_SIGNALS: "SIGTERM,SIGINT,SIGUSR2" })
    await service.waitFor("ready")
    service.kill("SIGUSR2")
    const exit = await service.exited
    expect(exit.code, service.output()).toBe(0)
    expect(service.has("job-done")).toBe(true)
  })

  it("SIGQUIT is left to Node's default (a diagnostic stop): no drain", async () => {
    const service = run({ FIXTURE_JOB_MS: "5000" })
    await service.waitFor("ready")
    service.kill("SIGQUIT")
    const exit = await service.exited
    expect(exit.signal).toBe("SIGQUIT")
    expect(service.has("job-done")).toBe(false)
  })

  it("a SIGTERM storm ends with exit 143 from the library, as the log says, not by the signal", async () => {
    const service = run({ FIXTURE_SLOW_RELEASE: "10000" })
    await service.waitFor("ready")
    for (let i = 0; i < 6; i++) {
      if (service.child.exitCode !== null || service.child.signalCode !== null) break
      service.kill("SIGTERM")
      await sleep(60) // the behaviour under test: a storm of signals, spaced as a supervisor repeats them
    }
    const exit = await service.exited
    expect(exit.signal, service.output()).toBe(null)
    expect(exit.code).toBe(143)
    expect(service.output()).toContain("exit 143")
  })
})
