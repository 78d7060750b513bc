/**
 * Where shutdown triggers come from.
 *
 * The live source listens to the process: `SIGTERM`, `SIGINT`, PM2's
 * `shutdown` IPC message (sent instead of a signal when the app runs with
 * `shutdown_with_message`, and always on Windows), `uncaughtException` and
 * `unhandledRejection`. It is the default: nothing needs to be provided.
 *
 * Tests provide `GracefulTest.layerSignals` (from `effect-graceful/testing`) and send events themselves with
 * {@link TestSignals}, so a SIGTERM is a function call and time is a
 * `TestClock`.
 *
 * The live signal listeners are *prepended*, so they run before the listener
 * that `NodeRuntime.runMain` installs; while they are installed, a signal no
 * longer kills the process by itself: the shutdown sequence decides.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"

/**
 * A shutdown signal as the process delivers it.
 *
 * @category models
 * @since 0.1.0
 */
export type SignalName = "SIGTERM" | "SIGINT" | "SIGHUP" | "SIGUSR2"

/**
 * Every signal that can be a shutdown trigger. `SIGQUIT` is not among them:
 * it is left to Node's default (a diagnostic stop), as is any signal not
 * configured through `SHUTDOWN_SIGNALS`.
 *
 * @category models
 * @since 0.2.0
 */
export const signalNames: ReadonlyArray<SignalName> = ["SIGTERM", "SIGINT", "SIGHUP", "SIGUSR2"]

/**
 * The signals that trigger a shutdown unless `SHUTDOWN_SIGNALS` says
 * otherwise: SIGTERM (supervisors), SIGINT (Ctrl-C) and SIGHUP (the terminal
 * went away). SIGUSR2 (nodemon's restart) is opt-in, because applications
 * also use it for heap snapshots and log rotation.
 *
 * @category models
 * @since 0.2.0
 */
export const defaultSignals: ReadonlyArray<SignalName> = ["SIGTERM", "SIGINT", "SIGHUP"]

const signalNumbers: Record<SignalName, number> = { SIGHUP: 1, SIGINT: 2, SIGUSR2: 12, SIGTERM: 15 }

/**
 * The exit code a shell shows for a process ended by `signal`: 128 + its
 * number (143 for SIGTERM, 130 for SIGINT).
 *
 * @example
 * ```ts
 * import { Signals } from "effect-graceful"
 *
 * Signals.exitCodeOfSignal("SIGTERM") // 143
 * ```
 *
 * @category utils
 * @since 0.2.0
 */
export const exitCodeOfSignal = (signal: SignalName): number => 128 + signalNumbers[signal]

/**
 * One event from a trigger source.
 *
 * @category models
 * @since 0.1.0
 */
export type SignalEvent =
  | { readonly _tag: "Signal"; readonly signal: SignalName }
  | { readonly _tag: "Message"; readonly message: string }
  | {
    readonly _tag: "Defect"
    readonly source: "uncaughtException" | "unhandledRejection"
    readonly error: unknown
  }

/**
 * A source of shutdown events. `listen` installs the handler for as long as
 * the scope is open.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Signals } from "effect-graceful"
 *
 * const program = Effect.gen(function*() {
 *   const signals = yield* Signals.Signals
 *   yield* signals.listen((event) => console.log("got", event._tag))
 * }).pipe(Effect.scoped)
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface SignalSource {
  readonly listen: (
    handler: (event: SignalEvent) => void,
    signals?: ReadonlyArray<SignalName>
  ) => Effect.Effect<void, never, Scope.Scope>
}

/**
 * The live source: the current Node process.
 *
 * @example
 * ```ts
 * import { Signals } from "effect-graceful"
 *
 * const source = Signals.processSignals(process)
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const processSignals = (proc: NodeJS.Process): SignalSource => ({
  listen: (handler, signals = defaultSignals) =>
    Effect.acquireRelease(
      Effect.sync(() => {
        const onSignal = signals.map((signal) => [signal, () => handler({ _tag: "Signal", signal })] as const)
        const onMessage = (message: unknown) => {
          if (message === "shutdown") handler({ _tag: "Message", message: "shutdown" })
        }
        const onUncaught = (error: unknown) => handler({ _tag: "Defect", source: "uncaughtException", error })
        const onUnhandled = (error: unknown) => handler({ _tag: "Defect", source: "unhandledRejection", error })
        for (const [signal, listener] of onSignal) proc.prependListener(signal, listener)
        // Only listen for IPC messages when there is a channel: a 'message'
        // listener keeps the channel referenced, which is right while the
        // service runs and released with the scope.
        const ipc = typeof proc.send === "function"
        if (ipc) proc.on("message", onMessage)
        proc.on("uncaughtException", onUncaught)
        proc.on("unhandledRejection", onUnhandled)
        return () => {
          for (const [signal, listener] of onSignal) proc.removeListener(signal, listener)
          if (ipc) proc.removeListener("message", onMessage)
          proc.removeListener("uncaughtException", onUncaught)
          proc.removeListener("unhandledRejection", onUnhandled)
        }
      }),
      (remove) => Effect.sync(remove)
    ).pipe(Effect.asVoid)
})

/**
 * The trigger source in use. Defaults to the live process.
 *
 * @category services
 * @since 0.1.0
 */
export const Signals: Context.Reference<SignalSource> = Context.Reference<SignalSource>(
  "effect-graceful/Signals",
  { defaultValue: () => processSignals(process) }
)
