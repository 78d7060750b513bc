/**
 * A signal that arrives after the handlers are installed but before the
 * shutdown engine exists is kept and acted on, not lost.
 * See docs/design.md#start-up.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { Graceful, Lifecycle, Signals } from "../../../src/index.ts"
import * as GracefulTest from "../../../src/testing.ts"

describe("Graceful.run: a signal during start-up", () => {
  it.effect("a SIGTERM delivered the moment the handlers are installed is the trigger; the program never becomes Ready", () =>
    Effect.gen(function*() {
      let ran = false
      // A signal source that delivers SIGTERM synchronously inside `listen`,
      // before `run` has built its coordinator.
      const source: Signals.SignalSource = {
        listen: (handler) => Effect.sync(() => handler({ _tag: "Signal", signal: "SIGTERM" }))
      }
      const report = yield* Effect.gen(function*() {
        ran = true
        yield* Lifecycle.markReady
        return yield* Effect.never
      }).pipe(
        Graceful.run({ timeout: "10 seconds", ready: "manual" }),
        Effect.provide(Layer.succeed(Signals.Signals, source))
      )
      expect(report.trigger).toEqual({ _tag: "Signal", signal: "SIGTERM" })
      expect(report.signals).toBe(1)
      expect(report.exitCode).toBe(0)
      // Triggered before Ready: no lame duck and no drain phase.
      expect(report.phases.map((p) => p.phase)).not.toContain("draining")
      expect(ran).toBe(true)
    }).pipe(Effect.provide(GracefulTest.layer)))
})
