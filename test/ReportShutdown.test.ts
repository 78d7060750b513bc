/**
 * The report's new fields and its file, through a whole shutdown under
 * `Graceful.run` with `TestClock`: the budget in force, what held the event
 * loop at an overrun, the size limit, and the start-up check of the file.
 */
import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect, Fiber } from "effect"
import { TestClock } from "effect/testing"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll } from "vitest"
import { Adapter, Graceful, InFlight, Report, Resource } from "../src/index.ts"
import * as GracefulTest from "../src/testing.ts"
import { start } from "./support/run.ts"

const dir = mkdtempSync(join(tmpdir(), "effect-graceful-report-shutdown-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

describe("budgetMs", () => {
  it.effect("is the budget B after a clean shutdown", () =>
    Effect.gen(function*() {
      const fiber = yield* start(Effect.never, { timeout: "7 seconds" })
      yield* GracefulTest.send("SIGTERM")
      const report = yield* Fiber.join(fiber)
      expect(report.budgetMs).toBe(7000)
      expect("heldBy" in report).toBe(false)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("moves to the emergency deadline after a 2nd signal", () =>
    Effect.gen(function*() {
      const fiber = yield* start(
        Effect.gen(function*() {
          yield* Effect.forkScoped(InFlight.track(Effect.never, { kind: "job", label: "job-1" }))
          return yield* Effect.never
        }),
        { timeout: "10 seconds", emergencyTimeout: "500 millis" }
      )
      yield* GracefulTest.send("SIGTERM")
      yield* TestClock.adjust("300 millis")
      yield* GracefulTest.send("SIGTERM")
      yield* TestClock.adjust("1 second")
      const report = yield* Fiber.join(fiber)
      expect(report.budgetMs).toBe(800)
    }).pipe(Effect.provide(GracefulTest.layer)))
})

describe("a release's detail", () => {
  it.effect("is what the release returned as a summary; any other value it returns is not recorded", () =>
    Effect.gen(function*() {
      const fiber = yield* start(
        Effect.gen(function*() {
          const registry = yield* Adapter.releaseRegistry
          const summarized = yield* registry.register("cache", { timeout: "1 second" })
          yield* Effect.addFinalizer(() => summarized(Effect.succeed(Report.releaseSummary({ entriesFlushed: 42 }))))
          const plain = yield* registry.register("pool", { timeout: "1 second" })
          yield* Effect.addFinalizer(() => plain(Effect.succeed({ ended: true, clients: [1, 2] })))
          return yield* Effect.never
        }),
        { timeout: "5 seconds" }
      )
      yield* GracefulTest.send("SIGTERM")
      const report = yield* Fiber.join(fiber)
      expect(report.releases.map((r) => [r.name, r.outcome, r.detail])).toEqual([
        ["pool", "released", undefined],
        ["cache", "released", { entriesFlushed: 42 }]
      ])
      expect(Report.toJson(report)).toContain("\"detail\":{\"entriesFlushed\":42}")
    }).pipe(Effect.provide(GracefulTest.layer)))
})

describe("heldBy", () => {
  it.effect("a release that ignores its interrupt at the budget: named as still open", () =>
    Effect.gen(function*() {
      const fiber = yield* start(
        Effect.gen(function*() {
          yield* Resource.addFinalizer("log", Effect.void)
          yield* Resource.addFinalizer("stuck", Effect.uninterruptible(Effect.never))
          return yield* Effect.never
        }),
        { timeout: "2 seconds" }
      )
      yield* GracefulTest.send("SIGTERM")
      yield* TestClock.adjust("2 seconds")
      const report = yield* Fiber.join(fiber)
      expect(report.outcome).toBe("degraded")
      expect(report.heldBy?.reason).toBe("budget")
      expect(report.heldBy?.openReleases[0]).toBe("stuck")
      expect(report.heldBy?.at).toBe(2000)
      // Whatever this test process holds right now (vitest's own handles).
      expect(Object.keys(report.heldBy?.activeResources ?? {}).length).toBeGreaterThan(0)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("a 3rd signal: the report it writes names the release still running", () =>
    Effect.gen(function*() {
      const fiber = yield* start(
        Effect.gen(function*() {
          yield* Resource.addFinalizer("slow", Effect.never)
          return yield* Effect.never
        }),
        { timeout: "10 seconds", emergencyTimeout: "5 seconds" }
      )
      for (let i = 0; i < 2; i++) {
        yield* GracefulTest.send("SIGTERM")
        yield* TestClock.adjust("100 millis")
      }
      yield* GracefulTest.send("SIGTERM")
      const report = yield* Fiber.join(fiber)
      expect(report.outcome).toBe("forced")
      expect(report.heldBy).toMatchObject({ reason: "forced", at: 200, openReleases: ["slow"] })
    }).pipe(Effect.provide(GracefulTest.layer)))
})

describe("the report file", () => {
  it.effect("SHUTDOWN_REPORT_MAX_BYTES: 300 jobs cut, the file keeps to the limit, counted by kind", () =>
    Effect.gen(function*() {
      const path = join(dir, "limited.json")
      const fiber = yield* start(
        Effect.gen(function*() {
          for (let i = 0; i < 300; i++) {
            yield* Effect.forkScoped(InFlight.track(Effect.never, { kind: "job", label: `batch-${i}` }))
          }
          return yield* Effect.never
        }),
        { timeout: "10 seconds", drainTimeout: "1 second", reportFile: path }
      )
      yield* GracefulTest.send("SIGTERM")
      yield* TestClock.adjust("1 second")
      yield* TestClock.adjust("100 millis")
      const report = yield* Fiber.join(fiber)
      expect(report.cut).toHaveLength(300)
      const text = readFileSync(path, "utf8")
      expect(Buffer.byteLength(text)).toBeLessThanOrEqual(1024)
      const written = JSON.parse(text)
      expect(written.cutByKind).toEqual([{ kind: "job", count: 300, oldestAgeMs: 1000 }])
      expect(written.exitCode).toBe(1)
    }).pipe(
      Effect.provide(GracefulTest.layer),
      Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env: { SHUTDOWN_REPORT_MAX_BYTES: "1024" } })))
    ))

  it.effect("a report file in a missing directory fails at start-up; the program never starts", () =>
    Effect.gen(function*() {
      let started = false
      const path = join(dir, "missing", "report.json")
      const error = yield* Effect.sync(() => {
        started = true
      }).pipe(Graceful.run({ reportFile: path }), Effect.flip)
      expect(error._tag).toBe("ShutdownConfigError")
      expect(error.message).toContain(`option reportFile=${JSON.stringify(path)}`)
      expect(error.message).toContain("ENOENT")
      expect(started).toBe(false)
    }).pipe(Effect.provide(GracefulTest.layer)))
})
