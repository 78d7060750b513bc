/**
 * Telemetry that leaves the process before it exits.
 *
 * The shutdown makes spans (`graceful.shutdown` around the whole sequence,
 * one per phase, `graceful.release <name>` per release and hook) and updates
 * the {@link Metrics}. An exporter that batches (OpenTelemetry's
 * `BatchSpanProcessor`, a periodic metric reader) still holds most of them in
 * memory at Stopped, and `process.exit` drops them. {@link provide} closes
 * that gap:
 *
 * 1. it builds the telemetry layer **before** the graceful program, so the
 *    tracer and the metric readers see the whole shutdown, the coordinator's
 *    own spans included (they are made outside the program's layers, so a
 *    tracer provided inside `AppLive` never sees them);
 * 2. it closes the layer **after** the program has stopped (the last
 *    release, after everything it observes): that is when the
 *    `@effect/opentelemetry` layers flush their processors and readers;
 * 3. it bounds that flush by what is left of the shutdown budget
 *    (`report.startedAt + report.budgetMs`), so an unreachable collector
 *    cannot keep the process past its grace period. A flush still running at
 *    the deadline is abandoned with a warning; the exit code is unchanged.
 *
 * It does not export anything on a forced exit (3rd signal, watchdog): the
 * budget is spent by then, and the process ends at once.
 *
 * The module does not depend on OpenTelemetry: any layer whose finalizer
 * exports works (`NodeSdk.layer`, `OtelTracer.layer`, `OtelMetrics.layer`, a
 * Prometheus push, a log shipper).
 *
 * @example
 * ```ts
 * import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
 * import { NodeRuntime } from "@effect/platform-node"
 * import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http"
 * import { BatchSpanProcessor } from "@opentelemetry/sdk-trace-base"
 * import { Layer } from "effect"
 * import { Graceful, Telemetry } from "effect-graceful"
 *
 * declare const AppLive: Layer.Layer<never>
 *
 * const TelemetryLive = NodeSdk.layer(() => ({
 *   resource: { serviceName: "orders" },
 *   spanProcessor: new BatchSpanProcessor(new OTLPTraceExporter())
 * }))
 *
 * Graceful.launch(AppLive).pipe(
 *   Telemetry.provide(TelemetryLive),
 *   NodeRuntime.runMain({ teardown: Graceful.teardown })
 * )
 * ```
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import { dual } from "effect/Function"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import type * as Report from "./Report.ts"

/**
 * Options of {@link provide}.
 *
 * @category models
 * @since 0.1.0
 */
export interface ProvideOptions {
  /**
   * The longest wait for the export when the report gives no deadline (the
   * program failed before a shutdown started, or the report predates
   * `budgetMs`). Default 1 second.
   */
  readonly timeout?: Duration.Input | undefined
}

const DEFAULT_TIMEOUT_MS = 1_000

/**
 * The epoch ms by which the export must be done: the shutdown's release
 * deadline, taken from the report.
 *
 * @example
 * ```ts
 * import { Report, Telemetry } from "effect-graceful"
 *
 * declare const report: Report.ShutdownReport
 * const deadline = Telemetry.exportDeadline(report) // report.startedAt + report.budgetMs
 * ```
 *
 * @category deadlines
 * @since 0.1.0
 */
export const exportDeadline = (report: Report.ShutdownReport): number | undefined =>
  report.budgetMs === undefined ? undefined : report.startedAt + report.budgetMs

/**
 * Provides `layer` (a tracer, metric readers, any exporter) to a graceful
 * program: built before it, closed after it has stopped, the close bounded
 * by what is left of the shutdown budget. See the module docs for the order
 * of steps.
 *
 * Returns the program's report unchanged. A failure to build `layer` fails
 * the whole effect before the program starts, like a configuration error.
 *
 * @example
 * ```ts
 * import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
 * import { BatchSpanProcessor, InMemorySpanExporter } from "@opentelemetry/sdk-trace-base"
 * import { Effect } from "effect"
 * import { Graceful, Telemetry } from "effect-graceful"
 *
 * const exporter = new InMemorySpanExporter()
 * const TelemetryLive = NodeSdk.layer(() => ({
 *   resource: { serviceName: "worker" },
 *   spanProcessor: new BatchSpanProcessor(exporter)
 * }))
 *
 * const main = Effect.never.pipe(Graceful.run(), Telemetry.provide(TelemetryLive))
 * ```
 *
 * @category layers
 * @since 0.1.0
 */
export const provide: {
  <ROut, E2, RIn2>(
    layer: Layer.Layer<ROut, E2, RIn2>,
    options?: ProvideOptions
  ): <E, R>(
    self: Effect.Effect<Report.ShutdownReport, E, R>
  ) => Effect.Effect<Report.ShutdownReport, E | E2, Exclude<R, ROut> | RIn2>
  <E, R, ROut, E2, RIn2>(
    self: Effect.Effect<Report.ShutdownReport, E, R>,
    layer: Layer.Layer<ROut, E2, RIn2>,
    options?: ProvideOptions
  ): Effect.Effect<Report.ShutdownReport, E | E2, Exclude<R, ROut> | RIn2>
} = dual(
  (args) => Effect.isEffect(args[0]),
  <E, R, ROut, E2, RIn2>(
    self: Effect.Effect<Report.ShutdownReport, E, R>,
    layer: Layer.Layer<ROut, E2, RIn2>,
    options: ProvideOptions = {}
  ): Effect.Effect<Report.ShutdownReport, E | E2, Exclude<R, ROut> | RIn2> =>
    // Uninterruptible like `Graceful.run`: the interrupt that
    // `NodeRuntime.runMain` sends on SIGTERM must not skip the export.
    Effect.uninterruptible(Effect.gen(function*() {
      const scope = yield* Scope.make()
      const built = yield* Effect.exit(Layer.buildWithScope(layer, scope))
      if (Exit.isFailure(built)) {
        yield* Scope.close(scope, built)
        return yield* built
      }
      const exit = yield* Effect.exit(Effect.provideContext(self, built.value))
      const now = yield* Clock.currentTimeMillis
      const fallbackMs = options.timeout === undefined
        ? DEFAULT_TIMEOUT_MS
        : Duration.toMillis(Duration.fromInputUnsafe(options.timeout))
      const deadline = (Exit.isSuccess(exit) ? exportDeadline(exit.value) : undefined) ?? now + fallbackMs
      const leftMs = Math.max(0, deadline - now)
      // The close runs in its own fiber, so that a flush stuck on a dead
      // collector is left behind at the deadline instead of holding the exit.
      const closing = yield* Effect.forkDetach(Scope.close(scope, exit), { startImmediately: true })
      const closed = yield* Effect.raceFirst(
        Fiber.await(closing).pipe(Effect.as(Option.some(true))),
        Effect.sleep(leftMs).pipe(Effect.as(Option.none()))
      )
      if (Option.isNone(closed)) {
        yield* Effect.logWarning(
          `telemetry: the export did not finish within what was left of the shutdown budget (${leftMs} ms); exiting without it`
        )
      }
      return yield* exit
    })) as Effect.Effect<Report.ShutdownReport, E | E2, Exclude<R, ROut> | RIn2>
)
