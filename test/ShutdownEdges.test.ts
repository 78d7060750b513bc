/**
 * Faults and edges of the core (issue 10 items 3, 4, 7, 8), on TestClock:
 * start-up that fails or hangs, a zero drain, the signal policy, a signal
 * storm. The same cases run against real processes in test/e2e/shutdown-edges.test.ts.
 */
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Fiber, Layer } from "effect"
import { TestClock } from "effect/testing"
import { Graceful, Health, InFlight, Lifecycle, Resource } from "../src/index.ts"
import * as GracefulTest from "../src/testing.ts"
import { counted, settle, start } from "./support/run.ts"

describe("start-up", () => {
  it.effect("a layer that fails while building: what was acquired is released inside the budget and reported", () =>
    Effect.gen(function*() {
      const Db = Layer.effectDiscard(Resource.make("db", Effect.void, () => Effect.sleep("8 seconds")))
      const Broken = Layer.effectDiscard(Effect.fail(new Error("port in use")))
      const fiber = yield* Graceful.launch(Layer.provideMerge(Broken, Db), { timeout: "3 seconds" }).pipe(
        Effect.forkChild
      )
      yield* settle
      yield* TestClock.adjust("10 seconds")
      const report = yield* Fiber.join(fiber)
      expect(report.trigger._tag).toBe("Failed")
      expect(report.releases.map((r) => `${r.name}:${r.outcome}:${r.durationMs}`)).toEqual(["db:timedOut:3000"])
      expect(report.exitCode).toBe(1)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("a signal during a hung acquire cuts it at once (named in the report) and releases what was acquired", () =>
    Effect.gen(function*() {
      const released: Array<string> = []
      const Log = Layer.effectDiscard(Resource.addFinalizer("log", Effect.sync(() => released.push("log"))))
      const Db = Layer.effectDiscard(Resource.make("db", Effect.never, () => Effect.void))
      const fiber = yield* Graceful.launch(Layer.provide(Db, Log), { timeout: "25 seconds" }).pipe(
        counted,
        Effect.forkChild
      )
      yield* settle
      yield* GracefulTest.send("SIGTERM")
      yield* TestClock.adjust("200 millis")
      const report = yield* Fiber.join(fiber)
      expect(report.cut.map((c) => `${c.kind} ${c.label}`)).toEqual(["acquire db"])
      expect(released).toEqual(["log"])
      expect(report.phases.map((p) => p.phase)).not.toContain("draining")
      expect(report.durationMs).toBeLessThanOrEqual(200)
    }).pipe(Effect.provide(GracefulTest.layer)))
})

describe("budgets at the edges", () => {
  it.effect("a zero drain still runs the Closing hooks, cuts at once, then releases normally", () =>
    Effect.gen(function*() {
      const events: Array<string> = []
      const fiber = yield* Effect.gen(function*() {
        yield* Resource.addFinalizer("db", Effect.sync(() => events.push("release db")))
        yield* Lifecycle.addHook("close listener", "Closing", Effect.sync(() => events.push("close listener")))
        yield* Effect.forkChild(InFlight.track(Effect.never, { kind: "job", label: "long" }))
        return yield* Effect.never
      }).pipe(Graceful.run({ timeout: "5 seconds", drainTimeout: "0 seconds" }), counted, Effect.forkChild)
      yield* settle
      yield* GracefulTest.send("SIGTERM")
      yield* TestClock.adjust("1 second")
      const report = yield* Fiber.join(fiber)
      expect(events).toEqual(["close listener", "release db"])
      expect(report.hooks.map((h) => `${h.name}:${h.outcome}`)).toEqual(["close listener:released"])
      expect(report.releases.map((r) => `${r.name}:${r.outcome}`)).toEqual(["db:released"])
      expect(report.cut.map((c) => c.label)).toEqual(["long"])
    }).pipe(Effect.provide(GracefulTest.layer)))
})

describe("signal policy", () => {
  it.effect("SIGHUP triggers a graceful shutdown by default", () =>
    Effect.gen(function*() {
      const fiber = yield* start(Effect.never, { timeout: "5 seconds" })
      yield* GracefulTest.send("SIGHUP")
      const report = yield* Fiber.join(fiber)
      expect(report.trigger).toEqual({ _tag: "Signal", signal: "SIGHUP" })
      expect(report.exitCode).toBe(0)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("SIGUSR2 (nodemon) is a trigger only when configured", () =>
    Effect.gen(function*() {
      const ignored = yield* start(Effect.never, { timeout: "5 seconds" })
      yield* GracefulTest.send("SIGUSR2")
      yield* TestClock.adjust("10 seconds")
      expect(ignored.pollUnsafe()).toBeUndefined()
      yield* GracefulTest.send("SIGTERM")
      yield* Fiber.join(ignored)

      const chosen = yield* Effect.never.pipe(
        Graceful.run({ timeout: "5 seconds", signals: ["SIGTERM", "SIGUSR2"] }),
        counted,
        Effect.forkChild
      )
      yield* settle
      yield* GracefulTest.send("SIGUSR2")
      const report = yield* Fiber.join(chosen)
      expect(report.trigger).toEqual({ _tag: "Signal", signal: "SIGUSR2" })
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("a storm of SIGTERM every 40 ms escalates: the duplicate window does not slide", () =>
    Effect.gen(function*() {
      const fiber = yield* Effect.gen(function*() {
        yield* Resource.addFinalizer("slow", Effect.sleep("10 seconds"))
        return yield* Effect.never
      }).pipe(Graceful.run({ timeout: "20 seconds" }), counted, Effect.forkChild)
      yield* settle
      for (let i = 0; i < 5; i++) {
        yield* GracefulTest.send("SIGTERM")
        yield* TestClock.adjust("40 millis")
      }
      const report = yield* Fiber.join(fiber)
      // Deliveries at 0, 40, 80, 120, 160 ms: counted at 0, 80 and 160.
      expect(report.signals).toBe(3)
      expect(report.outcome).toBe("forced")
      expect(report.exitCode).toBe(143)
      expect(yield* GracefulTest.exits).toEqual([143])
    }).pipe(Effect.provide(GracefulTest.layer)))
})

class Db extends Context.Service<Db, { readonly ping: Effect.Effect<void> }>()("test/Db") {}

describe("requirements carried through", () => {
  it.effect("Health.addCheck and Lifecycle.addHook take effects that need services; InFlight.track pipes", () =>
    Effect.gen(function*() {
      const pings: Array<string> = []
      const readiness: Array<boolean> = []
      const DbLive = Layer.succeed(Db, { ping: Effect.sync(() => void pings.push("ping")) })
      const fiber = yield* Effect.gen(function*() {
        yield* Health.addCheck("db", Db.use((db) => db.ping))
        yield* Lifecycle.addHook("db hook", "Closing", Db.use((db) => db.ping))
        const health = yield* Health.Health
        yield* Effect.forkChild(Effect.gen(function*() {
          yield* Lifecycle.Lifecycle.use((lifecycle) => lifecycle.awaitPhase("Ready"))
          readiness.push((yield* health.readiness).ready)
        }))
        yield* Effect.forkChild(Effect.sleep("1 second").pipe(InFlight.track({ kind: "job", label: "piped" })))
        return yield* Effect.never
      }).pipe(Effect.provide(DbLive), Graceful.run({ timeout: "5 seconds" }), counted, Effect.forkChild)
      yield* settle
      yield* GracefulTest.send("SIGTERM")
      yield* TestClock.adjust("1 second")
      const report = yield* Fiber.join(fiber)
      expect(readiness).toEqual([true])
      expect(pings).toEqual(["ping", "ping"])
      expect(report.inFlight.atDrainStart).toBe(1)
      expect(report.cut).toEqual([])
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("Graceful.layer builds a layer that uses Resource outside Graceful.run", () =>
    Effect.gen(function*() {
      const released: Array<string> = []
      const DbLive = Layer.effectDiscard(Resource.addFinalizer("db", Effect.sync(() => released.push("db"))))
      yield* Layer.build(DbLive).pipe(Effect.scoped, Effect.provide(Graceful.layer()))
      expect(released).toEqual(["db"])
    }))
})
