/**
 * @internal
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { millisOr } from "../../internal/base/duration.ts"
import { Lifecycle } from "../../Lifecycle.ts"

/**
 * The milliseconds a release may take: its own `timeout` when given, never
 * more than what is left of the shutdown budget.
 */
export const releaseSliceMillis = (timeout: Duration.Input | undefined): Effect.Effect<number, never, Lifecycle> =>
  Effect.map(
    Lifecycle.use((lifecycle) => Effect.map(lifecycle.remaining, Duration.toMillis)),
    (remaining) => Math.max(0, Math.min(millisOr(timeout) ?? Number.POSITIVE_INFINITY, remaining))
  )

/**
 * Waits for `promise` at most `millis`; `true` when it settled (either way)
 * in time. The promise is left running when the wait gives up.
 */
export const settledWithin = (promise: Promise<unknown>, millis: number): Effect.Effect<boolean> =>
  millis <= 0
    ? Effect.sync(() => false)
    : Effect.promise(() => promise.then(() => true, () => true)).pipe(
      Effect.timeoutOption(millis),
      Effect.map((option) => option._tag === "Some")
    )

/**
 * Room a pool's release deadline is given beyond its own `timeout`, so that
 * the pool's cancel (Postgres) or kill (MySQL) step, which runs inside that
 * `timeout`, has the last word rather than the engine's cut. The report's
 * `deadlineMs` for such a release is `timeout` + this margin (5 s → 5250).
 */
export const CLEANUP_MARGIN: Duration.Duration = Duration.millis(250)

/** A release `timeout` plus {@link CLEANUP_MARGIN}; `undefined` stays undefined (the rest of the budget). */
export const withCleanupMargin = (timeout: Duration.Input | undefined): Duration.Duration | undefined =>
  timeout === undefined ? undefined : Duration.sum(Duration.fromInputUnsafe(timeout), CLEANUP_MARGIN)
