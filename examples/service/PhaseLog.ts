/**
 * Logs each lifecycle phase as the service enters it (`phase: Draining`,
 * `phase: Closing`, ...), so that an operator (and `npm run demo`) can follow
 * a shutdown as it happens. The full timeline is in the shutdown report.
 */
import { Effect, Layer, Stream } from "effect"
import { Lifecycle } from "../../src/Lifecycle.ts"

/**
 * Follows `Lifecycle.changes` for the life of the program.
 *
 * @example
 * ```ts
 * import { Layer } from "effect"
 * import { PhaseLogLive } from "./PhaseLog.ts"
 *
 * declare const AppLive: Layer.Layer<never>
 * const Live = Layer.merge(AppLive, PhaseLogLive)
 * ```
 */
export const PhaseLogLive = Layer.effectDiscard(
  Effect.gen(function*() {
    const lifecycle = yield* Lifecycle
    yield* Effect.forkScoped(
      Stream.runForEach(Stream.drop(lifecycle.changes, 1), (phase) => Effect.log(`phase: ${phase}`))
    )
  })
)
