/**
 * The shutdown coordinator: one per running program. It wires the pieces
 * (phases, budget, triggers, releases, the in-flight set and the report
 * under construction) and runs the shutdown sequence once.
 *
 * @internal
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Latch from "effect/Latch"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Adapter from "../Adapter.ts"
import * as Health from "../Health.ts"
import * as Host from "../Host.ts"
import * as InFlight from "../InFlight.ts"
import * as Lifecycle from "../Lifecycle.ts"
import * as Metrics from "../Metrics.ts"
import * as Report from "../Report.ts"
import type { ShutdownConfig } from "../ShutdownConfig.ts"
import type { SignalEvent } from "../Signals.ts"
import * as Budget from "./budget.ts"
import * as InFlightState from "./inFlight.ts"
import * as Phases from "./phases.ts"
import { publish } from "./publish.ts"
import * as Releases from "./releases.ts"
import { ReportBuilder } from "./reportBuilder.ts"
import * as Triggers from "./triggers.ts"

/** Grace given to cut work to run its own finalizers before releases start. */
const CUT_GRACE_MS = 100

export { DUPLICATE_SIGNAL_MS } from "./triggers.ts"

export interface Coordinator {
  readonly lifecycle: Lifecycle.LifecycleService
  readonly onEvent: (event: SignalEvent) => void
  /** The program's own effect ended (before its scope closes). */
  readonly onProgramExit: (exit: Exit.Exit<unknown, unknown>) => void
  /** Runs the sequence from the first trigger to Stopped; returns the report. */
  readonly runSequence: (program: Fiber.Fiber<unknown, unknown>) => Effect.Effect<Report.ShutdownReport>
  /** The services the program sees. */
  readonly context: Context.Context<Services>
}

/** What a program running under the coordinator is given. */
export type Services =
  | Lifecycle.Lifecycle
  | InFlight.InFlight
  | Health.Health
  | Adapter.InFlightRegistry
  | Adapter.ReleaseRegistry

export const triggerFromExit = (exit: Exit.Exit<unknown, unknown>): Report.Trigger => {
  if (Exit.isSuccess(exit)) return { _tag: "Completed" }
  const cause = exit.cause
  if (Cause.hasDies(cause)) return { _tag: "Defect", source: "program", cause: Cause.pretty(cause) }
  if (Cause.hasFails(cause)) return { _tag: "Failed", cause: Cause.pretty(cause) }
  return { _tag: "Interrupted" }
}

const renderError = (error: unknown): string =>
  error instanceof Error ? (error.stack ?? `${error.name}: ${error.message}`) : String(error)

export const make = (config: ShutdownConfig): Effect.Effect<Coordinator> =>
  Effect.gen(function*() {
    const clock = yield* Clock.Clock
    const host = yield* Host.Host
    // Kept to run logs and the report writer from process callbacks with the
    // program's logger and clock.
    const services = yield* Effect.context<never>()
    const runSync = <A>(effect: Effect.Effect<A>): A => Effect.runSync(Effect.provideContext(effect, services))
    const now = () => clock.currentTimeMillisUnsafe()
    const ms = Duration.toMillis
    const [timeoutMs, delayMs, drainMs, emergencyMs] = [config.timeout, config.delay, config.drainTimeout, config.emergencyTimeout].map(ms) as [number, number, number, number]

    const report = new ReportBuilder()
    const inFlight = yield* InFlightState.make({ onCutOnArrival: (item) => report.addCut(item) })
    const phases = yield* Phases.make
    const budget = Budget.make({ now, timeoutMs, emergencyTimeoutMs: emergencyMs })
    let programEnded = false
    let becameReady = false
    const releases = Releases.make({
      budget,
      report,
      now,
      programEnded: () => programEnded,
      starting: () => !becameReady,
      releasing: () => Lifecycle.isAtLeast(phases.current(), "Releasing"),
      awaitReleasing: phases.await("Releasing")
    })

    // Ends the process now (3rd signal, watchdog, emergency budget of zero),
    // after publishing what is known. When the host does not exit (tests),
    // the sequence ends there too, with this report.
    let forced: Report.ShutdownReport | undefined
    const forcedLatch = Latch.makeUnsafe(false)
    const endNow = (outcome: Report.ShutdownReport["outcome"], exitCode: number): Report.ShutdownReport => {
      if (forced !== undefined) return forced
      forced = report.snapshot({ outcome, exitCode, now: now() })
      runSync(publish(forced, config.reportFile))
      forcedLatch.openUnsafe()
      host.exit(exitCode)
      return forced
    }
    const triggers = Triggers.make({
      now,
      budget,
      report,
      emergencyTimeoutMs: emergencyMs,
      endNow,
      log: (effect) => runSync(effect),
      renderError
    })

    // A timer outside every fiber: ends the process at B + slack whatever
    // hangs, re-armed when an escalation moves the deadline earlier.
    const watchdog = Effect.gen(function*() {
      const fire = () => void endNow("watchdog", 1)
      const arm = Effect.suspend(() => host.watchdog(budget.remaining() + ms(config.watchdogSlack), fire))
      yield* Effect.scoped(Effect.andThen(arm, budget.escalated))
      yield* arm
      return yield* Effect.never
    }).pipe(Effect.scoped)

    const cutInFlight = Effect.gen(function*() {
      const startedAt = now()
      const items = yield* inFlight.cut
      if (items.length === 0) return
      for (const item of items) report.addCut(item)
      yield* Effect.logWarning(
        `cut ${items.length} in-flight item(s) at the drain deadline: ${items.map((i) => `${i.kind} ${i.label}`).join(", ")}`
      )
      yield* inFlight.awaitCut(Math.min(CUT_GRACE_MS, budget.remaining()))
      report.addPhase("cutting", budget.elapsed(startedAt), now() - startedAt)
    })

    /** Runs `body` as a timed phase of the report, in its own span. */
    const timedPhase = <A>(name: Report.PhaseName, body: Effect.Effect<A>) =>
      Effect.gen(function*() {
        const startedAt = now()
        const result = yield* body
        report.addPhase(name, budget.elapsed(startedAt), now() - startedAt)
        return result
      }).pipe(Effect.withSpan(`graceful.${name}`))

    const sequence = (program: Fiber.Fiber<unknown, unknown>) =>
      Effect.gen(function*() {
        const first = yield* triggers.first
        yield* Effect.forkScoped(watchdog)
        yield* Effect.logInfo(`shutdown: ${Report.describeTrigger(first)}; budget ${timeoutMs} ms`)
        if (first._tag === "Failed") yield* Effect.logError(`the program failed:\n${first.cause}`)
        const t0 = budget.t0()
        // Triggered before Ready: nothing was served, so no lame duck and no
        // drain; a start-up step still running (a hung connect) is cut at once.
        const duringStartUp = phases.current() === "Starting"
        const drainDeadline = t0 + delayMs + drainMs
        // Hooks stop intake (listeners, consumers): bounded by the drain
        // deadline, and with a zero drain still run, within the emergency budget.
        const hookDeadline = () => Math.max(drainDeadline, now() + Math.min(emergencyMs, budget.remaining()))
        if (Report.isFastPath(first)) {
          if (emergencyMs === 0) return endNow("defect", 1)
          budget.escalate()
          // Readiness down at once; no lame duck, no drain.
          yield* phases.advance("Closing")
          report.setInFlightAtDrainStart(inFlight.reportableSizeUnsafe())
          report.setInFlightAtDrainEnd(inFlight.reportableSizeUnsafe())
        } else {
          if (first._tag !== "Completed" && first._tag !== "Interrupted" && !duringStartUp) {
            // Lame duck: readiness is down, everything else is still served.
            yield* timedPhase("draining", Effect.gen(function*() {
              yield* phases.advance("Draining")
              yield* releases.runHooks("Draining", hookDeadline())
              yield* budget.waitUntil(Effect.never, t0 + delayMs)
            }))
          }
          yield* timedPhase("closing", Effect.gen(function*() {
            const startedAt = now()
            yield* phases.advance("Closing")
            yield* releases.runHooks("Closing", hookDeadline())
            report.setInFlightAtDrainStart(inFlight.reportableSizeUnsafe())
            yield* budget.waitUntil(inFlight.awaitEmpty, duringStartUp ? now() : drainDeadline)
            report.setInFlightAtDrainEnd(inFlight.reportableSizeUnsafe())
            yield* Metric.update(Metrics.drainDuration, now() - startedAt)
          }))
        }
        yield* cutInFlight.pipe(Effect.withSpan("graceful.cutting"))
        yield* timedPhase("releasing", Effect.gen(function*() {
          yield* phases.advance("Releasing")
          yield* Effect.forkDetach(Fiber.interrupt(program))
          const finished = yield* Effect.raceFirst(
            Fiber.await(program).pipe(Effect.as(true)),
            budget.deadlineReached.pipe(Effect.as(false))
          )
          if (!finished) {
            report.markBudgetExhausted()
            yield* Effect.logError(`shutdown budget ran out before every release finished`)
          }
        }))
        yield* phases.advance("Stopped")
        const outcome = report.outcomeFor(first)
        const snapshot = report.snapshot({ outcome, exitCode: outcome === "clean" ? 0 : 1, now: now() })
        yield* Metric.update(Metrics.shutdownDuration, snapshot.durationMs)
        if (forced === undefined) yield* publish(snapshot, config.reportFile)
        return snapshot
      }).pipe(Effect.scoped, Effect.withSpan("graceful.shutdown"))

    const lifecycle: Lifecycle.LifecycleService = {
      phase: Effect.sync(phases.current),
      phaseUnsafe: phases.current,
      changes: phases.changes,
      awaitPhase: phases.await,
      trigger: Effect.sync(() => Option.fromNullishOr(triggers.current())),
      markReady: Effect.suspend(() =>
        phases.current() !== "Starting" || triggers.current() !== undefined
          ? Effect.void
          : phases.advance("Ready").pipe(
            Effect.andThen(Effect.sync(() => (becameReady = true))),
            Effect.andThen(host.notifyReady)
          )
      ),
      shutdown: (reason) => Effect.sync(() => void triggers.fire({ _tag: "Requested", reason })),
      addHook: <R>(name: string, phase: Lifecycle.HookPhase, effect: Effect.Effect<void, unknown, R>) =>
        Effect.acquireRelease(
          Effect.map(Effect.context<R>(), (context) =>
            releases.addHook(name, phase, Effect.provideContext(effect, context))),
          (remove) => Effect.sync(remove)
        ).pipe(Effect.asVoid),
      remaining: Effect.sync(() => Duration.millis(budget.remaining()))
    }
    const releaseRegistry: Adapter.ReleaseRegistryService = {
      register: (name, options) =>
        Effect.sync(() =>
          releases.register(name, options?.timeout === undefined ? undefined : ms(Duration.fromInputUnsafe(options.timeout)))
        ),
      acquire: (name, acquire) => inFlight.track(Effect.interruptible(acquire), { kind: "acquire", label: name })
    }
    const health = yield* Health.make(lifecycle)

    return {
      lifecycle,
      onEvent: triggers.onEvent,
      onProgramExit: (exit) => {
        programEnded = true
        const next = triggerFromExit(exit)
        if (!triggers.fire(next) && Report.isFastPath(next)) budget.escalate()
      },
      runSequence: (program) =>
        Effect.raceFirst(sequence(program), forcedLatch.await.pipe(Effect.map(() => forced!))),
      context: Context.make(Lifecycle.Lifecycle, lifecycle).pipe(
        Context.add(InFlight.InFlight, inFlight),
        Context.add(Adapter.InFlightRegistry, inFlight),
        Context.add(Adapter.ReleaseRegistry, releaseRegistry),
        Context.add(Health.Health, health)
      )
    }
  })
