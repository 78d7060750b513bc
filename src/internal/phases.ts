/**
 * The lifecycle phase: one `SubscriptionRef`, moved forward only by the
 * shutdown sequence and read synchronously on every request.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import * as SubscriptionRef from "effect/SubscriptionRef"
import { isAtLeast, type Phase } from "../Lifecycle.ts"

export interface Phases {
  /** The current phase (a field read: cheap enough for every request). */
  readonly current: () => Phase
  /** Every phase change, starting with the current phase. */
  readonly changes: Stream.Stream<Phase>
  /** Moves to `phase` unless the lifecycle is already there or past it. */
  readonly advance: (phase: Phase) => Effect.Effect<void>
  /** Completes once the lifecycle has reached `phase` (or passed it). */
  readonly await: (phase: Phase) => Effect.Effect<void>
}

export const make: Effect.Effect<Phases> = Effect.map(
  SubscriptionRef.make<Phase>("Starting"),
  (ref): Phases => {
    const current = () => SubscriptionRef.getUnsafe(ref)
    const changes = SubscriptionRef.changes(ref)
    return {
      current,
      changes,
      advance: (phase) =>
        SubscriptionRef.updateSome(ref, (now) => isAtLeast(now, phase) ? Option.none() : Option.some(phase)),
      await: (phase) =>
        Effect.suspend(() =>
          isAtLeast(current(), phase)
            ? Effect.void
            : changes.pipe(Stream.takeUntil((p) => isAtLeast(p, phase)), Stream.runDrain)
        )
    }
  }
)
