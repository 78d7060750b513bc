/**
 * Signals as `npm start` delivers them.
 *
 * Ctrl-C in a terminal sends SIGINT to the whole foreground process group:
 * to npm and to the service. npm then forwards the SIGINT it got to its
 * child, the service, too. The service sees two SIGINTs a few milliseconds
 * apart, and a second signal means "stop waiting" (cut in-flight work,
 * release within the emergency budget): one keypress would skip the drain.
 *
 * {@link coalesce} wraps the live signal source so that the same signal
 * arriving again within `windowMs` (default 100 ms, far below a deliberate
 * second keypress) counts once. Everything else passes through unchanged.
 */
import { Effect } from "effect"
import * as Signals from "../../src/Signals.ts"

/**
 * A signal source that drops a repeat of the same signal within `windowMs`.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import * as Signals from "../../src/Signals.ts"
 * import { coalesce } from "./Signals.ts"
 *
 * const provide = Effect.provideService(Signals.Signals, coalesce(Signals.processSignals(process)))
 * ```
 */
export const coalesce = (source: Signals.SignalSource, windowMs = 100): Signals.SignalSource => ({
  listen: (handler) =>
    Effect.suspend(() => {
      let last: { readonly signal: Signals.SignalName; readonly at: number } | undefined
      return source.listen((event) => {
        if (event._tag === "Signal") {
          const now = Date.now()
          if (last !== undefined && last.signal === event.signal && now - last.at < windowMs) return
          last = { signal: event.signal, at: now }
        }
        handler(event)
      })
    })
})
