/**
 * What the shutdown runs besides the program's own finalizers: phase hooks
 * and managed releases, each bounded by the budget and recorded in the
 * report.
 *
 * @internal
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type { HookPhase } from "../../Lifecycle.ts"
import * as Report from "../../Report.ts"
import { truncate } from "../base/text.ts"
import * as Budget from "./budget.ts"
import type { ReleaseTicket, ReportBuilder } from "./reportBuilder.ts"
import * as State from "./state.ts"
import type { Store } from "./store.ts"

interface Hook {
  readonly name: string
  readonly phase: HookPhase
  readonly effect: Effect.Effect<void, unknown>
}

export const renderCause = (cause: Cause.Cause<unknown>): string => truncate(Cause.pretty(cause), 500)

export interface Releases {
  /** Runs `effect` within `deadlineMs` (clock time) and records the outcome under `ticket`. */
  readonly run: (
    effect: Effect.Effect<unknown, unknown>,
    deadlineMs: number,
    ticket: ReleaseTicket
  ) => Effect.Effect<void>
  /** Runs the hooks of `phase`, latest registered first, each within `deadlineMs`. */
  readonly runHooks: (phase: HookPhase, deadlineMs: number) => Effect.Effect<void>
  /**
   * Registers a release that is part of the shutdown (see
   * `Lifecycle.registerRelease`); returns the function the finalizer calls.
   */
  readonly register: (
    name: string,
    timeoutMs: number | undefined
  ) => (
    release: Effect.Effect<unknown, unknown>,
    exit?: Exit.Exit<unknown, unknown>
  ) => Effect.Effect<void>
  /** Registers a hook until the returned function is called (a no-op once the shutdown started). */
  readonly addHook: (name: string, phase: HookPhase, effect: Effect.Effect<void, unknown>) => () => void
}

/** What a release that succeeded with a summary said it did. */
const detailOf = (exit: Exit.Exit<unknown, unknown> | undefined): Report.ReleaseDetail | undefined =>
  exit !== undefined && Exit.isSuccess(exit) && Report.isReleaseSummary(exit.value) ? exit.value.detail : undefined

/** Records how a bounded release or hook ended, and logs anything but a clean release. */
const recordOutcome =
  (store: Store, report: ReportBuilder) => (outcome: Budget.BoundedOutcome, ticket: ReleaseTicket) =>
    Effect.suspend(() => {
      const name = ticket.name
      const at = Budget.elapsed(store, outcome.startedAt)
      if (outcome._tag === "Skipped") {
        report.addRelease({ name, outcome: "skipped", at, durationMs: 0, deadlineMs: 0 }, ticket)
        return Effect.logWarning(`${name}: skipped, the shutdown budget is spent`)
      }
      const base = { name, at, durationMs: outcome.durationMs, deadlineMs: outcome.deadlineMs }
      if (outcome._tag === "TimedOut") {
        report.addRelease({ ...base, outcome: "timedOut" }, ticket)
        return Effect.logWarning(`${name}: did not finish within ${outcome.deadlineMs} ms; interrupted`)
      }
      if (outcome.exit !== undefined && Exit.isFailure(outcome.exit)) {
        const error = renderCause(outcome.exit.cause)
        report.addRelease({ ...base, outcome: "failed", error }, ticket)
        return Effect.logError(`${name}: release failed`, error)
      }
      if (outcome.durationMs > outcome.deadlineMs) {
        // It returned, but only after blocking past its deadline (a
        // synchronous call holding the event loop): that is a timeout too.
        report.addRelease({ ...base, outcome: "timedOut", error: "finished after its deadline" }, ticket)
        return Effect.logWarning(
          `${name}: finished ${outcome.durationMs} ms after start, past its ${outcome.deadlineMs} ms deadline`
        )
      }
      const detail = detailOf(outcome.exit)
      report.addRelease({ ...base, outcome: "released", ...(detail === undefined ? {} : { detail }) }, ticket)
      return Effect.void
    })

/** Whether the sequence has reached Releasing (or Stopped). */
const isReleasing = (state: State.State): boolean => state._tag === "Releasing" || state._tag === "Stopped"

/** The program never became Ready: start-up is still running, or unwinding. */
const isStarting = (state: State.State): boolean => {
  if (state._tag === "Starting") return true
  const shutdown = State.shutdownOf(state)
  return shutdown !== undefined && !shutdown.wasReady
}

export const make = (store: Store, report: ReportBuilder): Releases => {
  const { now } = store
  const hooks: Array<Hook> = []

  const record = recordOutcome(store, report)

  const run = (
    effect: Effect.Effect<unknown, unknown>,
    deadlineMs: number,
    ticket: ReleaseTicket
  ) =>
    Effect.gen(function*() {
      const startedAt = now()
      // Marked started before it runs, so a snapshot taken meanwhile (the
      // watchdog, a 3rd signal) names it as running, not skipped.
      report.beginRelease(ticket, Budget.elapsed(store, startedAt), Math.max(0, deadlineMs - startedAt))
      // An abandoned release stays named as open (what holds the event loop)
      // until its fiber really ends.
      const outcome = yield* Budget.bounded(store, effect, deadlineMs, () => report.abandon(ticket.name))
      yield* record(outcome, ticket)
    }).pipe(Effect.withSpan(`graceful.release ${ticket.name}`))

  const register = (name: string, timeoutMs: number | undefined) => {
    const ticket: ReleaseTicket = { name }
    report.register(ticket)
    return (
      effect: Effect.Effect<unknown, unknown>,
      exit?: Exit.Exit<unknown, unknown>
    ): Effect.Effect<void> =>
      Effect.gen(function*() {
        const state = store.get()
        if (!isReleasing(state)) {
          if (isStarting(state) && exit !== undefined && Exit.isFailure(exit)) {
            // Start-up is unwinding (a later layer failed, or a shutdown cut
            // a hung acquire): layers release what they acquired at once,
            // before the program's exit reaches the sequence. Bound and
            // report them like any release.
            yield* run(effect, now() + Math.min(timeoutMs ?? Number.POSITIVE_INFINITY, store.remaining()), ticket)
            return
          }
          if (State.shutdownOf(state)?.programEnded !== true) {
            // An inner scope closed while the program runs (or drains): an
            // ordinary release, not part of the shutdown. Waiting for
            // Releasing here could deadlock a request that is itself being
            // drained.
            report.forget(ticket)
            const bounded = timeoutMs === undefined ? effect : effect.pipe(Effect.timeout(timeoutMs))
            yield* bounded.pipe(
              Effect.catchCause((cause) => Effect.logWarning(`${name}: release failed`, renderCause(cause)))
            )
            return
          }
          yield* store.await(isReleasing)
        }
        const deadline = timeoutMs === undefined ? now() + store.remaining() : now() + timeoutMs
        yield* run(effect, deadline, ticket)
      })
  }

  return {
    run,
    register,
    runHooks: (phase, deadlineMs) =>
      Effect.suspend(() =>
        Effect.forEach(
          hooks.filter((hook) => hook.phase === phase).reverse(),
          (hook) => run(hook.effect, deadlineMs, { name: hook.name, hook: true }),
          { discard: true }
        )
      ),
    addHook: (name, phase, effect) => {
      const hook: Hook = { name, phase, effect }
      hooks.push(hook)
      return () => {
        // Hooks stay registered through the shutdown so they still run once.
        if (State.isTriggered(store.get())) return
        const index = hooks.indexOf(hook)
        if (index >= 0) hooks.splice(index, 1)
      }
    }
  }
}
