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
import * as Option from "effect/Option"
import * as Adapter from "../Adapter.ts"
import * as Health from "../Health.ts"
import * as Host from "../Host.ts"
import * as InFlight from "../InFlight.ts"
import * as Lifecycle from "../Lifecycle.ts"
import * as Report from "../Report.ts"
import type { ShutdownConfig } from "../ShutdownConfig.ts"
import type { SignalEvent } from "../Signals.ts"
import * as Budget from "./budget.ts"
import * as EventLoop from "./eventLoop.ts"
import * as InFlightState from "./inFlight.ts"
import * as Phases from "./phases.ts"
import { publish } from "./publish.ts"
import * as Releases from "./releases.ts"
import * as Sequence from "./sequence.ts"
import { ReportBuilder } from "./reportBuilder.ts"
import type * as ReportFile from "./reportFile.ts"
import * as Triggers from "./triggers.ts"

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

const triggerFromExit = (exit: Exit.Exit<unknown, unknown>): Report.Trigger => {
  if (Exit.isSuccess(exit)) return { _tag: "Completed" }
  const cause = exit.cause
  if (Cause.hasDies(cause)) return { _tag: "Defect", source: "program", cause: Cause.pretty(cause) }
  if (Cause.hasFails(cause)) return { _tag: "Failed", cause: Cause.pretty(cause) }
  return { _tag: "Interrupted" }
}

const renderError = (error: unknown): string =>
  error instanceof Error ? (error.stack ?? `${error.name}: ${error.message}`) : String(error)

export const make = (
  config: ShutdownConfig,
  reportFile: ReportFile.ReportFileTarget | undefined = undefined
): Effect.Effect<Coordinator> =>
  Effect.gen(function*() {
    const clock = yield* Clock.Clock
    const host = yield* Host.Host
    // Kept to run logs and the report writer from process callbacks with the
    // program's logger and clock.
    const services = yield* Effect.context<never>()
    const runSync = <A>(effect: Effect.Effect<A>): A => Effect.runSync(Effect.provideContext(effect, services))
    const now = () => clock.currentTimeMillisUnsafe()
    const ms = Duration.toMillis
    const [timeoutMs, emergencyMs] = [config.timeout, config.emergencyTimeout].map(ms) as [number, number]

    const report = new ReportBuilder()
    const inFlight = yield* InFlightState.make({ onCutOnArrival: (item) => report.addCut(item) })
    const phases = yield* Phases.make
    const budget = Budget.make({
      now,
      timeoutMs,
      emergencyTimeoutMs: emergencyMs,
      onBudget: (budgetMs) => report.setBudget(budgetMs)
    })
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

    const { endNow, forced, forcedLatch } = makeEndNow({ report, now, host, reportFile, runSync })
    const triggers = Triggers.make({
      now,
      budget,
      report,
      emergencyTimeoutMs: emergencyMs,
      endNow,
      log: (effect) => runSync(effect),
      renderError
    })

    const sequence = Sequence.make({
      config,
      now,
      host,
      budget,
      phases,
      releases,
      report,
      inFlight,
      first: triggers.first,
      endNow,
      forced,
      reportFile,
      runSync
    })

    const lifecycle = makeLifecycle({ phases, triggers, releases, budget, host, onReady: () => (becameReady = true) })
    const releaseRegistry = makeReleaseRegistry(releases, inFlight)
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
        Effect.raceFirst(sequence(program), forcedLatch.await.pipe(Effect.map(() => forced()!))),
      context: Context.make(Lifecycle.Lifecycle, lifecycle).pipe(
        Context.add(InFlight.InFlight, inFlight),
        Context.add(Adapter.InFlightRegistry, inFlight),
        Context.add(Adapter.ReleaseRegistry, releaseRegistry),
        Context.add(Health.Health, health)
      )
    }
  })

/** The `Lifecycle` service over the coordinator's pieces. */
const makeLifecycle = (deps: {
  readonly phases: Phases.Phases
  readonly triggers: Triggers.Triggers
  readonly releases: Releases.Releases
  readonly budget: Budget.Budget
  readonly host: Host.HostService
  readonly onReady: () => void
}): Lifecycle.LifecycleService => {
  const { budget, host, phases, releases, triggers } = deps
  return {
    phase: Effect.sync(phases.current),
    phaseUnsafe: phases.current,
    changes: phases.changes,
    awaitPhase: phases.await,
    trigger: Effect.sync(() => Option.fromNullishOr(triggers.current())),
    markReady: Effect.suspend(() =>
      phases.current() !== "Starting" || triggers.current() !== undefined
        ? Effect.void
        : phases.advance("Ready").pipe(Effect.andThen(Effect.sync(deps.onReady)), Effect.andThen(host.notifyReady))
    ),
    shutdown: (reason) => Effect.sync(() => void triggers.fire({ _tag: "Requested", reason })),
    addHook: <R>(name: string, phase: Lifecycle.HookPhase, effect: Effect.Effect<void, unknown, R>) =>
      Effect.acquireRelease(
        // The hook runs long after this fiber: keep its services.
        Effect.map(Effect.context<R>(), (context) => releases.addHook(name, phase, Effect.provideContext(effect, context))),
        (remove) => Effect.sync(remove)
      ).pipe(Effect.asVoid),
    remaining: Effect.sync(() => Duration.millis(budget.remaining()))
  }
}

/** The adapters' release registry: managed releases, and acquires a shutdown can cut. */
const makeReleaseRegistry = (
  releases: Releases.Releases,
  inFlight: InFlightState.InFlightState
): Adapter.ReleaseRegistryService => ({
  register: (name, options) =>
    Effect.sync(() =>
      releases.register(
        name,
        options?.timeout === undefined ? undefined : Duration.toMillis(Duration.fromInputUnsafe(options.timeout))
      )
    ),
  acquire: (name, acquire) => inFlight.track(Effect.interruptible(acquire), { kind: "acquire", label: name })
})

/**
 * Ends the process now (3rd signal, watchdog, emergency budget of zero),
 * after publishing what is known and what holds the event loop. When the
 * host does not exit (tests), the sequence ends there too, with this report.
 */
const makeEndNow = (deps: {
  readonly report: ReportBuilder
  readonly now: () => number
  readonly host: Host.HostService
  readonly reportFile: ReportFile.ReportFileTarget | undefined
  readonly runSync: (effect: Effect.Effect<void>) => void
}) => {
  const { host, now, report } = deps
  let forced: Report.ShutdownReport | undefined
  const forcedLatch = Latch.makeUnsafe(false)
  const endNow = (outcome: Report.ShutdownReport["outcome"], exitCode: number): Report.ShutdownReport => {
    if (forced !== undefined) return forced
    if (outcome === "watchdog" || outcome === "forced") report.markHeld(outcome, now(), EventLoop.snapshot())
    forced = report.snapshot({ outcome, exitCode, now: now() })
    deps.runSync(publish(forced, deps.reportFile))
    forcedLatch.openUnsafe()
    host.exit(exitCode)
    return forced
  }
  return { endNow, forced: () => forced, forcedLatch }
}
