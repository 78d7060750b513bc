/**
 * The global shutdown budget B and the deadlines carved from it.
 *
 * Fixed at the first trigger (t = 0); an escalation (2nd signal, defect) can
 * only move the release deadline earlier, to now + the emergency budget.
 * The state is one tagged value read and written synchronously: signal
 * handlers and the watchdog touch it from outside any fiber.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Latch from "effect/Latch"
import * as Option from "effect/Option"

type State =
  | { readonly _tag: "Unset" }
  | { readonly _tag: "Running"; readonly t0: number; readonly releaseDeadline: number }

/** How a bounded run ended. Times are clock milliseconds. */
export type BoundedOutcome =
  | { readonly _tag: "Skipped"; readonly startedAt: number }
  | {
    readonly _tag: "Finished" | "TimedOut"
    readonly startedAt: number
    readonly durationMs: number
    readonly deadlineMs: number
    /** `Finished` only: how the effect ended. */
    readonly exit: Exit.Exit<void, unknown> | undefined
  }

export interface Budget {
  /** Starts the budget now; returns false if it was already started. */
  readonly start: () => boolean
  /** Whether the budget has started (a trigger arrived). */
  readonly started: () => boolean
  /** t = 0, in clock milliseconds (0 before the start). */
  readonly t0: () => number
  /** Milliseconds since t = 0. */
  readonly elapsed: (at?: number) => number
  /** Milliseconds left before the release deadline; the whole budget before the start. */
  readonly remaining: () => number
  /** Moves the release deadline to now + the emergency budget; false if already escalated. */
  readonly escalate: () => boolean
  readonly isEscalated: () => boolean
  /** Completes when an escalation happens. */
  readonly escalated: Effect.Effect<void>
  /** Completes at the release deadline, which an escalation may move earlier. */
  readonly deadlineReached: Effect.Effect<void>
  /**
   * Waits for `effect` until `untilMs` (clock time), or an escalation.
   * Returns whether `effect` completed first.
   */
  readonly waitUntil: (effect: Effect.Effect<unknown>, untilMs: number) => Effect.Effect<boolean>
  /**
   * Runs `effect` in its own fiber until `deadlineMs` (clock time), never past
   * the release deadline. A late effect is interrupted and abandoned, so one
   * that ignores interruption cannot hold the caller past its deadline.
   */
  readonly bounded: (
    effect: Effect.Effect<void, unknown>,
    deadlineMs: number,
    /** Called when the effect is abandoned; returns what to call once its fiber really ends. */
    onAbandon?: () => () => void
  ) => Effect.Effect<BoundedOutcome>
}

export const make = (options: {
  readonly now: () => number
  readonly timeoutMs: number
  readonly emergencyTimeoutMs: number
  /** Told the budget in force (release deadline − t0) when it starts and when an escalation shortens it. */
  readonly onBudget?: ((budgetMs: number) => void) | undefined
}): Budget => {
  const { emergencyTimeoutMs, now, timeoutMs } = options
  let state: State = { _tag: "Unset" }
  const escalation = Latch.makeUnsafe(false)

  const remaining = () => state._tag === "Unset" ? timeoutMs : Math.max(0, state.releaseDeadline - now())
  const sleepUntilDeadline = Effect.suspend(() => Effect.sleep(remaining()))
  const deadlineReached: Effect.Effect<void> = Effect.suspend(() =>
    escalation.isOpen()
      ? sleepUntilDeadline
      : Effect.raceFirst(sleepUntilDeadline, escalation.await.pipe(Effect.andThen(sleepUntilDeadline)))
  )

  const bounded = (
    effect: Effect.Effect<void, unknown>,
    deadlineMs: number,
    onAbandon?: () => () => void
  ): Effect.Effect<BoundedOutcome> =>
    Effect.gen(function*() {
      const startedAt = now()
      const deadline = state._tag === "Unset" ? deadlineMs : Math.min(deadlineMs, state.releaseDeadline)
      const allowed = deadline - startedAt
      if (allowed <= 0) return { _tag: "Skipped", startedAt } as const
      const fiber = yield* Effect.forkDetach(Effect.interruptible(effect), { startImmediately: true })
      const exit = yield* Effect.raceFirst(
        Fiber.await(fiber).pipe(Effect.map(Option.some)),
        Effect.raceFirst(Effect.sleep(allowed), deadlineReached).pipe(Effect.as(Option.none()))
      )
      const durationMs = now() - startedAt
      if (Option.isNone(exit)) {
        const settled = onAbandon?.()
        yield* Effect.forkDetach(
          settled === undefined ? Fiber.interrupt(fiber) : Fiber.interrupt(fiber).pipe(Effect.ensuring(Effect.sync(settled)))
        )
        return { _tag: "TimedOut", startedAt, durationMs, deadlineMs: allowed, exit: undefined } as const
      }
      return { _tag: "Finished", startedAt, durationMs, deadlineMs: allowed, exit: exit.value } as const
    })

  return {
    start: () => {
      if (state._tag !== "Unset") return false
      const t0 = now()
      state = { _tag: "Running", t0, releaseDeadline: t0 + timeoutMs }
      options.onBudget?.(timeoutMs)
      return true
    },
    started: () => state._tag === "Running",
    t0: () => state._tag === "Unset" ? 0 : state.t0,
    elapsed: (at = now()) => state._tag === "Unset" ? 0 : at - state.t0,
    remaining,
    escalate: () => {
      if (escalation.isOpen()) return false
      if (state._tag === "Running") {
        state = { ...state, releaseDeadline: Math.min(state.releaseDeadline, now() + emergencyTimeoutMs) }
        options.onBudget?.(state.releaseDeadline - state.t0)
      }
      escalation.openUnsafe()
      return true
    },
    isEscalated: () => escalation.isOpen(),
    escalated: escalation.await,
    deadlineReached,
    waitUntil: (effect, untilMs) =>
      Effect.suspend(() => {
        if (escalation.isOpen()) return Effect.succeed(false)
        const ms = untilMs - now()
        return Effect.raceFirst(
          effect.pipe(Effect.as(true)),
          Effect.raceFirst(
            ms <= 0 ? Effect.succeed(false) : Effect.sleep(ms).pipe(Effect.as(false)),
            escalation.await.pipe(Effect.as(false))
          )
        )
      }),
    bounded
  }
}
