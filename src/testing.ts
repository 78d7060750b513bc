/**
 * Test helpers: a trigger source and a host that a test drives, for
 * deterministic shutdown tests with `@effect/vitest` and `TestClock`.
 *
 * @example
 * ```ts
 * import { it } from "@effect/vitest"
 * import { Effect, Fiber } from "effect"
 * import { TestClock } from "effect/testing"
 * import { Graceful, Signals } from "effect-graceful"
 * import * as GracefulTest from "effect-graceful/testing"
 *
 * it.effect("drains before exit", () =>
 *   Effect.gen(function*() {
 *     const fiber = yield* Effect.never.pipe(Graceful.run(), Effect.forkChild)
 *     yield* GracefulTest.send("SIGTERM")
 *     yield* TestClock.adjust("1 second")
 *     const report = yield* Fiber.join(fiber)
 *   }).pipe(Effect.provide(GracefulTest.layer)))
 * ```
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Host from "./Host.ts"
import * as Signals from "./Signals.ts"

export {
  /** @since 0.1.0 */
  TestHost
} from "./Host.ts"
export {
  /** @since 0.1.0 */
  TestSignals
} from "./Signals.ts"

/**
 * {@link Signals.TestSignals} and {@link Host.TestHost}, with the `Signals`
 * and `Host` they feed.
 *
 * @since 0.1.0
 */
export const layer: Layer.Layer<Signals.TestSignals | Host.TestHost> = Layer.merge(Signals.layerTest, Host.layerTest)

/**
 * Deliver a signal to the program under test, then let its fibers react.
 *
 * @example
 * ```ts
 * import * as GracefulTest from "effect-graceful/testing"
 *
 * const sigterm = GracefulTest.send("SIGTERM")
 * ```
 *
 * @since 0.1.0
 */
export const send = (signal: Signals.SignalName): Effect.Effect<void, never, Signals.TestSignals> =>
  Signals.TestSignals.use((signals) => Effect.sync(() => signals.send(signal))).pipe(Effect.andThen(Effect.yieldNow))

/**
 * Report an uncaught exception (or an unhandled rejection) to the program
 * under test.
 *
 * @example
 * ```ts
 * import * as GracefulTest from "effect-graceful/testing"
 *
 * const crash = GracefulTest.crash(new Error("boom"))
 * ```
 *
 * @since 0.1.0
 */
export const crash = (
  error: unknown,
  source?: "uncaughtException" | "unhandledRejection"
): Effect.Effect<void, never, Signals.TestSignals> =>
  Signals.TestSignals.use((signals) => Effect.sync(() => signals.crash(error, source))).pipe(
    Effect.andThen(Effect.yieldNow)
  )

/**
 * The exit codes the program under test asked the host for (3rd signal,
 * watchdog, emergency budget of zero).
 *
 * @example
 * ```ts
 * import * as GracefulTest from "effect-graceful/testing"
 *
 * const codes = GracefulTest.exits
 * ```
 *
 * @since 0.1.0
 */
export const exits: Effect.Effect<ReadonlyArray<number>, never, Host.TestHost> = Host.TestHost.use((host) =>
  Effect.sync(() => host.exits())
)
