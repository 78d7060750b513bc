/**
 * The one synchronous ref that holds the shutdown's {@link State.State}:
 * read without a fiber (every request reads the phase), changed only through
 * {@link State.transition}, and observable as a stream of changes.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as PubSub from "effect/PubSub"
import * as Stream from "effect/Stream"
import type { Phase } from "../../Lifecycle.ts"
import * as State from "./state.ts"

export interface Store {
  /** The current state (a field read). */
  readonly get: () => State.State
  /** Applies `event` at the clock's now, synchronously; returns what the caller must do. */
  readonly apply: (event: State.Event) => State.Reaction
  /** The current public phase. */
  readonly phase: () => Phase
  /** Every phase change, starting with the current phase. */
  readonly phases: Stream.Stream<Phase>
  /** Completes once `predicate` holds for the state. */
  readonly await: (predicate: (state: State.State) => boolean) => Effect.Effect<void>
  /** Milliseconds left before the release deadline; the whole budget before any trigger. */
  readonly remaining: () => number
  readonly now: () => number
}

export const make = (limits: State.Limits, now: () => number): Effect.Effect<Store> =>
  Effect.map(PubSub.unbounded<State.State>({ replay: 1 }), (pubsub): Store => {
    let state = State.initial(limits)
    PubSub.publishUnsafe(pubsub, state)
    const changes = Stream.fromPubSub(pubsub)
    return {
      get: () => state,
      apply: (event) => {
        const step = State.transition(state, event, now())
        if (step.state !== state) {
          state = step.state
          PubSub.publishUnsafe(pubsub, state)
        }
        return step.reaction
      },
      phase: () => State.phaseOf(state),
      phases: changes.pipe(Stream.map(State.phaseOf), Stream.changes),
      await: (predicate) =>
        Effect.suspend(() =>
          predicate(state) ? Effect.void : changes.pipe(Stream.takeUntil(predicate), Stream.runDrain)
        ),
      remaining: () => State.remaining(state, now()),
      now
    }
  })
