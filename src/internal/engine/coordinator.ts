/**
 * The shutdown coordinator: one per running program. It holds the one
 * shutdown state (`store.ts`) and wires the pieces that read it (triggers,
 * releases, the sequence, the in-flight set and the report records), and
 * runs the shutdown sequence once.
 *
 * @internal
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Adapter from "../../Adapter.ts"
import * as Health from "../../Health.ts"
import * as Host from "../../Host.ts"
import * as InFlight from "../../InFlight.ts"
import * as Lifecycle from "../../Lifecycle.ts"
import type * as Report from "../../Report.ts"
import type { ShutdownConfig } from "../../ShutdownConfig.ts"
import type { SignalEvent } from "../../Signals.ts"
import * as EventLoop from "../base/eventLoop.ts"
import * as InFlightState from "./inFlight.ts"
import { publish } from "./publish.ts"
import * as Releases from "./releases.ts"
import { ReportBuilder } from "./reportBuilder.ts"
import type * as ReportFile from "./reportFile.ts"
import * as Sequence from "./sequence.ts"
import * as State from "./state.ts"
import * as Store from "./store.ts"
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

    const store = yield* Store.make({ timeout: config.timeout, emergencyTimeout: config.emergencyTimeout }, now)
    const report = new ReportBuilder()
    const inFlight = yield* InFlightState.make({ onCutOnArrival: (item) => report.addCut(item) })
    const releases = Releases.make(store, report)
    const endNow = makeEndNow({ store, report, host, reportFile, runSync })
    const onEvent = Triggers.make({ store, endNow, log: (effect) => runSync(effect), renderError })
    const sequence = Sequence.make({ config, store, host, releases, report, inFlight, endNow, reportFile, runSync })

    const lifecycle = makeLifecycle({ store, releases, host })
    const releaseRegistry = makeReleaseRegistry(releases, inFlight)
    const health = yield* Health.make(lifecycle)

    return {
      lifecycle,
      onEvent,
      onProgramExit: (exit) => void store.apply({ _tag: "ProgramEnded", trigger: triggerFromExit(exit) }),
      runSequence: (program) =>
        Effect.raceFirst(
          sequence(program),
          store.await(isForced).pipe(
            Effect.map(() => (store.get() as Extract<State.State, { _tag: "Stopped" }>).report)
          )
        ),
      context: Context.make(Lifecycle.Lifecycle, lifecycle).pipe(
        Context.add(InFlight.InFlight, inFlight),
        Context.add(Adapter.InFlightRegistry, inFlight),
        Context.add(Adapter.ReleaseRegistry, releaseRegistry),
        Context.add(Health.Health, health)
      )
    }
  })

const isForced = (state: State.State): boolean => state._tag === "Stopped" && state.forced

/** The `Lifecycle` service over the shutdown state. */
const makeLifecycle = (deps: {
  readonly store: Store.Store
  readonly releases: Releases.Releases
  readonly host: Host.HostService
}): Lifecycle.LifecycleService => {
  const { host, releases, store } = deps
  return {
    phase: Effect.sync(store.phase),
    phaseUnsafe: store.phase,
    changes: store.phases,
    awaitPhase: (phase) => store.await((state) => Lifecycle.isAtLeast(State.phaseOf(state), phase)),
    trigger: Effect.sync(() => Option.fromNullishOr(State.shutdownOf(store.get())?.trigger)),
    markReady: Effect.suspend(() =>
      store.apply({ _tag: "Ready" })._tag === "BecameReady" ? host.notifyReady : Effect.void
    ),
    shutdown: (reason) => Effect.sync(() => void store.apply({ _tag: "Requested", reason })),
    addHook: <R>(name: string, phase: Lifecycle.HookPhase, effect: Effect.Effect<void, unknown, R>) =>
      Effect.acquireRelease(
        // The hook runs long after this fiber: keep its services.
        Effect.map(
          Effect.context<R>(),
          (context) => releases.addHook(name, phase, Effect.provideContext(effect, context))
        ),
        (remove) => Effect.sync(remove)
      ).pipe(Effect.asVoid),
    remaining: Effect.sync(() => Duration.millis(store.remaining()))
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
 * host does not exit (tests), the sequence ends there too, with this report
 * (the state is `Stopped` and `forced`).
 */
const makeEndNow = (deps: {
  readonly store: Store.Store
  readonly report: ReportBuilder
  readonly host: Host.HostService
  readonly reportFile: ReportFile.ReportFileTarget | undefined
  readonly runSync: (effect: Effect.Effect<void>) => void
}) => {
  const { host, report, store } = deps
  // Set while the report is being published, before the state says Stopped:
  // a watchdog or another signal meanwhile must not publish a second one.
  let publishing: Report.ShutdownReport | undefined
  return (outcome: Report.ShutdownReport["outcome"], exitCode: number): Report.ShutdownReport => {
    const before = store.get()
    if (before._tag === "Stopped" && before.forced) return before.report
    if (publishing !== undefined) return publishing
    const header = State.headerOf(before)
    const now = store.now()
    if (outcome === "watchdog" || outcome === "forced") report.markHeld(outcome, now, EventLoop.snapshot(), header.t0)
    const forced = report.snapshot({ outcome, exitCode, now, header })
    publishing = forced
    // Published before the state changes: `runSync` may run other fibers,
    // and the sequence, woken by `Stopped`, would end the process through
    // the teardown before the report is out.
    deps.runSync(publish(forced, deps.reportFile))
    store.apply({ _tag: "Force", report: forced })
    host.exit(exitCode)
    return forced
  }
}
