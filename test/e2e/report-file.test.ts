/**
 * The report file on real files, real file systems and real processes: its
 * size limit (Kubernetes keeps 4096 bytes of /dev/termination-log), the
 * start-up check for a file that cannot be written (missing directory,
 * read-only or full file system), the errno of a write that fails at exit,
 * and what held the event loop when a shutdown overran.
 *
 * The read-only and full file systems are real tmpfs mounts, so these tests
 * need root (as CI and the development machines have).
 */
import { execFileSync } from "node:child_process"
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import type { Report } from "../../src/index.ts"
import { type Fixture, start } from "./harness.ts"
import { signalled } from "./signalled.ts"

let running: Array<Fixture> = []
let mounts: Array<string> = []
let scratches: Array<string> = []
const run = (env: Record<string, string> = {}, options?: { readonly fixture?: string }) => {
  const fixture = start(env, options)
  running.push(fixture)
  return fixture
}
afterEach(() => {
  for (const fixture of running) fixture.cleanup()
  running = []
  for (const dir of mounts) {
    execFileSync("umount", [dir])
    rmSync(dir, { recursive: true, force: true })
  }
  mounts = []
  for (const dir of scratches) rmSync(dir, { recursive: true, force: true })
  scratches = []
})

const scratch = (name: string) => {
  const dir = mkdtempSync(join(tmpdir(), "effect-graceful-mount-"))
  scratches.push(dir)
  return join(dir, name)
}

/** A tmpfs at `dir`, `ro` or of `size`: a real read-only or small file system. */
const mountTmpfs = (dir: string, options: string) => {
  mkdirSync(dir, { recursive: true })
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", options, "tmpfs", dir], { stdio: "pipe" })
  } catch (error) {
    throw new Error(`this test mounts a tmpfs and needs root: ${String(error)}`)
  }
  mounts.push(dir)
}

/** Fills the file system at `dir` until it has no byte left. */
const fill = (dir: string) => {
  try {
    execFileSync("dd", ["if=/dev/zero", `of=${join(dir, "filler")}`, "bs=1024"], { stdio: "pipe" })
  } catch {
    // dd stops with ENOSPC: that is the point.
  }
}

const expectStartupFailure = async (service: Fixture, variable: string, path: string, errno: string) => {
  const exit = await service.exited
  expect(exit.code, service.output()).toBe(1)
  expect(service.output()).toContain(`${variable}=${JSON.stringify(path)}`)
  expect(service.output()).toContain(errno)
  // Nothing was acquired, nothing ran.
  expect(service.has("acquire-log"), service.output()).toBe(false)
  expect(service.has("ready")).toBe(false)
}

/**
 * What held the loop names the fixture's listening server; on Bun (the suite
 * run with E2E_FIXTURE_RUNTIME, as .ci/run does), which does not say what
 * holds its loop, the report says that instead of an empty list.
 */
const expectServerHeld = (heldBy: Report.HeldBy | undefined, port: number) => {
  if (process.env.E2E_FIXTURE_RUNTIME?.includes("bun") === true) {
    expect(heldBy?.resourcesUnknown).toMatch(/^Bun \d+\.\d+\.\d+ does not report what holds its event loop/)
    expect(heldBy?.activeResources).toEqual({})
    return
  }
  expect(heldBy?.resourcesUnknown).toBeUndefined()
  expect(heldBy?.activeResources.TCPServerWrap).toBeGreaterThanOrEqual(1)
  expect(heldBy?.handles).toContain(`Server 127.0.0.1:${port}`)
}

describe("the report fits a size limit", () => {
  it("300 items cut: the file keeps to SHUTDOWN_REPORT_MAX_BYTES, summary and exit code first", async () => {
    const service = run({
      FIXTURE_JOBS: "300",
      SHUTDOWN_DRAIN_TIMEOUT: "300 millis",
      SHUTDOWN_REPORT_MAX_BYTES: "4096"
    })
    const { exit } = await signalled(service)
    expect(exit.code, service.output()).toBe(1)
    const text = readFileSync(join(service.dir, "report.json"), "utf8")
    expect(Buffer.byteLength(text)).toBeLessThanOrEqual(4096)
    expect(text.startsWith("{\"outcome\":\"degraded\",\"exitCode\":1,")).toBe(true)
    const report = JSON.parse(text) as Report.ShutdownReport
    expect(report.cutByKind).toEqual([
      { kind: "job", count: 270, oldestAgeMs: expect.any(Number) },
      { kind: "export", count: 30, oldestAgeMs: expect.any(Number) }
    ])
    expect(report.cut.length).toBeGreaterThan(0)
    expect(report.cut.length + (report.omitted?.cut ?? 0)).toBe(300)
    expect(report.releases.map((r) => r.name)).toEqual(["db", "log"])
  })

  it("with no limit (a path other than the termination log), the whole report is written", async () => {
    const service = run({ FIXTURE_JOBS: "300", SHUTDOWN_DRAIN_TIMEOUT: "300 millis" })
    await signalled(service)
    const report = service.report()
    expect(report.cut).toHaveLength(300)
    expect(statSync(join(service.dir, "report.json")).size).toBeGreaterThan(4096)
  })

  it("an unusable SHUTDOWN_REPORT_MAX_BYTES fails at start-up", async () => {
    const service = run({ SHUTDOWN_REPORT_MAX_BYTES: "4k" })
    const exit = await service.exited
    expect(exit.code, service.output()).toBe(1)
    expect(service.output()).toContain("SHUTDOWN_REPORT_MAX_BYTES=\"4k\"")
    expect(service.has("acquire-log")).toBe(false)
  })
})

describe("a report file that cannot be written is found at start-up", () => {
  it("in a missing directory: exit 1, ENOENT, nothing acquired", async () => {
    const path = "/nonexistent-effect-graceful/report.json"
    const service = run({ SHUTDOWN_REPORT_FILE: path })
    await expectStartupFailure(service, "SHUTDOWN_REPORT_FILE", path, "ENOENT")
  })

  it("on a read-only file system: exit 1, EROFS, nothing acquired", async () => {
    const dir = scratch("ro")
    mountTmpfs(dir, "ro,size=64k")
    const path = join(dir, "report.json")
    const service = run({ SHUTDOWN_REPORT_FILE: path })
    await expectStartupFailure(service, "SHUTDOWN_REPORT_FILE", path, "EROFS")
  })

  it("on a full file system: exit 1, ENOSPC, nothing acquired", async () => {
    const dir = scratch("full")
    mountTmpfs(dir, "size=16k")
    fill(dir)
    const path = join(dir, "report.json")
    const service = run({ SHUTDOWN_REPORT_FILE: path })
    await expectStartupFailure(service, "SHUTDOWN_REPORT_FILE", path, "ENOSPC")
  })

  it("a write that still fails at exit is logged with its errno; the exit code is unchanged", async () => {
    // /dev/full accepts an open and refuses every write with ENOSPC.
    const service = run({ SHUTDOWN_REPORT_FILE: "/dev/full" })
    const { exit } = await signalled(service)
    expect(exit.code, service.output()).toBe(0)
    expect(service.output()).toContain(
      "could not write the shutdown report to /dev/full: ENOSPC: no space left on device, write"
    )
    expect(service.output()).not.toContain("UnknownError")
  })

  it("a disk that fills while the service runs: the write at exit names ENOSPC", async () => {
    const dir = scratch("filling")
    mountTmpfs(dir, "size=16k")
    const path = join(dir, "report.json")
    const service = run({ SHUTDOWN_REPORT_FILE: path, FIXTURE_JOBS: "300", SHUTDOWN_DRAIN_TIMEOUT: "300 millis" })
    await service.waitFor("ready")
    fill(dir)
    service.kill("SIGTERM")
    const exit = await service.exited
    expect(exit.code, service.output()).toBe(1)
    expect(service.output()).toContain(`could not write the shutdown report to ${path}: ENOSPC`)
  })
})

describe("an overrun names what holds the event loop", () => {
  it("a hung release at the budget: the report names it, still running, and the process's open handles", async () => {
    const service = run({ FIXTURE_HUNG_RELEASE: "1", FIXTURE_LEAK_SERVER: "1", SHUTDOWN_TIMEOUT: "2 seconds" })
    await service.waitFor("ready")
    const port = await service.waitFor("leak-port")
    service.kill("SIGTERM")
    const exit = await service.exited
    expect(exit.code, service.output()).toBe(1)
    const report = service.report()
    expect(report.outcome).toBe("degraded")
    expect(report.heldBy?.reason).toBe("budget")
    // "stuck" ignored its interrupt and is still running; "db" and "log" come
    // after it, and may not have been skipped yet at that very moment.
    expect(report.heldBy?.openReleases[0]).toBe("stuck")
    expect(["stuck", "db", "log"]).toEqual(expect.arrayContaining([...(report.heldBy?.openReleases ?? [])]))
    expect(report.heldBy?.at).toBeGreaterThanOrEqual(2000)
    expectServerHeld(report.heldBy, port)
    expect(service.output()).toContain("event loop held at")
  })

  it("a process still alive after Stopped: the report is written again with what holds it", async () => {
    const service = run({ FIXTURE_RUNNER: "promise", FIXTURE_LEAK_SERVER: "1" })
    await service.waitFor("ready")
    const port = await service.waitFor("leak-port")
    service.kill("SIGTERM")
    await service.waitFor("stopped")
    const deadline = Date.now() + 5000
    let report = service.report()
    while (report.heldBy === undefined && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 100)) // polling interval of a bounded wait on a fact
      report = service.report()
    }
    expect(report.outcome, service.output()).toBe("clean")
    expect(report.heldBy?.reason, service.output()).toBe("aliveAfterStop")
    expect(report.heldBy?.openReleases).toEqual([])
    expectServerHeld(report.heldBy, port)
    expect(service.output()).toContain("still alive")
  })
})
