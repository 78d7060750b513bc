import { describe, expect, it } from "vitest"
import { signalled, startCleanedUp } from "./signalled.ts"

const run = startCleanedUp()

const timings: Array<string> = []
const note = (line: string) => {
  timings.push(line)
  console.log(`[timing] ${line}`)
}

/** A job and a release that would take a minute, then `signal` three times, 100 ms apart. */
const thirdSignal = async (signal: NodeJS.Signals) => {
  const service = run({
    FIXTURE_SLOW_RELEASE: "60000",
    FIXTURE_JOB_MS: "60000",
    SHUTDOWN_EMERGENCY_TIMEOUT: "10 seconds"
  })
  return { service, ...await signalled(service, signal, { times: 3, gapMs: 100 }) }
}

describe("exit codes, real processes and real signals", () => {
  it("SIGTERM, clean: exit 0, releases in reverse acquisition order", async () => {
    const service = run()
    const { sent, exit } = await signalled(service)
    expect(exit.code, service.output()).toBe(0)
    const report = service.report()
    expect(report.trigger).toEqual({ _tag: "Signal", signal: "SIGTERM" })
    expect(report.releases.map((r) => r.name)).toEqual(["db", "log"])
    expect(report.outcome).toBe("clean")
    note(`clean SIGTERM: exit ${exit.code} after ${exit.at - sent} ms`)
  })

  it("SIGINT, clean: exit 0 (with Graceful.runMain)", async () => {
    const service = run({ FIXTURE_RUNNER: "graceful" })
    const { exit } = await signalled(service, "SIGINT")
    expect(exit.code, service.output()).toBe(0)
    expect(service.report().trigger).toEqual({ _tag: "Signal", signal: "SIGINT" })
  })

  it("programmatic shutdown: exit 0", async () => {
    const service = run({ FIXTURE_SHUTDOWN_AFTER_MS: "100" })
    const exit = await service.exited
    expect(exit.code, service.output()).toBe(0)
    expect(service.report().trigger).toEqual({ _tag: "Requested", reason: "requested by fixture" })
  })

  it("a program that completes: exit 0", async () => {
    const service = run({ FIXTURE_RUNNER: "effect", FIXTURE_COMPLETE_AFTER_MS: "100" })
    const exit = await service.exited
    expect(exit.code, service.output()).toBe(0)
    expect(service.report().trigger).toEqual({ _tag: "Completed" })
    expect(service.has("release-log")).toBe(true)
  })

  it("SHUTDOWN_RERAISE_SIGNAL: a clean SIGTERM shutdown dies by SIGTERM (shell sees 143)", async () => {
    const service = run({ SHUTDOWN_RERAISE_SIGNAL: "true" })
    const { exit } = await signalled(service)
    expect({ code: exit.code, signal: exit.signal }, service.output()).toEqual({ code: null, signal: "SIGTERM" })
    expect(service.report().outcome).toBe("clean")
  })

  it("in-flight work finishes before the releases, then exit 0", async () => {
    const service = run({ FIXTURE_JOB_MS: "600" })
    const { exit } = await signalled(service)
    expect(exit.code, service.output()).toBe(0)
    const jobDone = await service.waitFor("job-done")
    expect(await service.waitFor("release-db")).toBeGreaterThanOrEqual(jobDone)
    expect(service.report().inFlight).toEqual({ atDrainStart: 1, atDrainEnd: 0 })
  })

  it("work cut at the drain deadline: exit 1, the report names it", async () => {
    const service = run({
      FIXTURE_JOB_MS: "60000",
      SHUTDOWN_TIMEOUT: "3 seconds",
      SHUTDOWN_DRAIN_TIMEOUT: "500 millis"
    })
    const { sent, exit } = await signalled(service)
    expect(exit.code, service.output()).toBe(1)
    const report = service.report()
    expect(report.cut.map((c) => `${c.kind} ${c.label}`)).toEqual(["job job-1"])
    expect(service.has("release-db")).toBe(true)
    note(`cut at drain deadline (500 ms): exit ${exit.code} after ${exit.at - sent} ms`)
  })

  it("a failing release: exit 1, the others still run", async () => {
    const service = run({ FIXTURE_FAILING_RELEASE: "1" })
    const { exit } = await signalled(service)
    expect(exit.code, service.output()).toBe(1)
    const report = service.report()
    expect(report.releases.map((r) => `${r.name}:${r.outcome}`)).toEqual([
      "broken:failed",
      "db:released",
      "log:released"
    ])
  })

  it("a hung release: exit 1 at the budget (within 200 ms), the report names it", async () => {
    const service = run({ FIXTURE_HUNG_RELEASE: "1", SHUTDOWN_TIMEOUT: "2 seconds" })
    const { sent, exit } = await signalled(service)
    const elapsed = exit.at - sent
    expect(exit.code, service.output()).toBe(1)
    expect(elapsed).toBeGreaterThanOrEqual(1950)
    expect(elapsed).toBeLessThan(2200)
    const report = service.report()
    expect(report.releases.find((r) => r.name === "stuck")?.outcome).toBe("timedOut")
    expect(report.releases.filter((r) => r.name !== "stuck").map((r) => r.outcome)).toEqual(["skipped", "skipped"])
    note(`hung release, budget 2000 ms: exit ${exit.code} after ${elapsed} ms`)
  })

  it("2nd signal: exit within the emergency budget", async () => {
    const service = run({
      FIXTURE_JOB_MS: "60000",
      FIXTURE_SLOW_RELEASE: "60000",
      SHUTDOWN_TIMEOUT: "20 seconds",
      SHUTDOWN_EMERGENCY_TIMEOUT: "500 millis"
    })
    const { exit, sent: second } = await signalled(service, "SIGTERM", { times: 2, gapMs: 300 })
    const elapsed = exit.at - second
    expect(exit.code, service.output()).toBe(1)
    expect(elapsed).toBeLessThan(500 + 150)
    const report = service.report()
    expect(report.signals).toBe(2)
    expect(report.cut.map((c) => c.label)).toEqual(["job-1"])
    note(`2nd SIGTERM, emergency budget 500 ms: exit ${exit.code} after ${elapsed} ms`)
  })

  it("3rd SIGTERM: exit 143 at once", async () => {
    const { exit, sent: third, service } = await thirdSignal("SIGTERM")
    expect(exit.code, service.output()).toBe(143)
    expect(exit.at - third).toBeLessThan(100)
    expect(service.report().outcome).toBe("forced")
    note(`3rd SIGTERM: exit ${exit.code} after ${exit.at - third} ms`)
  })

  it("3rd SIGINT: exit 130 at once", async () => {
    const { exit, sent: third, service } = await thirdSignal("SIGINT")
    expect(exit.code, service.output()).toBe(130)
    note(`3rd SIGINT: exit ${exit.code} after ${exit.at - third} ms`)
  })

  for (const kind of ["exception", "rejection"] as const) {
    it(`uncaught ${kind}: exit 1 within the emergency budget + 100 ms, without waiting for in-flight work`, async () => {
      const service = run({
        FIXTURE_JOB_MS: "60000",
        FIXTURE_SLOW_RELEASE: "60000",
        FIXTURE_CRASH_AFTER_MS: "200",
        FIXTURE_CRASH: kind,
        SHUTDOWN_DELAY: "5 seconds",
        SHUTDOWN_EMERGENCY_TIMEOUT: "500 millis"
      })
      const crashed = await service.waitFor("crash")
      const exit = await service.exited
      const elapsed = exit.at - crashed
      expect(exit.code, service.output()).toBe(1)
      expect(elapsed).toBeLessThan(500 + 100)
      const report = service.report()
      expect(report.trigger).toMatchObject({
        _tag: "Defect",
        source: kind === "exception" ? "uncaughtException" : "unhandledRejection"
      })
      expect(report.phases.map((p) => p.phase)).not.toContain("draining")
      expect(report.cut.map((c) => c.label)).toEqual(["job-1"])
      expect(service.has("job-done")).toBe(false)
      note(`uncaught ${kind}, emergency budget 500 ms: exit ${exit.code} after ${elapsed} ms`)
    })
  }

  it("a program that dies: exit 1 on the defect path", async () => {
    const service = run({ FIXTURE_RUNNER: "effect", FIXTURE_DIE_AFTER_MS: "200", SHUTDOWN_DELAY: "5 seconds" })
    const crashed = await service.waitFor("crash")
    const exit = await service.exited
    expect(exit.code, service.output()).toBe(1)
    expect(exit.at - crashed).toBeLessThan(1000 + 100)
    expect(service.report().trigger).toMatchObject({ _tag: "Defect", source: "program" })
  })

  it("a release that blocks the event loop past the budget: exit 1 as soon as the loop is free", async () => {
    const service = run({ FIXTURE_BLOCKING_RELEASE: "1500", SHUTDOWN_TIMEOUT: "1 second" })
    const { sent, exit } = await signalled(service)
    const elapsed = exit.at - sent
    expect(exit.code, service.output()).toBe(1)
    expect(elapsed).toBeLessThan(1500 + 200)
    const report = service.report()
    expect(report.releases.map((r) => `${r.name}:${r.outcome}`)).toEqual([
      "blocking:timedOut",
      "db:skipped",
      "log:skipped"
    ])
    note(`release blocking the loop 1500 ms, budget 1000 ms: exit ${exit.code} after ${elapsed} ms`)
  })

  it("PM2: 'ready' is sent once Ready; the 'shutdown' message shuts down cleanly", async () => {
    const service = run({}, { ipc: true })
    const ready = new Promise<unknown>((resolve) => service.child.once("message", resolve))
    expect(await ready).toBe("ready")
    service.child.send("shutdown")
    const exit = await service.exited
    expect(exit.code, service.output()).toBe(0)
    expect(service.report().trigger).toEqual({ _tag: "Message", message: "shutdown" })
  })

  it("invalid configuration: exit 1 before anything is acquired, naming the variable and value", async () => {
    const service = run({ SHUTDOWN_TIMEOUT: "5 parsecs" })
    const exit = await service.exited
    expect(exit.code).toBe(1)
    expect(service.output()).toContain("SHUTDOWN_TIMEOUT=\"5 parsecs\"")
    expect(service.has("acquire-log")).toBe(false)
  })
})
