/**
 * The shutdown sequence, from the first trigger to Stopped:
 *
 * 1. Draining (lame duck) for the delay: readiness 503, `Draining` hooks.
 *    Skipped on the fast path (defect, failed program), when the program
 *    ended by itself, and when the trigger came before Ready.
 * 2. Closing: `Closing` hooks stop intake; the drain waits for the in-flight
 *    set until the drain deadline (at once before Ready).
 * 3. Cutting: what is still in flight is interrupted and recorded.
 * 4. Releasing: the program is interrupted, its finalizers run, bounded by
 *    the budget.
 * 5. Stopped: the report is published; its exit code is the outcome's.
 *
 * A watchdog timer outside every fiber ends the process at B + slack.
 *
 * @internal
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Metric from "effect/Metric"
import type { HostService } from "../../Host.ts"
import * as Metrics from "../../Metrics.ts"
import * as Report from "../../Report.ts"
import type { ShutdownConfig } from "../../ShutdownConfig.ts"
import * as EventLoop from "../base/eventLoop.ts"
import * as Budget from "./budget.ts"
import type { InFlightState } from "./inFlight.ts"
import { publish } from "./publish.ts"
import type { Releases } from "./releases.ts"
import type { ReportBuilder } from "./reportBuilder.ts"
import * as ReportFile from "./reportFile.ts"
import * as State from "./state.ts"
import type { Store } from "./store.ts"

/** Grace given to cut work to run its own finalizers before releases start. */
const CUT_GRACE = Duration.millis(100)

export interface Dependencies {
  readonly config: ShutdownConfig
  readonly store: Store
  readonly host: HostService
  readonly releases: Releases
  readonly report: ReportBuilder
  readonly inFlight: InFlightState
  /** Ends the process now, publishing what is known (see the coordinator). */
  readonly endNow: (outcome: Report.ShutdownReport["outcome"], exitCode: number) => Report.ShutdownReport
  readonly reportFile: ReportFile.ReportFileTarget | undefined
  /** Runs an effect from a timer callback, with the program's services. */
  readonly runSync: (effect: Effect.Effect<void>) => void
}

/**
 * A timer outside every fiber: ends the process at B + slack whatever hangs,
 * re-armed when an escalation moves the deadline earlier.
 */
const makeWatchdog = ({ config, endNow, host, store }: Dependencies) =>
  Effect.gen(function*() {
    const fire = () => void endNow("watchdog", 1)
    const arm = Effect.suspend(() => host.watchdog(store.remaining() + Duration.toMillis(config.watchdogSlack), fire))
    yield* Effect.scoped(Effect.andThen(arm, Budget.escalated(store)))
    yield* arm
    return yield* Effect.never
  }).pipe(Effect.scoped)

/** Why the drain stopped, for the cut's log line. */
const cutReason = (state: State.State, fastPath: boolean): string => {
  const shutdown = State.shutdownOf(state)
  if (fastPath) return "on the fast path (no drain)"
  if (shutdown !== undefined && shutdown.escalated && shutdown.signals >= 2) return "at the second shutdown signal"
  if (shutdown !== undefined && !shutdown.wasReady) return "during start-up (no drain)"
  return "at the drain deadline"
}

/** Cuts what is still in flight, records it, and gives it a moment to unwind. */
const makeCut = ({ inFlight, report, store }: Dependencies) =>
  Effect.fn("graceful.cutting")(function*(fastPath: boolean) {
    const startedAt = store.now()
    const items = yield* inFlight.cut
    if (items.length === 0) return
    for (const item of items) report.addCut(item)
    yield* Effect.logWarning(
      `cut ${items.length} in-flight item(s) ${cutReason(store.get(), fastPath)}: ${
        items.map((i) => `${i.kind} ${i.label}`).join(", ")
      }`
    )
    yield* inFlight.awaitCut(Math.min(Duration.toMillis(CUT_GRACE), store.remaining()))
    report.addPhase("cutting", Budget.elapsed(store, startedAt), store.now() - startedAt)
  })

/**
 * Stopped: the outcome and its exit code, the report published; if the
 * process is still alive a moment later, what holds it is named and the
 * report written again.
 */
const makeStop = (deps: Dependencies) => (first: Report.Trigger): Effect.Effect<Report.ShutdownReport> =>
  Effect.gen(function*() {
    const { report, store } = deps
    const { now } = store
    const header = State.headerOf(store.get())
    // A release cut short or skipped by the budget: say what still holds the loop.
    if (report.overran()) report.markHeld("budget", now(), EventLoop.snapshot(), header.t0)
    const outcome = report.outcomeFor(first)
    const snapshot = report.snapshot({ outcome, exitCode: outcome === "clean" ? 0 : 1, now: now(), header })
    const forced = store.get()._tag === "Stopped"
    store.apply({ _tag: "Stop", report: snapshot })
    yield* Metric.update(Metrics.shutdownDuration, snapshot.durationMs)
    if (!forced) {
      yield* publish(snapshot, deps.reportFile)
      // Nothing should hold the process now; if something does, name it
      // and write the report again.
      deps.host.whenStillAlive(EventLoop.ALIVE_AFTER_STOP_MS, () => {
        const held = report.markHeld("aliveAfterStop", now(), EventLoop.snapshot(), header.t0)
        deps.runSync(Effect.gen(function*() {
          yield* Effect.logWarning(
            `process still alive ${EventLoop.ALIVE_AFTER_STOP_MS} ms after Stopped; ${Report.describeHeldBy(held)}`
          )
          if (deps.reportFile !== undefined) {
            yield* ReportFile.write(deps.reportFile, { ...snapshot, heldBy: held }).pipe(
              Effect.catch((error) => Effect.logWarning(error.message))
            )
          }
        }))
      })
    }
    return snapshot
  })

export const make = (deps: Dependencies) => {
  const { config, endNow, inFlight, releases, report, store } = deps
  const { now } = store
  const advance = (to: "Draining" | "Closing" | "Releasing") =>
    Effect.sync(() => void store.apply({ _tag: "Advance", to }))

  const watchdog = makeWatchdog(deps)
  const stop = makeStop(deps)
  const cutInFlight = makeCut(deps)

  /** Runs `body` as a timed phase of the report, in its own span. */
  const timedPhase = <A>(name: Report.PhaseName, body: Effect.Effect<A>) =>
    Effect.gen(function*() {
      const startedAt = now()
      const result = yield* body
      report.addPhase(name, Budget.elapsed(store, startedAt), now() - startedAt)
      return result
    }).pipe(Effect.withSpan(`graceful.${name}`))

  return Effect.fn("graceful.shutdown")(
    function*(program: Fiber.Fiber<unknown, unknown>) {
      yield* store.await(State.isTriggered)
      const shutdown = State.shutdownOf(store.get())!
      const first = shutdown.trigger
      yield* Effect.forkScoped(watchdog)
      yield* Effect.logInfo(
        `shutdown: ${Report.describeTrigger(first)}; budget ${Duration.toMillis(config.timeout)} ms`
      )
      // The cause as readable text at ERROR, as NodeRuntime.runMain prints it;
      // the report keeps it for machines.
      if (first._tag === "Failed") yield* Effect.logError(`the program failed:\n${first.cause}`)
      if (first._tag === "Defect" && first.source === "program") {
        yield* Effect.logError(`the program died:\n${first.cause}`)
      }
      const t0 = shutdown.t0
      const [delayMs, drainMs, emergencyMs] = [config.delay, config.drainTimeout, config.emergencyTimeout].map(
        Duration.toMillis
      ) as [number, number, number]
      // Triggered before Ready: nothing was served, so no lame duck and no
      // drain; a start-up step still running (a hung connect) is cut at once.
      const duringStartUp = !shutdown.wasReady
      const drainDeadline = t0 + delayMs + drainMs
      // Hooks stop intake (listeners, consumers): bounded by the drain
      // deadline, and with a zero drain still run, within the emergency budget.
      const hookDeadline = () => Math.max(drainDeadline, now() + Math.min(emergencyMs, store.remaining()))
      const fastPath = Report.isFastPath(first)
      if (fastPath) {
        if (emergencyMs === 0) return endNow("defect", 1)
        store.apply({ _tag: "Escalate" })
        // Readiness down at once; no lame duck, no drain.
        yield* advance("Closing")
        report.setInFlightAtDrainStart(inFlight.reportableSizeUnsafe())
        report.setInFlightAtDrainEnd(inFlight.reportableSizeUnsafe())
      } else {
        if (first._tag !== "Completed" && first._tag !== "Interrupted" && !duringStartUp) {
          // Lame duck: readiness is down, everything else is still served.
          yield* timedPhase(
            "draining",
            Effect.gen(function*() {
              yield* advance("Draining")
              yield* releases.runHooks("Draining", hookDeadline())
              yield* Budget.waitUntil(store, Effect.never, t0 + delayMs)
            })
          )
        }
        yield* timedPhase(
          "closing",
          Effect.gen(function*() {
            const startedAt = now()
            yield* advance("Closing")
            yield* releases.runHooks("Closing", hookDeadline())
            report.setInFlightAtDrainStart(inFlight.reportableSizeUnsafe())
            yield* Budget.waitUntil(store, inFlight.awaitEmpty, duringStartUp ? now() : drainDeadline)
            report.setInFlightAtDrainEnd(inFlight.reportableSizeUnsafe())
            yield* Metric.update(Metrics.drainDuration, now() - startedAt)
          })
        )
      }
      yield* cutInFlight(fastPath)
      yield* timedPhase(
        "releasing",
        Effect.gen(function*() {
          yield* advance("Releasing")
          yield* Effect.forkDetach(Fiber.interrupt(program))
          const finished = yield* Effect.raceFirst(
            Fiber.await(program).pipe(Effect.as(true)),
            Budget.deadlineReached(store).pipe(Effect.as(false))
          )
          if (!finished) {
            report.markBudgetExhausted()
            const held = report.markHeld("budget", now(), EventLoop.snapshot(), t0)
            yield* Effect.logError(
              `shutdown budget ran out before every release finished; ${Report.describeHeldBy(held)}`
            )
          }
        })
      )
      return yield* stop(first)
    },
    Effect.scoped
  )
}
