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
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { Host, type HostService } from "./Host.ts"
import { defaultSignals, type SignalEvent, type SignalName, Signals, type SignalSource } from "./Signals.ts"

/**
 * A source a test drives.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import * as GracefulTest from "effect-graceful/testing"
 *
 * const sendTerm = Effect.gen(function*() {
 *   const signals = yield* GracefulTest.TestSignals
 *   signals.send("SIGTERM")
 * })
 * ```
 *
 * @category services
 * @since 0.1.0
 */
export class TestSignals extends Context.Service<TestSignals, {
  /** Deliver a signal, as the kernel would. */
  readonly send: (signal: SignalName) => void
  /** Deliver an IPC message, as PM2 would. */
  readonly message: (message: string) => void
  /** Report an uncaught exception or unhandled rejection. */
  readonly crash: (error: unknown, source?: "uncaughtException" | "unhandledRejection") => void
  /** How many handlers are installed right now. */
  readonly listeners: () => number
}>()("effect-graceful/TestSignals") {}

/**
 * Provides both {@link TestSignals} and a {@link Signals} source fed by it.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import * as GracefulTest from "effect-graceful/testing"
 *
 * const program = Effect.gen(function*() {
 *   const test = yield* GracefulTest.TestSignals
 *   test.send("SIGTERM")
 * }).pipe(Effect.provide(GracefulTest.layerSignals))
 * ```
 *
 * @category layers
 * @since 0.1.0
 */
export const layerSignals: Layer.Layer<TestSignals> = Layer.effectContext(Effect.sync(() => {
  // Each handler with the signals it listens to: a signal nobody listens to
  // is ignored here (the live process would apply its default action).
  const handlers = new Map<(event: SignalEvent) => void, ReadonlyArray<SignalName>>()
  const emit = (event: SignalEvent) => {
    for (const [handler, signals] of [...handlers]) {
      if (event._tag !== "Signal" || signals.includes(event.signal)) handler(event)
    }
  }
  const source: SignalSource = {
    listen: (handler, signals = defaultSignals) =>
      Effect.acquireRelease(
        Effect.sync(() => handlers.set(handler, signals)),
        () => Effect.sync(() => handlers.delete(handler))
      ).pipe(Effect.asVoid)
  }
  const test = TestSignals.of({
    send: (signal) => emit({ _tag: "Signal", signal }),
    message: (message) => emit({ _tag: "Message", message }),
    crash: (error, source = "uncaughtException") => emit({ _tag: "Defect", source, error }),
    listeners: () => handlers.size
  })
  return Context.make(TestSignals, test).pipe(Context.add(Signals, source))
}))

/**
 * What a test host has seen.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import * as GracefulTest from "effect-graceful/testing"
 *
 * const exitCodes = Effect.gen(function*() {
 *   const host = yield* GracefulTest.TestHost
 *   return host.exits()
 * })
 * ```
 *
 * @category services
 * @since 0.1.0
 */
export class TestHost extends Context.Service<TestHost, {
  /** Every exit code asked for, in order. */
  readonly exits: () => ReadonlyArray<number>
  /** How many times `ready` was sent. */
  readonly readyCount: () => number
  /** How many times a watchdog fired. */
  readonly watchdogFired: () => number
}>()("effect-graceful/TestHost") {}

/**
 * Provides {@link TestHost} and a {@link Host} that records instead of
 * exiting, with a watchdog driven by Effect's `Clock` (so by `TestClock`).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import * as GracefulTest from "effect-graceful/testing"
 *
 * const program = Effect.gen(function*() {
 *   const host = yield* GracefulTest.TestHost
 *   host.exits()
 * }).pipe(Effect.provide(GracefulTest.layerHost))
 * ```
 *
 * @category layers
 * @since 0.1.0
 */
export const layerHost: Layer.Layer<TestHost> = Layer.effectContext(Effect.sync(() => {
  const exits: Array<number> = []
  let ready = 0
  let fired = 0
  const host: HostService = {
    exit: (code) => void exits.push(code),
    watchdog: (delayMs, onFire) =>
      Effect.sleep(Math.max(0, delayMs)).pipe(
        Effect.andThen(Effect.sync(() => {
          fired++
          onFire()
        })),
        Effect.forkScoped,
        Effect.asVoid
      ),
    notifyReady: Effect.sync(() => void ready++),
    whenStillAlive: () => {}
  }
  const test = TestHost.of({
    exits: () => exits,
    readyCount: () => ready,
    watchdogFired: () => fired
  })
  return Context.make(TestHost, test).pipe(Context.add(Host, host))
}))

/**
 * {@link TestSignals} and {@link TestHost}, with the `Signals`
 * and `Host` they feed.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer: Layer.Layer<TestSignals | TestHost> = Layer.merge(layerSignals, layerHost)

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
 * @category test helpers
 * @since 0.1.0
 */
export const send = (signal: SignalName): Effect.Effect<void, never, TestSignals> =>
  TestSignals.use((signals) => Effect.sync(() => signals.send(signal))).pipe(Effect.andThen(Effect.yieldNow))

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
 * @category test helpers
 * @since 0.1.0
 */
export const crash = (
  error: unknown,
  source?: "uncaughtException" | "unhandledRejection"
): Effect.Effect<void, never, TestSignals> =>
  TestSignals.use((signals) => Effect.sync(() => signals.crash(error, source))).pipe(
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
 * @category test helpers
 * @since 0.1.0
 */
export const exits: Effect.Effect<ReadonlyArray<number>, never, TestHost> = TestHost.use((host) =>
  Effect.sync(() => host.exits())
)
