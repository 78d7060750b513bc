/**
 * Where a shutdown starts and how it escalates: the first trigger is
 * recorded and starts the budget; a 2nd signal escalates; a 3rd ends the
 * process at once. Runs synchronously inside process callbacks (signals,
 * uncaught exceptions), so it must work even when every fiber is stuck.
 *
 * @internal
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Report from "../Report.ts"
import { exitCodeOfSignal, type SignalEvent } from "../Signals.ts"
import type { Budget } from "./budget.ts"
import type { ReportBuilder } from "./reportBuilder.ts"

/**
 * A repeat of the same signal within this window of the last counted one is
 * one delivery seen twice (one Ctrl-C under `npm start` reaches node from
 * the terminal and again from npm). The window is anchored at the counted
 * delivery, so a storm still escalates.
 */
export const DUPLICATE_SIGNAL_MS = 50

export interface Triggers {
  /** Handles a process event (signal, IPC message, uncaught error). */
  readonly onEvent: (event: SignalEvent) => void
  /** Records `trigger` if it is the first; returns whether it was. */
  readonly fire: (trigger: Report.Trigger) => boolean
  /** The first trigger, if any. */
  readonly current: () => Report.Trigger | undefined
  /** Completes with the first trigger. */
  readonly first: Effect.Effect<Report.Trigger>
}

export const make = (options: {
  readonly now: () => number
  readonly budget: Budget
  readonly report: ReportBuilder
  readonly emergencyTimeoutMs: number
  /** Ends the process at once with this outcome and code (3rd signal). */
  readonly endNow: (outcome: Report.ShutdownReport["outcome"], exitCode: number) => void
  /** Logs from a process callback. */
  readonly log: (effect: Effect.Effect<void>) => void
  readonly renderError: (error: unknown) => string
}): Triggers => {
  const { budget, now, report } = options
  const firstDeferred = Deferred.makeUnsafe<Report.Trigger>()
  let trigger: Report.Trigger | undefined
  let signals = 0
  let lastCounted: { readonly name: string; readonly at: number } | undefined

  const fire = (next: Report.Trigger): boolean => {
    if (trigger !== undefined) return false
    trigger = next
    budget.start()
    report.start(next, now())
    Deferred.doneUnsafe(firstDeferred, Exit.succeed(next))
    return true
  }

  const isDuplicate = (name: string): boolean => {
    const at = now()
    if (lastCounted !== undefined && lastCounted.name === name && at - lastCounted.at < DUPLICATE_SIGNAL_MS) return true
    lastCounted = { name, at }
    return false
  }

  const onSignal = (name: string, first: Report.Trigger, exitCode: number) => {
    if (isDuplicate(name)) return
    signals++
    report.setSignals(signals)
    if (signals === 1) {
      fire(first)
    } else if (signals === 2) {
      options.log(Effect.logWarning(
        `second shutdown signal: cutting in-flight work, releasing within the emergency budget (${options.emergencyTimeoutMs} ms); a third exits at once`
      ))
      budget.escalate()
    } else {
      options.endNow("forced", exitCode)
    }
  }

  return {
    onEvent: (event) => {
      switch (event._tag) {
        case "Signal":
          return onSignal(event.signal, { _tag: "Signal", signal: event.signal }, exitCodeOfSignal(event.signal))
        case "Message":
          return onSignal(event.message, event, 143)
        case "Defect": {
          const cause = options.renderError(event.error)
          options.log(Effect.logError(`${event.source}: shutting down without draining`, cause))
          if (!fire({ _tag: "Defect", source: event.source, cause })) budget.escalate()
          return
        }
      }
    },
    fire,
    current: () => trigger,
    first: Deferred.await(firstDeferred)
  }
}
