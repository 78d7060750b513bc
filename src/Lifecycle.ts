/**
 * The lifecycle of a running service as a state machine you can read and
 * subscribe to:
 *
 * ```text
 * Starting → Ready → Draining → Closing → Releasing → Stopped
 * ```
 *
 * - **Starting**: acquiring resources; readiness 503.
 * - **Ready**: serving; readiness 200. PM2 gets `ready` on entry.
 * - **Draining** (lame duck): the first trigger arrived; readiness 503, all
 *   else still served, every HTTP/1.1 response says `Connection: close`.
 * - **Closing**: listeners closed, idle connections ended, consumers stop
 *   taking work; the drain awaits the in-flight set until the drain deadline,
 *   then cuts what is left.
 * - **Releasing**: finalizers run in reverse acquisition order, each within
 *   its own deadline, never past the budget.
 * - **Stopped**: the report is written; the process exits with its code.
 *
 * Phases only move forward. A phase can be skipped (a defect goes from Ready
 * straight to Releasing) but never revisited. The first trigger is recorded;
 * triggering again runs nothing twice.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import type * as Effect from "effect/Effect"
import type * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import type * as Stream from "effect/Stream"
import type { Trigger } from "./Report.ts"

/**
 * @category models
 * @since 0.1.0
 */
export type Phase = "Starting" | "Ready" | "Draining" | "Closing" | "Releasing" | "Stopped"

/**
 * The phases in order.
 *
 * @category constants
 * @since 0.1.0
 */
export const phases: ReadonlyArray<Phase> = ["Starting", "Ready", "Draining", "Closing", "Releasing", "Stopped"]

/**
 * Whether phase `a` comes at or after phase `b`.
 *
 * @example
 * ```ts
 * import { Lifecycle } from "effect-graceful"
 *
 * Lifecycle.isAtLeast("Closing", "Draining") // true
 * ```
 *
 * @category utils
 * @since 0.1.0
 */
export const isAtLeast = (a: Phase, b: Phase): boolean => order[a] >= order[b]

const order: Record<Phase, number> = {
  Starting: 0,
  Ready: 1,
  Draining: 2,
  Closing: 3,
  Releasing: 4,
  Stopped: 5
}

/**
 * A phase a hook can run in: `Draining` hooks run when the lame duck starts,
 * `Closing` hooks when it ends (close listeners, stop consumers).
 *
 * @category models
 * @since 0.1.0
 */
export type HookPhase = "Draining" | "Closing"

/**
 * @category models
 * @since 0.1.0
 */
export interface LifecycleService {
  /** The current phase. */
  readonly phase: Effect.Effect<Phase>
  /** The current phase, synchronously (cheap: safe on every request). */
  readonly phaseUnsafe: () => Phase
  /** Every phase change, starting with the current phase. */
  readonly changes: Stream.Stream<Phase>
  /** Completes once the lifecycle has reached `phase` (or passed it). */
  readonly awaitPhase: (phase: Phase) => Effect.Effect<void>
  /** The first trigger, once there is one. */
  readonly trigger: Effect.Effect<Option.Option<Trigger>>
  /** Move from Starting to Ready (no-op in any other phase). */
  readonly markReady: Effect.Effect<void>
  /** Ask for a shutdown, as a signal would. The first trigger wins. */
  readonly shutdown: (reason: string) => Effect.Effect<void>
  /**
   * Run `effect` when the lifecycle enters `phase`. Hooks run once, in reverse
   * registration order, each bounded by the phase's deadline; a failing hook
   * is logged and reported and does not stop the others. The hook runs with
   * the services of the fiber that added it, and is removed when the scope
   * closes.
   */
  readonly addHook: <R = never>(
    name: string,
    phase: HookPhase,
    effect: Effect.Effect<void, unknown, R>
  ) => Effect.Effect<void, never, Scope.Scope | R>
  /** What is left of the budget before the release deadline; the whole budget before any trigger. */
  readonly remaining: Effect.Effect<Duration.Duration>
}

/**
 * The running program's lifecycle. Provided by `Graceful.run`.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Lifecycle } from "effect-graceful"
 *
 * const readiness = Effect.gen(function*() {
 *   const lifecycle = yield* Lifecycle.Lifecycle
 *   return (yield* lifecycle.phase) === "Ready" ? 200 : 503
 * })
 * ```
 *
 * @category services
 * @since 0.1.0
 */
export class Lifecycle extends Context.Service<Lifecycle, LifecycleService>()("effect-graceful/Lifecycle") {}

/**
 * Ask the running program to shut down, as if it had received SIGTERM.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Lifecycle } from "effect-graceful"
 *
 * const onFatalConfigChange = Lifecycle.shutdown("config changed")
 * ```
 *
 * @category accessors
 * @since 0.1.0
 */
export const shutdown = (reason: string): Effect.Effect<void, never, Lifecycle> =>
  Lifecycle.use((lifecycle) => lifecycle.shutdown(reason))

/**
 * Mark the program Ready (readiness turns 200; PM2 gets `ready`).
 * `Graceful.launch` does this after the layer is built.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Lifecycle } from "effect-graceful"
 *
 * const program = Effect.gen(function*() {
 *   // ... start things ...
 *   yield* Lifecycle.markReady
 * })
 * ```
 *
 * @category accessors
 * @since 0.1.0
 */
export const markReady: Effect.Effect<void, never, Lifecycle> = Lifecycle.use((lifecycle) => lifecycle.markReady)

/**
 * Register a hook for a phase, for the life of the current scope.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Lifecycle } from "effect-graceful"
 *
 * const stopConsumer = Lifecycle.addHook("consumer", "Closing", Effect.log("stop taking work"))
 * ```
 *
 * @category accessors
 * @since 0.1.0
 */
export const addHook = <R = never>(
  name: string,
  phase: HookPhase,
  effect: Effect.Effect<void, unknown, R>
): Effect.Effect<void, never, Lifecycle | Scope.Scope | R> =>
  Lifecycle.use((lifecycle) => lifecycle.addHook(name, phase, effect))

/**
 * The current phase.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Lifecycle } from "effect-graceful"
 *
 * const program = Effect.gen(function*() {
 *   const phase = yield* Lifecycle.phase
 * })
 * ```
 *
 * @category accessors
 * @since 0.1.0
 */
export const phase: Effect.Effect<Phase, never, Lifecycle> = Lifecycle.use((lifecycle) => lifecycle.phase)
