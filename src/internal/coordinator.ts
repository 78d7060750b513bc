/**
 * The shutdown coordinator: one per running program. It owns the lifecycle
 * state, the budget, the in-flight set and the report under construction,
 * and runs the shutdown sequence once.
 *
 * Two sides meet here. Process callbacks (signals, the watchdog) are
 * synchronous and must work even when every fiber is stuck, so the state they
 * touch is plain mutable state read and written synchronously. The sequence
 * itself is an ordinary fiber.
 *
 * @internal
 */
import { writeFileSync } from "node:fs"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Latch from "effect/Latch"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as SubscriptionRef from "effect/SubscriptionRef"
import * as Health from "../Health.ts"
import * as Host from "../Host.ts"
import * as InFlight from "../InFlight.ts"
import * as Lifecycle from "../Lifecycle.ts"
import * as Metrics from "../Metrics.ts"
import * as Report from "../Report.ts"
import type { ShutdownConfig } from "../ShutdownConfig.ts"
import type { SignalEvent } from "../Signals.ts"
import { type ReleaseTicket, ReportBuilder } from "./reportBuilder.ts"

interface Hook {
  readonly name: string
  readonly phase: Lifecycle.HookPhase
  readonly effect: Effect.Effect<void, unknown>
}

/** Grace given to cut work to run its own finalizers before releases start. */
const CUT_GRACE_MS = 100

/** A repeat of the same signal within this window is one delivery seen twice. */
export const DUPLICATE_SIGNAL_MS = 50

export interface Coordinator {
  readonly lifecycle: Lifecycle.LifecycleService
  readonly onEvent: (event: SignalEvent) => void
  /** The program's own effect ended (before its scope closes). */
  readonly onProgramExit: (exit: Exit.Exit<unknown, unknown>) => void
  /** Runs the sequence from the first trigger to Stopped; returns the report. */
  readonly runSequence: (program: Fiber.Fiber<unknown, unknown>) => Effect.Effect<Report.ShutdownReport>
  /** The services the program sees. */
  readonly context: Context.Context<Lifecycle.Lifecycle | InFlight.InFlight | Health.Health>
}

export const triggerFromExit = (exit: Exit.Exit<unknown, unknown>): Report.Trigger => {
  if (Exit.isSuccess(exit)) return { _tag: "Completed" }
  const cause = exit.cause
  if (Cause.hasDies(cause)) return { _tag: "Defect", source: "program", cause: Cause.pretty(cause) }
  if (Cause.hasFails(cause)) return { _tag: "Failed", cause: Cause.pretty(cause) }
  return { _tag: "Interrupted" }
}

const renderError = (error: unknown): string =>
  error instanceof Error ? (error.stack ?? `${error.name}: ${error.message}`) : String(error)

const renderCause = (cause: Cause.Cause<unknown>): string => {
  const text = Cause.pretty(cause)
  return text.length > 500 ? `${text.slice(0, 500)}…` : text
}

export const make = (config: ShutdownConfig): Effect.Effect<Coordinator> =>
  Effect.gen(function*() {
    const clock = yield* Clock.Clock
    const host = yield* Host.Host
    // Kept to run logs and the report writer from process callbacks with the
    // program's logger and clock.
    const services = yield* Effect.context<never>()
    const runSync = <A>(effect: Effect.Effect<A>): A => Effect.runSync(Effect.provideContext(effect, services))
    const now = () => clock.currentTimeMillisUnsafe()

    const report = new ReportBuilder()
    const inFlight = yield* InFlight.make({ onCutOnArrival: (item) => report.addCut(item) })
    const phaseRef = yield* SubscriptionRef.make<Lifecycle.Phase>("Starting")
    let phaseNow: Lifecycle.Phase = "Starting"
    const reached = new Map(Lifecycle.phases.map((phase) => [phase, Latch.makeUnsafe(phase === "Starting")]))
    const hooks: Array<Hook> = []
    const triggerDeferred = Deferred.makeUnsafe<Report.Trigger>()
    let trigger: Report.Trigger | undefined
    let signals = 0
    let programEnded = false
    let forcedReport: Report.ShutdownReport | undefined
    const forcedLatch = Latch.makeUnsafe(false)

    // Budget. Fixed at the first trigger; an escalation can only shorten it.
    let t0 = 0
    let releaseDeadline = Number.POSITIVE_INFINITY
    const escalation = Latch.makeUnsafe(false)
    const remaining = () => Math.max(0, releaseDeadline - now())

    const setPhase = (phase: Lifecycle.Phase) =>
      Effect.suspend(() => {
        if (Lifecycle.isAtLeast(phaseNow, phase)) return Effect.void
        phaseNow = phase
        for (const p of Lifecycle.phases) {
          if (Lifecycle.isAtLeast(phase, p)) reached.get(p)!.openUnsafe()
        }
        return SubscriptionRef.set(phaseRef, phase)
      })

    const fire = (next: Report.Trigger): boolean => {
      if (trigger !== undefined) return false
      trigger = next
      t0 = now()
      releaseDeadline = t0 + config.timeoutMs
      report.start(next, t0)
      Deferred.doneUnsafe(triggerDeferred, Exit.succeed(next))
      return true
    }

    /** Stop waiting: cut what is in flight, release within the emergency budget. */
    const escalate = () => {
      if (escalation.isOpen()) return
      releaseDeadline = Math.min(releaseDeadline, now() + config.emergencyTimeoutMs)
      escalation.openUnsafe()
    }

    /**
     * Ends the process now (3rd signal, watchdog, emergency budget of zero),
     * after publishing what is known. When the host does not exit (tests),
     * the sequence ends there too, with this report.
     */
    const endNow = (outcome: Report.ShutdownReport["outcome"], exitCode: number): Report.ShutdownReport => {
      if (forcedReport !== undefined) return forcedReport
      const snapshot = report.snapshot({ outcome, exitCode, now: now() })
      forcedReport = snapshot
      runSync(publish(snapshot))
      forcedLatch.openUnsafe()
      host.exit(exitCode)
      return snapshot
    }

    // One Ctrl-C under `npm start` arrives twice: the terminal signals the
    // whole process group, and npm forwards its own copy to its child. The
    // same signal again within this window is that copy, not a second signal.
    let lastSignal: { readonly name: string; readonly at: number } | undefined
    const isDuplicate = (name: string): boolean => {
      const at = now()
      const duplicate = lastSignal !== undefined && lastSignal.name === name && at - lastSignal.at < DUPLICATE_SIGNAL_MS
      lastSignal = { name, at }
      return duplicate
    }

    const onEvent = (event: SignalEvent): void => {
      switch (event._tag) {
        case "Signal":
        case "Message": {
          if (isDuplicate(event._tag === "Signal" ? event.signal : event.message)) return
          signals++
          report.setSignals(signals)
          if (signals === 1) {
            fire(event._tag === "Signal" ? { _tag: "Signal", signal: event.signal } : event)
          } else if (signals === 2) {
            runSync(Effect.logWarning(`second shutdown signal: cutting in-flight work, releasing within the emergency budget (${config.emergencyTimeoutMs} ms); a third exits at once`))
            escalate()
          } else {
            endNow("forced", event._tag === "Signal" && event.signal === "SIGINT" ? 130 : 143)
          }
          return
        }
        case "Defect": {
          const cause = renderError(event.error)
          runSync(Effect.logError(`${event.source}: shutting down without draining`, cause))
          if (!fire({ _tag: "Defect", source: event.source, cause })) escalate()
          return
        }
      }
    }

    const waitOrEscalation = (effect: Effect.Effect<unknown>, untilMs: number): Effect.Effect<boolean> =>
      Effect.suspend(() => {
        const ms = untilMs - now()
        if (escalation.isOpen()) return Effect.succeed(false)
        return Effect.raceFirst(
          effect.pipe(Effect.as(true)),
          Effect.raceFirst(
            ms <= 0 ? Effect.succeed(false) : Effect.sleep(ms).pipe(Effect.as(false)),
            escalation.await.pipe(Effect.as(false))
          )
        )
      })

    const sleepUntilReleaseDeadline = Effect.suspend(() => Effect.sleep(remaining()))
    /** Completes at the release deadline, which an escalation may move earlier. */
    const releaseDeadlineReached: Effect.Effect<void> = Effect.suspend(() =>
      escalation.isOpen()
        ? sleepUntilReleaseDeadline
        : Effect.raceFirst(sleepUntilReleaseDeadline, escalation.await.pipe(Effect.andThen(sleepUntilReleaseDeadline)))
    )

    /**
     * Runs `effect` in its own fiber and waits for it until `deadlineMs` (and
     * the release deadline). A late effect is interrupted and abandoned: if it
     * ignores interruption, it cannot hold the sequence past its deadline.
     */
    const runBounded = (
      name: string,
      effect: Effect.Effect<void, unknown>,
      deadlineMs: number,
      ticket: ReleaseTicket = { name }
    ): Effect.Effect<void> =>
      Effect.gen(function*() {
        const startedAt = now()
        const deadline = Math.min(deadlineMs, releaseDeadline)
        if (deadline - startedAt <= 0) {
          report.addRelease({ name, outcome: "skipped", at: startedAt - t0, durationMs: 0, deadlineMs: 0 }, ticket)
          yield* Effect.logWarning(`${name}: skipped, the shutdown budget is spent`)
          return
        }
        report.beginRelease(ticket, startedAt - t0, deadline - startedAt)
        const fiber = yield* Effect.forkDetach(Effect.interruptible(effect), { startImmediately: true })
        const exit = yield* Effect.raceFirst(
          Fiber.await(fiber).pipe(Effect.map(Option.some)),
          Effect.raceFirst(
            Effect.sleep(deadline - startedAt),
            releaseDeadlineReached
          ).pipe(Effect.as(Option.none()))
        )
        const durationMs = now() - startedAt
        const base = { name, at: startedAt - t0, durationMs, deadlineMs: deadline - startedAt }
        if (Option.isNone(exit)) {
          yield* Effect.forkDetach(Fiber.interrupt(fiber))
          report.addRelease({ ...base, outcome: "timedOut" }, ticket)
          yield* Effect.logWarning(`${name}: did not finish within ${deadline - startedAt} ms; interrupted`)
        } else if (Exit.isFailure(exit.value)) {
          const error = renderCause(exit.value.cause)
          report.addRelease({ ...base, outcome: "failed", error }, ticket)
          yield* Effect.logError(`${name}: release failed`, error)
        } else if (durationMs > deadline - startedAt) {
          // It returned, but only after blocking past its deadline (a
          // synchronous call holding the event loop): that is a timeout too.
          report.addRelease({ ...base, outcome: "timedOut", error: "finished after its deadline" }, ticket)
          yield* Effect.logWarning(`${name}: finished ${durationMs} ms after start, past its ${deadline - startedAt} ms deadline`)
        } else {
          report.addRelease({ ...base, outcome: "released" }, ticket)
        }
      }).pipe(Effect.withSpan(`graceful.release ${name}`))

    const runHooks = (phase: Lifecycle.HookPhase, deadlineMs: number) =>
      Effect.suspend(() => {
        const selected = hooks.filter((hook) => hook.phase === phase).reverse()
        return Effect.forEach(
          selected,
          (hook) => runBounded(hook.name, hook.effect, deadlineMs, { name: hook.name, hook: true }),
          { discard: true }
        )
      })

    const publish = (snapshot: Report.ShutdownReport) =>
      Effect.gen(function*() {
        const level = snapshot.outcome === "clean" ? Effect.logInfo : snapshot.outcome === "degraded" ? Effect.logWarning : Effect.logError
        const json = Report.toJson(snapshot)
        yield* level(Report.summary(snapshot))
        yield* level("shutdown report").pipe(Effect.annotateLogs("report", json))
        if (config.reportFile !== undefined) {
          const path = config.reportFile
          yield* Effect.try(() => writeFileSync(path, json + "\n")).pipe(
            Effect.catch((error) => Effect.logWarning(`could not write the shutdown report to ${path}`, String(error)))
          )
        }
      })

    const watchdog = Effect.gen(function*() {
      const fireWatchdog = () => void endNow("watchdog", 1)
      yield* Effect.scoped(Effect.gen(function*() {
        yield* host.watchdog(remaining() + config.watchdogSlackMs, fireWatchdog)
        yield* escalation.await
      }))
      yield* host.watchdog(remaining() + config.watchdogSlackMs, fireWatchdog)
      return yield* Effect.never
    }).pipe(Effect.scoped)

    const cutInFlight = Effect.gen(function*() {
      const startedAt = now()
      const items = yield* inFlight.cut
      if (items.length === 0) return
      for (const item of items) report.addCut(item)
      yield* Effect.logWarning(`cut ${items.length} in-flight item(s) at the deadline`, items.map((i) => `${i.kind} ${i.label}`).join(", "))
      yield* inFlight.awaitCut(Math.min(CUT_GRACE_MS, remaining()))
      report.addPhase("cutting", startedAt - t0, now() - startedAt)
    })

    const runSequence = (program: Fiber.Fiber<unknown, unknown>) =>
      Effect.raceFirst(
        sequence(program),
        forcedLatch.await.pipe(Effect.map(() => forcedReport!))
      )

    const sequence = (program: Fiber.Fiber<unknown, unknown>) =>
      Effect.gen(function*() {
        const first = yield* Deferred.await(triggerDeferred)
        const watchdogFiber = yield* Effect.forkDetach(watchdog)
        yield* Effect.logInfo(`shutdown: ${Report.describeTrigger(first)}; budget ${config.timeoutMs} ms`)
        const fast = Report.isFastPath(first)
        if (fast) {
          if (config.emergencyTimeoutMs === 0) return endNow("defect", 1)
          escalate()
        }
        const drainDeadline = t0 + config.delayMs + config.drainTimeoutMs
        if (fast) {
          // Readiness down at once; no lame duck, no drain.
          yield* setPhase("Closing")
          report.setInFlightAtDrainStart(inFlight.reportableSizeUnsafe())
          report.setInFlightAtDrainEnd(inFlight.reportableSizeUnsafe())
        } else {
          if (first._tag !== "Completed" && first._tag !== "Interrupted") {
            // Lame duck: readiness is down, everything else is still served.
            yield* Effect.gen(function*() {
              const startedAt = now()
              yield* setPhase("Draining")
              yield* runHooks("Draining", drainDeadline)
              yield* waitOrEscalation(Effect.never, t0 + config.delayMs)
              report.addPhase("draining", startedAt - t0, now() - startedAt)
            }).pipe(Effect.withSpan("graceful.draining"))
          }
          yield* Effect.gen(function*() {
            const startedAt = now()
            yield* setPhase("Closing")
            yield* runHooks("Closing", drainDeadline)
            report.setInFlightAtDrainStart(inFlight.reportableSizeUnsafe())
            yield* waitOrEscalation(inFlight.awaitEmpty, drainDeadline)
            report.setInFlightAtDrainEnd(inFlight.reportableSizeUnsafe())
            yield* Metric.update(Metrics.drainDuration, now() - startedAt)
            report.addPhase("closing", startedAt - t0, now() - startedAt)
          }).pipe(Effect.withSpan("graceful.closing"))
        }
        yield* cutInFlight.pipe(Effect.withSpan("graceful.cutting"))

        yield* Effect.gen(function*() {
          const releaseStart = now()
          yield* setPhase("Releasing")
          yield* Effect.forkDetach(Fiber.interrupt(program))
          const finished = yield* Effect.raceFirst(
            Fiber.await(program).pipe(Effect.as(true)),
            releaseDeadlineReached.pipe(Effect.as(false))
          )
          if (!finished) {
            report.markBudgetExhausted()
            yield* Effect.logError(`shutdown budget ran out before every release finished`)
          }
          report.addPhase("releasing", releaseStart - t0, now() - releaseStart)
        }).pipe(Effect.withSpan("graceful.releasing"))

        yield* setPhase("Stopped")
        yield* Fiber.interrupt(watchdogFiber)
        const outcome = report.outcomeFor(first)
        const snapshot = report.snapshot({ outcome, exitCode: outcome === "clean" ? 0 : 1, now: now() })
        yield* Metric.update(Metrics.shutdownDuration, snapshot.durationMs)
        if (forcedReport === undefined) yield* publish(snapshot)
        return snapshot
      }).pipe(Effect.withSpan("graceful.shutdown"))

    const lifecycle: Lifecycle.LifecycleService = {
      phase: Effect.sync(() => phaseNow),
      phaseUnsafe: () => phaseNow,
      changes: SubscriptionRef.changes(phaseRef),
      awaitPhase: (phase) => reached.get(phase)!.await,
      trigger: Effect.sync(() => Option.fromNullishOr(trigger)),
      markReady: Effect.suspend(() => {
        if (phaseNow !== "Starting" || trigger !== undefined) return Effect.void
        return setPhase("Ready").pipe(Effect.andThen(host.notifyReady))
      }),
      shutdown: (reason) => Effect.sync(() => void fire({ _tag: "Requested", reason })),
      addHook: (name, phase, effect) =>
        Effect.acquireRelease(
          Effect.sync(() => {
            const hook: Hook = { name, phase, effect }
            hooks.push(hook)
            return hook
          }),
          (hook) =>
            Effect.sync(() => {
              // Hooks stay registered through the shutdown so they still run once.
              if (trigger !== undefined) return
              const index = hooks.indexOf(hook)
              if (index >= 0) hooks.splice(index, 1)
            })
        ).pipe(Effect.asVoid),
      registerRelease: (name, options) =>
        Effect.sync(() => {
          const ticket: ReleaseTicket = { name }
          report.register(ticket)
          return (effect: Effect.Effect<void, unknown>) =>
            Effect.gen(function*() {
              if (!Lifecycle.isAtLeast(phaseNow, "Releasing")) {
                if (!programEnded) {
                  // An inner scope closed while the program runs (or drains):
                  // an ordinary release, not part of the shutdown. Waiting for
                  // Releasing here could deadlock a request that is itself
                  // being drained.
                  report.forget(ticket)
                  const bounded = options?.timeout === undefined
                    ? effect
                    : effect.pipe(Effect.timeout(options.timeout))
                  yield* bounded.pipe(
                    Effect.catchCause((cause) => Effect.logWarning(`${name}: release failed`, renderCause(cause)))
                  )
                  return
                }
                yield* reached.get("Releasing")!.await
              }
              const deadline = options?.timeout === undefined ? releaseDeadline : now() + options.timeout
              yield* runBounded(name, effect, deadline, ticket)
            })
        }),
      remainingMillis: Effect.sync(() => trigger === undefined ? config.timeoutMs : remaining())
    }

    const health = yield* Health.make(lifecycle)

    return {
      lifecycle,
      onEvent,
      onProgramExit: (exit) => {
        programEnded = true
        const next = triggerFromExit(exit)
        if (!fire(next) && Report.isFastPath(next)) escalate()
      },
      runSequence,
      context: Context.make(Lifecycle.Lifecycle, lifecycle).pipe(
        Context.add(InFlight.InFlight, inFlight),
        Context.add(Health.Health, health)
      )
    }
  })
