/**
 * What adapters need from the running program and applications do not:
 * entering work that is not an Effect into the in-flight set (a request on
 * a plain Node server, a WebSocket, a broker delivery), and registering a
 * release that is part of the shutdown. The library's own adapters
 * (`effect-graceful/Pg`, `/Redis`, `/WebSocket`, `Http`, ...) are built on
 * this module; write yours on it too.
 *
 * Both services are provided by `Graceful.run` and `Graceful.layer`, next to
 * `Lifecycle`, `InFlight` and `Health`.
 *
 * @since 0.2.0
 */
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import { InFlight, type InFlightSet, type TrackOptions } from "./InFlight.ts"
import { Lifecycle } from "./Lifecycle.ts"

/**
 * One unit of in-flight work, as an adapter hands it to
 * {@link InFlightRegistryService.addUnsafe}. Implement it on an object the
 * adapter already keeps per unit of work (a class with prototype methods, a
 * getter for the label), so tracking costs no closure and no string until a
 * cut needs one.
 *
 * @category models
 * @since 0.2.0
 */
export interface Item {
  readonly kind: string
  /** Read only when the item is cut: a getter is fine. */
  readonly label: string
  /** Whether a cut of this item is reported (see `InFlight.TrackOptions.reportCut`). */
  readonly reportCut: boolean
  /** Set by the set when the item is added (clock milliseconds). */
  startedAt: number
  /** Called once, at the drain deadline, if the item is still in flight. */
  interrupt(): void
}

/**
 * The in-flight set with the synchronous entry points adapters use from
 * plain Node callbacks.
 *
 * @category models
 * @since 0.2.0
 */
export interface InFlightRegistryService extends InFlightSet {
  /**
   * Enters work that is not an Effect into the set. `onCut` is called if the
   * work is still in flight at the drain deadline; call the returned
   * function when the work is done. Returns `undefined` if the set is already
   * closed (the work arrived after the cut): the caller should refuse it.
   */
  readonly enterUnsafe: (options: TrackOptions & { readonly onCut: () => void }) => (() => void) | undefined
  /**
   * Adds an item; returns false, having recorded it as cut, if the set is
   * already closed. Remove it with `removeUnsafe` when done.
   */
  readonly addUnsafe: (item: Item) => boolean
  /** Removes an item added with `addUnsafe` (no-op if absent). */
  readonly removeUnsafe: (item: Item) => void
  /** How much work is in flight now, synchronously. */
  readonly sizeUnsafe: () => number
}

/**
 * A pub/sub subscription's counters: messages received, handled
 * (successfully), failed, dropped (arrived after Closing), and running now.
 * The Redis and NATS core subscriptions report these.
 *
 * @example
 * ```ts
 * import type { Adapter } from "effect-graceful"
 *
 * const stats: Adapter.SubscriptionStats = { received: 5, handled: 4, failed: 0, dropped: 1, running: 0 }
 * ```
 *
 * @category models
 * @since 0.3.0
 */
export interface SubscriptionStats {
  readonly received: number
  readonly handled: number
  readonly failed: number
  readonly dropped: number
  readonly running: number
}

/**
 * The running program's in-flight set, for adapters.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Adapter } from "effect-graceful"
 *
 * // A callback-based consumer enters each delivery, and leaves when done.
 * const onDelivery = Effect.gen(function*() {
 *   const registry = yield* Adapter.InFlightRegistry
 *   const leave = registry.enterUnsafe({ kind: "message", label: "orders#42", onCut: () => {} })
 *   if (leave === undefined) return "refused"
 *   leave()
 *   return "handled"
 * })
 * ```
 *
 * @category services
 * @since 0.2.0
 */
export class InFlightRegistry
  extends Context.Service<InFlightRegistry, InFlightRegistryService>()("effect-graceful/Adapter/InFlightRegistry")
{}

/**
 * Options of a managed release.
 *
 * @category models
 * @since 0.2.0
 */
export interface ReleaseOptions {
  /** The release's own deadline. It never runs past the global budget. */
  readonly timeout?: Duration.Input | undefined
}

/**
 * Registers releases that are part of the shutdown.
 *
 * @category models
 * @since 0.2.0
 */
export interface ReleaseRegistryService {
  /**
   * Registers a release at acquisition time; returns the function to call
   * from the finalizer. When the program shuts down, that call waits for the
   * Releasing phase, runs the release within its deadline (its own timeout,
   * never past the budget) and records the outcome in the report; a release
   * that never got its turn is reported as skipped. When an inner scope
   * closes while the program runs, the release simply runs (bounded by its
   * own timeout). A release that succeeds with a `Report.releaseSummary`
   * has its detail recorded in the report. `Resource.make` is built
   * on this.
   */
  readonly register: (
    name: string,
    options?: ReleaseOptions
  ) => Effect.Effect<
    (release: Effect.Effect<unknown, unknown>, exit?: Exit.Exit<unknown, unknown>) => Effect.Effect<void>
  >
  /**
   * Runs the acquire step of `name`: interruptible (a shutdown during a hung
   * start-up interrupts it rather than waiting out the budget) and, while it
   * runs, in the in-flight set as `acquire <name>`, so a report names what
   * was stuck.
   */
  readonly acquire: <A, E, R>(name: string, acquire: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
}

/**
 * The running program's release registry, for adapters.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Adapter } from "effect-graceful"
 *
 * const program = Effect.gen(function*() {
 *   const registry = yield* Adapter.ReleaseRegistry
 *   const runRelease = yield* registry.register("socket", { timeout: "2 seconds" })
 *   yield* Effect.addFinalizer(() => runRelease(Effect.log("socket closed")))
 * })
 * ```
 *
 * @category services
 * @since 0.2.0
 */
export class ReleaseRegistry
  extends Context.Service<ReleaseRegistry, ReleaseRegistryService>()("effect-graceful/Adapter/ReleaseRegistry")
{}

const missing = (service: string) =>
  Effect.die(
    new Error(
      `effect-graceful: ${service} is not provided; run the program with Graceful.run or provide Graceful.layer`
    )
  )

/**
 * The in-flight registry of the running program, required as `InFlight`:
 * adapters keep the public requirement in their types, and get the
 * synchronous entry points.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Adapter } from "effect-graceful"
 *
 * const inFlightNow = Effect.map(Adapter.inFlightRegistry, (registry) => registry.sizeUnsafe())
 * ```
 *
 * @category accessors
 * @since 0.2.0
 */
export const inFlightRegistry: Effect.Effect<InFlightRegistryService, never, InFlight> = Effect.flatMap(
  Effect.andThen(Effect.service(InFlight), Effect.serviceOption(InFlightRegistry)),
  Option.match({ onNone: () => missing("the in-flight registry"), onSome: Effect.succeed })
)

/**
 * The release registry of the running program, required as `Lifecycle`
 * (see {@link inFlightRegistry}).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Adapter } from "effect-graceful"
 *
 * const program = Effect.gen(function*() {
 *   const registry = yield* Adapter.releaseRegistry
 *   const runRelease = yield* registry.register("cache", { timeout: "1 second" })
 *   yield* Effect.addFinalizer(() => runRelease(Effect.log("cache flushed")))
 * })
 * ```
 *
 * @category accessors
 * @since 0.2.0
 */
export const releaseRegistry: Effect.Effect<ReleaseRegistryService, never, Lifecycle> = Effect.flatMap(
  Effect.andThen(Effect.service(Lifecycle), Effect.serviceOption(ReleaseRegistry)),
  Option.match({ onNone: () => missing("the release registry"), onSome: Effect.succeed })
)

/**
 * The path of a request URL without its query string: what the report and
 * the health routes use to name a request.
 *
 * @example
 * ```ts
 * import { Adapter } from "effect-graceful"
 *
 * Adapter.pathOf("/work?ms=5") // "/work"
 * ```
 *
 * @category utils
 * @since 0.2.0
 */
export const pathOf = (url: string | undefined): string => {
  if (url === undefined) return "/"
  const query = url.indexOf("?")
  return query === -1 ? url : url.slice(0, query)
}
