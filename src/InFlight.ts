/**
 * The set of work that must finish before resources are released: requests,
 * jobs, messages being handled, anything wrapped in {@link track}.
 *
 * Tracking costs one small record and no extra fiber: the work runs on the
 * caller's fiber. The drain waits until the set is empty; at the drain
 * deadline whatever is left is *cut*: its fiber is interrupted and the cut is
 * recorded (kind, label, age) in the shutdown report. Work tracked after the
 * cut is interrupted at once and recorded too, so nothing slips past the
 * drain unseen.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import { dual } from "effect/Function"

/**
 * How tracked work is named in the report: a kind (`request`, `job`,
 * `message`, ...) and a label (`GET /work`, a job id).
 *
 * @category models
 * @since 0.1.0
 */
export interface TrackOptions {
  readonly kind?: string | undefined
  readonly label?: string | undefined
  /**
   * Whether a cut of this item is a failure worth reporting (default true).
   * Bookkeeping entries the drain should wait for, but whose cut loses
   * nothing (sockets already told to close), set it to false.
   */
  readonly reportCut?: boolean | undefined
}

/**
 * The in-flight set, as the program sees it: run work in it, ask how much
 * is in flight, wait until nothing is. Adapters that track work which is not
 * an Effect (requests on a plain Node server) use `Adapter.InFlightRegistry`.
 *
 * @category models
 * @since 0.1.0
 */
export interface InFlightSet {
  /**
   * Runs `effect` as tracked work. The drain waits for it; at the drain
   * deadline it is interrupted and reported as cut. Work tracked after the
   * cut is interrupted at once, and reported.
   */
  readonly track: <A, E, R>(effect: Effect.Effect<A, E, R>, options?: TrackOptions) => Effect.Effect<A, E, R>
  /** How much work is in flight now. */
  readonly size: Effect.Effect<number>
  /** Completes when nothing is in flight (at once if the set is empty). */
  readonly awaitEmpty: Effect.Effect<void>
}

/**
 * The in-flight set of the running program. Provided by `Graceful.run`.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { InFlight } from "effect-graceful"
 *
 * const handleJob = (id: string) =>
 *   Effect.gen(function*() {
 *     const inFlight = yield* InFlight.InFlight
 *     yield* inFlight.track(Effect.sleep("2 seconds"), { kind: "job", label: id })
 *   })
 * ```
 *
 * @category services
 * @since 0.1.0
 */
export class InFlight extends Context.Service<InFlight, InFlightSet>()("effect-graceful/InFlight") {}

/**
 * Runs `effect` as tracked work in the current program's in-flight set.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { InFlight } from "effect-graceful"
 *
 * const job = InFlight.track(Effect.sleep("1 second"), { kind: "job", label: "invoice-42" })
 *
 * // or in a pipeline
 * const sameJob = Effect.sleep("1 second").pipe(InFlight.track({ kind: "job", label: "invoice-42" }))
 * ```
 *
 * @category combinators
 * @since 0.1.0
 */
export const track: {
  (options?: TrackOptions): <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R | InFlight>
  <A, E, R>(effect: Effect.Effect<A, E, R>, options?: TrackOptions): Effect.Effect<A, E, R | InFlight>
} = dual(
  (args) => Effect.isEffect(args[0]),
  <A, E, R>(effect: Effect.Effect<A, E, R>, options?: TrackOptions): Effect.Effect<A, E, R | InFlight> =>
    InFlight.use((set) => set.track(effect, options))
)
