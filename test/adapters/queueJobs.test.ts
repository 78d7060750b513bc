/**
 * The part of the BullMQ and pg-boss adapters that is ours and needs no
 * server: a job handler run as an item of the in-flight set (drained,
 * cut at the deadline, named in the report), and the release slice.
 * Their behaviour against the real clients is in test/integration.
 */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber } from "effect"
import { TestClock } from "effect/testing"
import { JobItem, runTracked } from "../../src/adapters/internal/queueJobs.ts"
import { releaseSliceMillis as sliceMillis } from "../../src/adapters/internal/slice.ts"
import { Adapter, Resource } from "../../src/index.ts"
import * as GracefulTest from "../../src/testing.ts"
import { start } from "../support/run.ts"

describe("job items in the in-flight set", () => {
  it.effect("a job that finishes within the drain ends with its value; one still running at the deadline is cut, named, and ends interrupted", () =>
    Effect.gen(function*() {
      const exits: Array<[string, Exit.Exit<unknown, unknown> | undefined]> = []
      const program = Effect.gen(function*() {
        const registry = yield* Adapter.inFlightRegistry
        const runFork = Effect.runForkWith(yield* Effect.context<never>())
        for (const [id, ms] of [["1", 500], ["2", 60_000]] as const) {
          const item = new JobItem("emails", id, "welcome")
          void runTracked(registry, item, () => runFork(Effect.as(Effect.sleep(ms), `done ${id}`))).then((exit) => {
            exits.push([id, exit])
          })
        }
        return yield* Effect.never
      })
      const fiber = yield* start(program, { timeout: "10 seconds", drainTimeout: "2 seconds" })
      yield* TestClock.adjust("100 millis")
      yield* GracefulTest.send("SIGTERM")
      yield* TestClock.adjust("2 seconds")
      const report = yield* Fiber.join(fiber)
      yield* Effect.promise(() => new Promise((resolve) => setImmediate(resolve)))
      expect(exits.map(([id, exit]) => [id, exit !== undefined && Exit.isSuccess(exit) ? exit.value : exit?._tag]))
        .toEqual([
          ["1", "done 1"],
          ["2", "Failure"]
        ])
      expect(Exit.hasInterrupts(exits[1]![1]!)).toBe(true)
      expect(report.cut).toEqual([{ kind: "job", label: "emails 2 welcome", ageMs: 2100 }])
      expect(report.inFlight).toEqual({ atDrainStart: 2, atDrainEnd: 1 })
      expect(report.exitCode).toBe(1)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("a job that arrives after the cut is refused without running: the caller hands it back", () =>
    Effect.gen(function*() {
      const late = yield* Deferred.make<Exit.Exit<unknown, unknown> | undefined>()
      let ran = false
      const program = Effect.gen(function*() {
        const registry = yield* Adapter.inFlightRegistry
        const runFork = Effect.runForkWith(yield* Effect.context<never>())
        // a release runs after the cut
        yield* Resource.make(
          "arrives late",
          Effect.void,
          () =>
            Effect.promise(() =>
              runTracked(registry, new JobItem("emails", "3", ""), () => {
                ran = true
                return runFork(Effect.void)
              })
            ).pipe(Effect.flatMap((exit) => Deferred.succeed(late, exit)))
        )
        return yield* Effect.never
      })
      const fiber = yield* start(program, { timeout: "10 seconds", drainTimeout: "1 second" })
      yield* GracefulTest.send("SIGTERM")
      yield* TestClock.adjust("1 second")
      const report = yield* Fiber.join(fiber)
      expect(yield* Deferred.await(late)).toBeUndefined()
      expect(ran).toBe(false)
      expect(report.cut.map((c) => c.label)).toEqual(["emails 3"])
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("the release slice is its own timeout, never past what is left of the budget", () =>
    Effect.gen(function*() {
      const slices: Array<number> = []
      const program = Effect.gen(function*() {
        yield* Resource.make("slices", Effect.void, () =>
          Effect.gen(function*() {
            slices.push(yield* sliceMillis("2 seconds"), yield* sliceMillis("1 hour"), yield* sliceMillis(undefined))
          }))
        return yield* Effect.never
      })
      const fiber = yield* start(program, { timeout: "10 seconds", drainTimeout: "1 second" })
      yield* GracefulTest.send("SIGTERM")
      yield* TestClock.adjust("1 second")
      yield* Fiber.join(fiber)
      expect(slices[0]).toBe(2000)
      // what is left of the 10 s budget (the drain took 0 here: nothing in flight)
      expect(slices[1]).toBeLessThanOrEqual(10_000)
      expect(slices[1]).toBeGreaterThan(9_000)
      expect(slices[2]).toBe(slices[1])
    }).pipe(Effect.provide(GracefulTest.layer)))
})
