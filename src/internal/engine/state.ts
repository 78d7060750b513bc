/**
 * The shutdown's state: one tagged value, changed only by {@link transition},
 * a pure function a signal handler can call synchronously.
 *
 * ```
 * Starting ──Ready──▶ Ready
 *    │                  │
 *    └──── first trigger (signal, request, defect, program end) ────▶ Triggered(Pending)
 * Triggered(Pending) ─Advance─▶ Triggered(Draining) ─Advance─▶ Triggered(Closing)
 *   ─Advance─▶ Releasing ─Stop─▶ Stopped
 * any state ─Force (3rd signal, watchdog)─▶ Stopped(forced)
 * ```
 *
 * Once triggered, the state carries the shutdown: the trigger, t = 0, the
 * release deadline in force, the signals counted, whether it escalated and
 * whether the program's own effect has ended.
 *
 * @internal
 */
import * as Duration from "effect/Duration"
import type { Phase } from "../../Lifecycle.ts"
import * as Report from "../../Report.ts"

/**
 * A repeat of the same signal within this window of the last counted one is
 * one delivery seen twice (one Ctrl-C under `npm start` reaches node from
 * the terminal and again from npm). The window is anchored at the counted
 * delivery, so a storm still escalates.
 */
export const DUPLICATE_SIGNAL_WINDOW: Duration.Duration = Duration.millis(50)

/** The two budgets a shutdown is bounded by. */
export interface Limits {
  /** The global budget B. */
  readonly timeout: Duration.Duration
  /** The release budget after an escalation (2nd signal, defect). */
  readonly emergencyTimeout: Duration.Duration
}

/** A signal that was counted: the duplicate window is anchored on it. */
export interface Delivery {
  readonly name: string
  readonly at: number
}

/** What a triggered shutdown knows. Times are clock milliseconds. */
export interface Shutdown {
  readonly limits: Limits
  readonly trigger: Report.Trigger
  /** t = 0. */
  readonly t0: number
  /** The release deadline in force: t0 + B, moved earlier by an escalation. */
  readonly deadline: number
  readonly signals: number
  readonly lastSignal: Delivery | undefined
  readonly escalated: boolean
  /** The program's own effect has ended (its scope is closing). */
  readonly programEnded: boolean
  /** The program had become Ready before the trigger. */
  readonly wasReady: boolean
}

/** The stages of a triggered shutdown before Releasing. */
export type Stage = "Pending" | "Draining" | "Closing"

export type State =
  | { readonly _tag: "Starting"; readonly limits: Limits }
  | { readonly _tag: "Ready"; readonly limits: Limits }
  | { readonly _tag: "Triggered"; readonly shutdown: Shutdown; readonly stage: Stage }
  | { readonly _tag: "Releasing"; readonly shutdown: Shutdown }
  | {
    readonly _tag: "Stopped"
    readonly shutdown: Shutdown | undefined
    readonly report: Report.ShutdownReport
    /** Ended at once (3rd signal, watchdog, emergency budget of zero), not by the sequence. */
    readonly forced: boolean
  }

export type Event =
  /** The program is serving (`Lifecycle.markReady`). */
  | { readonly _tag: "Ready" }
  /** A process signal or PM2 message; `trigger` is what it records if it is the first. */
  | { readonly _tag: "Signal"; readonly name: string; readonly trigger: Report.Trigger; readonly exitCode: number }
  /** `Lifecycle.shutdown`. */
  | { readonly _tag: "Requested"; readonly reason: string }
  /** An uncaught exception or unhandled rejection: a trigger, or an escalation if one came first. */
  | { readonly _tag: "Defect"; readonly trigger: Report.Trigger }
  /** The program's own effect ended: a trigger; on the fast path an escalation if one came first. */
  | { readonly _tag: "ProgramEnded"; readonly trigger: Report.Trigger }
  /** The sequence took the fast path: move the release deadline to now + the emergency budget. */
  | { readonly _tag: "Escalate" }
  /** The sequence moved on. */
  | { readonly _tag: "Advance"; readonly to: "Draining" | "Closing" | "Releasing" }
  /** The sequence ended with this report. */
  | { readonly _tag: "Stop"; readonly report: Report.ShutdownReport }
  /** The process ends now with this report (3rd signal, watchdog). */
  | { readonly _tag: "Force"; readonly report: Report.ShutdownReport }

/** What the caller of {@link transition} must do besides keeping the new state. */
export type Reaction =
  | { readonly _tag: "None" }
  /** The program just became Ready. */
  | { readonly _tag: "BecameReady" }
  /** The first trigger: the shutdown starts now. */
  | { readonly _tag: "Triggered" }
  /** A 2nd signal: log it. `escalated` says whether this moved the deadline (it may already have moved). */
  | { readonly _tag: "SecondSignal"; readonly signal: string; readonly escalated: boolean }
  /** A defect or a fast-path program end after the trigger: the deadline moved. */
  | { readonly _tag: "Escalated" }
  /** A 3rd signal: end the process at once with this code. */
  | { readonly _tag: "Exit"; readonly exitCode: number }

export interface Step {
  readonly state: State
  readonly reaction: Reaction
}

const none: Reaction = { _tag: "None" }
const stay = (state: State): Step => ({ state, reaction: none })

export const initial = (limits: Limits): State => ({ _tag: "Starting", limits })

/** The shutdown, once there is one. */
export const shutdownOf = (state: State): Shutdown | undefined =>
  state._tag === "Starting" || state._tag === "Ready" ? undefined : state.shutdown

export const isTriggered = (state: State): boolean => shutdownOf(state) !== undefined

export const isEscalated = (state: State): boolean => shutdownOf(state)?.escalated === true

/** The public phase this state shows. */
export const phaseOf = (state: State): Phase => {
  switch (state._tag) {
    case "Starting":
    case "Ready":
    case "Releasing":
    case "Stopped":
      return state._tag
    case "Triggered":
      return state.stage === "Pending" ? (state.shutdown.wasReady ? "Ready" : "Starting") : state.stage
  }
}

/** Milliseconds left before the release deadline; the whole budget before any trigger. */
export const remaining = (state: State, now: number): number => {
  const shutdown = shutdownOf(state)
  if (shutdown === undefined) {
    return Duration.toMillis((state as { readonly limits: Limits }).limits.timeout)
  }
  return Math.max(0, shutdown.deadline - now)
}

/** The budget in force, ms after t = 0 (what the report calls `budgetMs`). */
export const budgetOf = (shutdown: Shutdown): number => shutdown.deadline - shutdown.t0

const start = (limits: Limits, trigger: Report.Trigger, now: number, wasReady: boolean): Shutdown => ({
  limits,
  trigger,
  t0: now,
  deadline: now + Duration.toMillis(limits.timeout),
  signals: 0,
  lastSignal: undefined,
  escalated: false,
  programEnded: false,
  wasReady
})

const escalate = (shutdown: Shutdown, now: number): Shutdown =>
  shutdown.escalated ? shutdown : {
    ...shutdown,
    escalated: true,
    deadline: Math.min(shutdown.deadline, now + Duration.toMillis(shutdown.limits.emergencyTimeout))
  }

const withShutdown = (state: State, shutdown: Shutdown): State => {
  switch (state._tag) {
    case "Starting":
    case "Ready":
      return { _tag: "Triggered", shutdown, stage: "Pending" }
    case "Triggered":
    case "Releasing":
      return { ...state, shutdown }
    case "Stopped":
      return state
  }
}

/** Records `trigger` when it is the first; otherwise leaves the state as it is. */
const fire = (state: State, trigger: Report.Trigger, now: number, patch?: Partial<Shutdown>): Step =>
  state._tag === "Starting" || state._tag === "Ready"
    ? {
      state: withShutdown(state, { ...start(state.limits, trigger, now, state._tag === "Ready"), ...patch }),
      reaction: { _tag: "Triggered" }
    }
    : stay(state)

const isDuplicate = (last: Delivery | undefined, name: string, now: number): boolean =>
  last !== undefined && last.name === name && now - last.at < Duration.toMillis(DUPLICATE_SIGNAL_WINDOW)

const onSignal = (state: State, event: Extract<Event, { _tag: "Signal" }>, now: number): Step => {
  const delivery: Delivery = { name: event.name, at: now }
  const shutdown = shutdownOf(state)
  if (state._tag === "Stopped" && state.forced) return stay(state)
  if (shutdown === undefined) return fire(state, event.trigger, now, { signals: 1, lastSignal: delivery })
  if (isDuplicate(shutdown.lastSignal, event.name, now)) return stay(state)
  const signals = shutdown.signals + 1
  const counted = { ...shutdown, signals, lastSignal: delivery }
  // The first signal after a programmatic trigger or a defect: counted, nothing more.
  if (signals === 1) return stay(withShutdown(state, counted))
  if (signals === 2) {
    const escalated = escalate(counted, now)
    return {
      state: withShutdown(state, escalated),
      reaction: { _tag: "SecondSignal", signal: event.name, escalated: !shutdown.escalated }
    }
  }
  return { state: withShutdown(state, counted), reaction: { _tag: "Exit", exitCode: event.exitCode } }
}

/** A trigger that, when it comes late, escalates the shutdown already under way. */
const fireOrEscalate = (
  state: State,
  trigger: Report.Trigger,
  now: number,
  escalateIfLate: boolean,
  patch?: Partial<Shutdown>
): Step => {
  const shutdown = shutdownOf(state)
  if (shutdown === undefined) return fire(state, trigger, now, patch)
  if (state._tag === "Stopped") return stay(state)
  const patched = { ...shutdown, ...patch }
  if (!escalateIfLate || shutdown.escalated) return stay(withShutdown(state, patched))
  return { state: withShutdown(state, escalate(patched, now)), reaction: { _tag: "Escalated" } }
}

const order: Record<Stage | "Releasing", number> = { Pending: 0, Draining: 1, Closing: 2, Releasing: 3 }

const advance = (state: State, to: "Draining" | "Closing" | "Releasing"): Step => {
  if (state._tag !== "Triggered" || order[state.stage] >= order[to]) return stay(state)
  return stay(to === "Releasing" ? { _tag: "Releasing", shutdown: state.shutdown } : { ...state, stage: to })
}

/** The one way the state changes. `now` is the clock's milliseconds. */
export const transition = (state: State, event: Event, now: number): Step => {
  switch (event._tag) {
    case "Ready":
      return state._tag === "Starting"
        ? { state: { _tag: "Ready", limits: state.limits }, reaction: { _tag: "BecameReady" } }
        : stay(state)
    case "Signal":
      return onSignal(state, event, now)
    case "Requested":
      return fire(state, { _tag: "Requested", reason: event.reason }, now)
    case "Defect":
      return fireOrEscalate(state, event.trigger, now, true)
    case "ProgramEnded":
      return fireOrEscalate(state, event.trigger, now, Report.isFastPath(event.trigger), { programEnded: true })
    case "Escalate": {
      const shutdown = shutdownOf(state)
      return shutdown === undefined || state._tag === "Stopped"
        ? stay(state)
        : stay(withShutdown(state, escalate(shutdown, now)))
    }
    case "Advance":
      return advance(state, event.to)
    case "Stop":
      return state._tag === "Stopped"
        ? stay(state)
        : stay({ _tag: "Stopped", shutdown: shutdownOf(state), report: event.report, forced: false })
    case "Force":
      return state._tag === "Stopped" && state.forced
        ? stay(state)
        : stay({ _tag: "Stopped", shutdown: shutdownOf(state), report: event.report, forced: true })
  }
}

/** What the report says about the shutdown itself. */
export const headerOf = (state: State): {
  readonly trigger: Report.Trigger
  readonly t0: number
  readonly signals: number
  readonly budgetMs: number | undefined
} => {
  const shutdown = shutdownOf(state)
  return shutdown === undefined
    ? { trigger: { _tag: "Interrupted" }, t0: 0, signals: 0, budgetMs: undefined }
    : { trigger: shutdown.trigger, t0: shutdown.t0, signals: shutdown.signals, budgetMs: budgetOf(shutdown) }
}
