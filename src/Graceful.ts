/**
 * Graceful shutdown for a whole Effect program, readable from the top:
 *
 * ```ts
 * import { Layer } from "effect"
 * import { Graceful } from "effect-graceful"
 *
 * declare const AppLive: Layer.Layer<never>
 * Graceful.runMain(AppLive)
 * ```
 *
 * or, with the stock runner, which users keep:
 *
 * ```ts
 * import { NodeRuntime } from "@effect/platform-node"
 * import { Layer } from "effect"
 * import { Graceful } from "effect-graceful"
 *
 * declare const AppLive: Layer.Layer<never>
 * Graceful.launch(AppLive).pipe(NodeRuntime.runMain({ teardown: Graceful.teardown }))
 * ```
 *
 * The sequence, from the first trigger (t = 0) with budget B:
 *
 * 1. **Draining** for the lame-duck delay: readiness 503, all else served.
 *    Skipped on a defect and when the program ended by itself.
 * 2. **Closing**: `Closing` hooks run (listeners close), then the drain waits
 *    until nothing is in flight or the drain deadline (delay + drain timeout).
 * 3. **Cutting**: what is still in flight is interrupted and recorded.
 * 4. **Releasing**: the program is interrupted, so its scopes close and
 *    finalizers run in reverse acquisition order, each managed one within its
 *    own deadline; the sequence stops waiting at t = B whatever happens.
 * 5. **Stopped**: the report is logged (and written to
 *    `SHUTDOWN_REPORT_FILE`); the exit code follows the outcome.
 *
 * Triggers are the signals in `SHUTDOWN_SIGNALS` (SIGTERM, SIGINT, SIGHUP by
 * default; SIGUSR2 opt-in), PM2's `shutdown` message, `Lifecycle.shutdown`.
 * The same signal again within 50 ms of the one that counted is one delivery
 * seen twice (one Ctrl-C under `npm start` reaches the process twice). A 2nd
 * signal stops waiting: the drain ends, in-flight work is cut, and the
 * release deadline moves to now + the emergency budget. A 3rd exits at once
 * with 128 + the signal's number (130 for SIGINT, 143 for SIGTERM). A trigger
 * before Ready skips the lame duck and the drain: nothing was served, and a
 * start-up step still running is cut at once. A defect (uncaught exception, unhandled
 * rejection, a program that dies) skips the lame duck and the drain, cuts,
 * releases within the emergency budget and exits 1. A watchdog timer outside
 * every fiber ends the process at B plus a small slack if all else hangs.
 *
 * @since 0.1.0
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Effect from "effect/Effect"
import { dual } from "effect/Function"
import * as Layer from "effect/Layer"
import * as Runtime from "effect/Runtime"
import type * as Scope from "effect/Scope"
import * as OS from "node:os"
import type { Health } from "./Health.ts"
import type { InFlight } from "./InFlight.ts"
import { unsupportedAtStart } from "./internal/base/runtime.ts"
import * as Coordinator from "./internal/engine/coordinator.ts"
import * as ReportFile from "./internal/engine/reportFile.ts"
import * as Triggers from "./internal/engine/triggers.ts"
import * as Lifecycle from "./Lifecycle.ts"
import * as PlatformCheck from "./PlatformCheck.ts"
import type * as Report from "./Report.ts"
import * as ShutdownConfig from "./ShutdownConfig.ts"
import { type SignalName, Signals } from "./Signals.ts"

/**
 * Options of {@link run}: the shutdown configuration (each overrides its
 * environment variable), and when the program counts as Ready.
 *
 * @category models
 * @since 0.1.0
 */
export interface RunOptions extends ShutdownConfig.ShutdownOptions {
  /**
   * `"start"` (default for {@link run}): Ready as soon as the program starts.
   * `"manual"`: the program calls `Lifecycle.markReady` itself
   * ({@link launch} does so once its layer is built).
   */
  readonly ready?: "start" | "manual" | undefined
}

/**
 * The services {@link run} provides to the program.
 *
 * @category models
 * @since 0.1.0
 */
export type Provided = Lifecycle.Lifecycle | InFlight | Health | Scope.Scope

/**
 * The services of {@link run} as a `Layer`, without the shutdown sequence:
 * for building and testing a layer that uses `Resource.make`,
 * `Lifecycle.addHook`, `InFlight.track` or `Health.addCheck` outside
 * {@link run}. Releases then run when the layer's scope closes, each within
 * its own timeout; nothing listens to signals.
 *
 * @example
 * ```ts
 * import { Effect, Layer } from "effect"
 * import { Graceful, Resource } from "effect-graceful"
 *
 * const DbLive = Layer.effectDiscard(Resource.addFinalizer("db", Effect.log("pool ended"), { timeout: "1 second" }))
 *
 * // Build and release the layer in a test, with no Graceful.run around it.
 * const test = Layer.build(DbLive).pipe(Effect.scoped, Effect.provide(Graceful.layer()))
 * ```
 *
 * @category layers
 * @since 0.2.0
 */
export const layer = (
  options?: ShutdownConfig.ShutdownOptions
): Layer.Layer<Exclude<Provided, Scope.Scope>, ShutdownConfig.ShutdownConfigError> =>
  Layer.effectContext(
    Effect.flatMap(ShutdownConfig.load(options), (config) => Effect.map(Coordinator.make(config), (c) => c.context))
  )

interface Outcome {
  readonly exitCode: number
  readonly reraise: SignalName | undefined
}

// The outcome of the last shutdown, for `teardown`. `NodeRuntime.runMain`
// interrupts the main fiber on a signal, so the report value itself may not
// survive to the teardown. Keyed globally so that two copies of this package
// in one process still agree.
const outcomeKey = Symbol.for("effect-graceful/outcome")
const store = globalThis as { [outcomeKey]?: Outcome | undefined }

const outcomeOf = (report: Report.ShutdownReport, config: ShutdownConfig.ShutdownConfig): Outcome => ({
  exitCode: report.exitCode,
  reraise: config.reraiseSignal && report.exitCode === 0 && report.trigger._tag === "Signal"
    ? report.trigger.signal
    : undefined
})

/**
 * Runs `program` with graceful shutdown. Returns the shutdown report once the
 * program has stopped; fails only when the configuration is invalid (before
 * the program starts).
 *
 * The program runs in its own fiber, in its own `Scope`, and gets
 * `Lifecycle`, `InFlight` and `Health`. The caller's fiber is not interrupted by a signal: signals are
 * triggers for the sequence (see the module docs), which interrupts the
 * program itself when it is time to release.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Graceful, InFlight } from "effect-graceful"
 *
 * const worker = Effect.forever(InFlight.track(Effect.sleep("1 second"), { kind: "job" }))
 *
 * const main = worker.pipe(Graceful.run({ timeout: "10 seconds" }))
 * ```
 *
 * @category running
 * @since 0.1.0
 */
export const run: {
  (
    options?: RunOptions
  ): <A, E, R>(
    program: Effect.Effect<A, E, R>
  ) => Effect.Effect<Report.ShutdownReport, ShutdownConfig.ShutdownConfigError, Exclude<R, Provided>>
  <A, E, R>(
    program: Effect.Effect<A, E, R>,
    options?: RunOptions
  ): Effect.Effect<Report.ShutdownReport, ShutdownConfig.ShutdownConfigError, Exclude<R, Provided>>
} = dual(
  (args) => Effect.isEffect(args[0]),
  <A, E, R>(
    program: Effect.Effect<A, E, R>,
    options: RunOptions = {}
  ): Effect.Effect<Report.ShutdownReport, ShutdownConfig.ShutdownConfigError, Exclude<R, Provided>> =>
    // Uninterruptible: the interrupt that `NodeRuntime.runMain` sends on
    // SIGTERM must not skip the drain. The sequence decides when the program
    // is interrupted.
    Effect.uninterruptible(Effect.scoped(Effect.gen(function*() {
      const config = yield* ShutdownConfig.load(options)
      // A node:http guard composed into the app cannot run on this runtime
      // (Bun): refused now, before anything is acquired.
      const unsupported = unsupportedAtStart()
      if (unsupported !== undefined) return yield* Effect.die(new Error(unsupported))
      // The handlers first, before anything slow: a signal from here on is
      // kept and acted on as soon as the coordinator exists, instead of
      // killing the process with no report.
      const early = Triggers.early()
      yield* (yield* Signals).listen(early.handler, config.signals)
      // The report file is configuration too: a path that cannot be written
      // fails here, named with its errno, before anything is acquired.
      const reportFile = yield* ReportFile.load(config, options)
      if (reportFile !== undefined) yield* ReportFile.checkWritable(reportFile)
      // Warn when the budget does not fit PM2's kill_timeout or the
      // Kubernetes grace period. Never fails.
      yield* PlatformCheck.check(config)
      const coordinator = yield* Coordinator.make(config, reportFile)
      early.attach(coordinator.onEvent)
      const program_ = program.pipe(
        // Inside the scope: the trigger is recorded before the program's
        // finalizers start, so managed releases know the program is ending.
        Effect.onExit((exit) => Effect.sync(() => coordinator.onProgramExit(exit))),
        Effect.scoped,
        Effect.provideContext(coordinator.context)
      ) as Effect.Effect<A, E, never>
      // Detached, and interruptible: the sequence interrupts it at Releasing
      // and waits for it only until the release deadline; a finalizer that
      // hangs must not hold this fiber (a child would be awaited).
      const fiber = yield* Effect.forkDetach(Effect.interruptible(program_), { startImmediately: true })
      if ((options.ready ?? "start") === "start") yield* coordinator.lifecycle.markReady
      const report = yield* coordinator.runSequence(fiber)
      store[outcomeKey] = outcomeOf(report, config)
      return report
    }))) as Effect.Effect<Report.ShutdownReport, ShutdownConfig.ShutdownConfigError, Exclude<R, Provided>>
)

/**
 * Builds `layer`, marks the program Ready, and keeps it running until a
 * trigger; then shuts it down gracefully. The layer's resources are released
 * in reverse acquisition order.
 *
 * The layer's error type `E` is not in the result on purpose: like every
 * program under {@link run}, a layer that fails to build is a trigger, not a
 * failure of this effect. It ends the program, is recorded in the report as
 * `trigger: { _tag: "Failed", cause }` (logged at ERROR as readable text),
 * releases what was acquired, and gives exit code 1. The effect itself fails
 * only with an invalid configuration.
 *
 * @example
 * ```ts
 * import { NodeRuntime } from "@effect/platform-node"
 * import { Layer } from "effect"
 * import { Graceful } from "effect-graceful"
 *
 * declare const AppLive: Layer.Layer<never>
 *
 * Graceful.launch(AppLive).pipe(NodeRuntime.runMain({ teardown: Graceful.teardown }))
 * ```
 *
 * @category running
 * @since 0.1.0
 */
export const launch = <ROut, E, RIn>(
  layer: Layer.Layer<ROut, E, RIn>,
  options?: Omit<RunOptions, "ready">
): Effect.Effect<Report.ShutdownReport, ShutdownConfig.ShutdownConfigError, Exclude<RIn, Provided>> =>
  run(
    // `run` gives the program its scope: the layer lives until the shutdown.
    Layer.build(layer).pipe(Effect.andThen(Lifecycle.markReady), Effect.andThen(Effect.never)),
    { ...options, ready: "manual" }
  )

/**
 * The teardown for `NodeRuntime.runMain`: exits with the code the shutdown
 * decided (see the README's exit-code table). For a program that did not run
 * under {@link run}, it falls back to Effect's default teardown.
 *
 * With `reraiseSignal`, a clean shutdown caused by SIGTERM or SIGINT ends by
 * re-raising that signal, so a shell or supervisor sees 143 / 130. As PID 1
 * of a PID namespace (a container without an init), where the kernel ignores
 * the re-raised signal, it exits with 128 + the signal's number instead.
 *
 * @example
 * ```ts
 * import { NodeRuntime } from "@effect/platform-node"
 * import { Effect } from "effect"
 * import { Graceful } from "effect-graceful"
 *
 * Effect.never.pipe(Graceful.run(), NodeRuntime.runMain({ teardown: Graceful.teardown }))
 * ```
 *
 * @category running
 * @since 0.1.0
 */
export const teardown: Runtime.Teardown = (exit, onExit) => {
  const outcome = store[outcomeKey]
  store[outcomeKey] = undefined
  if (outcome === undefined) return Runtime.defaultTeardown(exit, onExit)
  if (outcome.reraise !== undefined) {
    // Our listeners are gone by now (and runMain removed its own before the
    // teardown), so the default action applies: the process dies by the signal
    // before `kill` returns.
    process.kill(process.pid, outcome.reraise)
    // Still alive: the kernel ignored it. PID 1 of a PID namespace (node as a
    // container's init) gets no default action for a signal it does not
    // handle. Exit with the status a shell reports for death by that signal.
    const code = 128 + OS.constants.signals[outcome.reraise]
    onExit(code)
    process.exit(code)
  }
  onExit(outcome.exitCode)
  // runMain exits by itself only after a signal or a non-zero code; after a
  // programmatic shutdown nothing may be left to keep the process alive, but
  // a stray handle must not keep it alive either.
  process.exit(outcome.exitCode)
}

/**
 * Runs a program or a layer as the process's main, with graceful shutdown:
 * `NodeRuntime.runMain` with {@link teardown}, around {@link run} (for an
 * effect) or {@link launch} (for a layer).
 *
 * @example
 * ```ts
 * import { Layer } from "effect"
 * import { Graceful } from "effect-graceful"
 *
 * declare const AppLive: Layer.Layer<never>
 *
 * Graceful.runMain(AppLive, { timeout: "20 seconds" })
 * ```
 *
 * @category running
 * @since 0.1.0
 */
export const runMain = <A, E, ROut>(
  program: Effect.Effect<A, E, Provided> | Layer.Layer<ROut, E, Provided>,
  options?: RunOptions & { readonly disableErrorReporting?: boolean | undefined }
): void => {
  const main = Layer.isLayer(program)
    ? launch(program as Layer.Layer<ROut, E, Provided>, options)
    : run(program as Effect.Effect<A, E, Provided>, options)
  NodeRuntime.runMain(main, { teardown, disableErrorReporting: options?.disableErrorReporting })
}
