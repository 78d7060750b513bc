import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Layer, Context } from "effect"
import { TestClock } from "effect/testing"
import { Graceful, InFlight, Lifecycle, Resource } from "../src/index.ts"
import * as GracefulTest from "../src/testing.ts"

describe("Graceful.run", () => {
  it.effect("SIGTERM: drain then release in reverse order, exit 0", () =>
    Effect.gen(function*() {
      const order: Array<string> = []
      const program = Effect.gen(function*() {
        yield* Resource.addFinalizer("a", Effect.sync(() => order.push("a")))
        yield* Resource.addFinalizer("b", Effect.sync(() => order.push("b")))
        yield* Effect.never
      })
      const fiber = yield* program.pipe(Graceful.run({ timeout: "10 seconds" }), Effect.forkChild)
      yield* Effect.yieldNow
      yield* GracefulTest.send("SIGTERM")
      yield* TestClock.adjust("1 second")
      const report = yield* Fiber.join(fiber)
      console.log(JSON.stringify(report, null, 1))
      expect(order).toEqual(["b", "a"])
      expect(report.exitCode).toBe(0)
      expect(report.outcome).toBe("clean")
      expect(report.releases.map((r) => r.name)).toEqual(["b", "a"])
    }).pipe(Effect.provide(GracefulTest.layer)))
})
