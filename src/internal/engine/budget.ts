/**
 * Waiting within the budget: the release deadline and the escalation are
 * read from the shutdown state, never kept here.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import type * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as State from "./state.ts"
import type { Store } from "./store.ts"

/** How a bounded run ended. Times are clock milliseconds. */
export type BoundedOutcome =
  | { readonly _tag: "Skipped"; readonly startedAt: number }
  | {
    readonly _tag: "Finished" | "TimedOut"
    readonly startedAt: number
    readonly durationMs: number
    readonly deadlineMs: number
    /** `Finished` only: how the effect ended. */
    readonly exit: Exit.Exit<unknown, unknown> | undefined
  }

/** Completes when the shutdown escalates (2nd signal, defect, fast path). */
export const escalated = (store: Store): Effect.Effect<void> => store.await(State.isEscalated)

/** Completes at the release deadline, which an escalation may move earlier. */
export const deadlineReached = (store: Store): Effect.Effect<void> => {
  const sleepUntilDeadline = Effect.suspend(() => Effect.sleep(store.remaining()))
  return Effect.suspend(() =>
    State.isEscalated(store.get())
      ? sleepUntilDeadline
      : Effect.raceFirst(sleepUntilDeadline, escalated(store).pipe(Effect.andThen(sleepUntilDeadline)))
  )
}

/**
 * Waits for `effect` until `untilMs` (clock time), or an escalation.
 * Returns whether `effect` completed first.
 */
export const waitUntil = (store: Store, effect: Effect.Effect<unknown>, untilMs: number): Effect.Effect<boolean> =>
  Effect.suspend(() => {
    if (State.isEscalated(store.get())) return Effect.succeed(false)
    const ms = untilMs - store.now()
    return Effect.raceFirst(
      effect.pipe(Effect.as(true)),
      Effect.raceFirst(
        ms <= 0 ? Effect.succeed(false) : Effect.sleep(ms).pipe(Effect.as(false)),
        escalated(store).pipe(Effect.as(false))
      )
    )
  })

/**
 * Runs `effect` in its own fiber until `deadlineMs` (clock time), never past
 * the release deadline. A late effect is interrupted and abandoned, so one
 * that ignores interruption cannot hold the caller past its deadline.
 * `onAbandon` is called when the effect is abandoned; it returns what to call
 * once its fiber really ends.
 */
export const bounded = (
  store: Store,
  effect: Effect.Effect<unknown, unknown>,
  deadlineMs: number,
  onAbandon?: () => () => void
): Effect.Effect<BoundedOutcome> =>
  Effect.gen(function*() {
    const startedAt = store.now()
    const shutdown = State.shutdownOf(store.get())
    const deadline = shutdown === undefined ? deadlineMs : Math.min(deadlineMs, shutdown.deadline)
    const allowed = deadline - startedAt
    if (allowed <= 0) return { _tag: "Skipped", startedAt } as const
    const fiber = yield* Effect.forkDetach(Effect.interruptible(effect), { startImmediately: true })
    const exit = yield* Effect.raceFirst(
      Fiber.await(fiber).pipe(Effect.map(Option.some)),
      Effect.raceFirst(Effect.sleep(allowed), deadlineReached(store)).pipe(Effect.as(Option.none()))
    )
    const durationMs = store.now() - startedAt
    if (Option.isNone(exit)) {
      const settled = onAbandon?.()
      yield* Effect.forkDetach(
        settled === undefined
          ? Fiber.interrupt(fiber)
          : Fiber.interrupt(fiber).pipe(Effect.ensuring(Effect.sync(settled)))
      )
      return { _tag: "TimedOut", startedAt, durationMs, deadlineMs: allowed, exit: undefined } as const
    }
    return { _tag: "Finished", startedAt, durationMs, deadlineMs: allowed, exit: exit.value } as const
  })

/** Milliseconds since t = 0 (0 before any trigger). */
export const elapsed = (store: Store, at: number = store.now()): number => {
  const shutdown = State.shutdownOf(store.get())
  return shutdown === undefined ? 0 : at - shutdown.t0
}
