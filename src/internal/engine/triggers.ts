/**
 * Where a shutdown starts and how it escalates: process events (signals,
 * PM2's message, uncaught errors) become {@link State.Event}s, applied
 * synchronously inside the process callback, so they work even when every
 * fiber is stuck. What a 2nd or 3rd signal does is decided by
 * `State.transition`; this module only carries out its reaction.
 *
 * @internal
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Report from "../../Report.ts"
import { exitCodeOfSignal, type SignalEvent } from "../../Signals.ts"
import type * as State from "./state.ts"
import type { Store } from "./store.ts"

/** The event a process event is, for the state. */
export const eventOf = (event: SignalEvent, renderError: (error: unknown) => string): State.Event => {
  switch (event._tag) {
    case "Signal":
      return {
        _tag: "Signal",
        name: event.signal,
        trigger: { _tag: "Signal", signal: event.signal },
        exitCode: exitCodeOfSignal(event.signal)
      }
    case "Message":
      return { _tag: "Signal", name: event.message, trigger: event, exitCode: 143 }
    case "Defect":
      return { _tag: "Defect", trigger: { _tag: "Defect", source: event.source, cause: renderError(event.error) } }
  }
}

/** Applies a process event to the state and carries out the reaction. */
export const make = (options: {
  readonly store: Store
  /** Ends the process at once with this outcome and code (3rd signal). */
  readonly endNow: (outcome: Report.ShutdownReport["outcome"], exitCode: number) => void
  /** Logs from a process callback. */
  readonly log: (effect: Effect.Effect<void>) => void
  readonly renderError: (error: unknown) => string
}) =>
(event: SignalEvent): void => {
  const { log, store } = options
  const stateEvent = eventOf(event, options.renderError)
  if (stateEvent._tag === "Defect" && stateEvent.trigger._tag === "Defect") {
    log(Effect.logError(`${stateEvent.trigger.source}: shutting down without draining`, stateEvent.trigger.cause))
  }
  const reaction = store.apply(stateEvent)
  switch (reaction._tag) {
    case "SecondSignal": {
      const emergency = Duration.toMillis(
        (store.get() as { readonly shutdown: State.Shutdown }).shutdown.limits.emergencyTimeout
      )
      return log(Effect.logWarning(
        `second shutdown signal (${reaction.signal}): cutting in-flight work, releasing within the emergency budget (${emergency} ms); a third exits at once`
      ))
    }
    case "Exit":
      return options.endNow("forced", reaction.exitCode)
    default:
      return
  }
}

/**
 * A handler to install before the coordinator exists: events that arrive
 * meanwhile are kept, and handed over in order when {@link attach} is called.
 */
export const early = () => {
  const kept: Array<SignalEvent> = []
  let target: ((event: SignalEvent) => void) | undefined
  return {
    handler: (event: SignalEvent): void => target === undefined ? void kept.push(event) : target(event),
    attach: (onEvent: (event: SignalEvent) => void): void => {
      target = onEvent
      for (const event of kept.splice(0)) onEvent(event)
    }
  }
}
