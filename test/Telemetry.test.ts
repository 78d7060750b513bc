/**
 * Telemetry.provide with the real OpenTelemetry SDK and its in-memory
 * exporters: the spans and metrics of a shutdown are exported before the
 * graceful program returns (which is when `NodeRuntime.runMain` exits), and a
 * stuck export does not hold the exit past the budget.
 */
import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import { describe, expect, it } from "@effect/vitest"
import { type ExportResult, ExportResultCode } from "@opentelemetry/core"
import {
  AggregationTemporality,
  InMemoryMetricExporter,
  PeriodicExportingMetricReader
} from "@opentelemetry/sdk-metrics"
import { BatchSpanProcessor, type ReadableSpan, type SpanExporter } from "@opentelemetry/sdk-trace-base"
import { Effect, Fiber, Layer } from "effect"
import { TestClock } from "effect/testing"
import { Graceful, InFlight, type Report, Resource, Telemetry } from "../src/index.ts"
import * as GracefulTest from "../src/testing.ts"
import { counted, settle, start } from "./support/run.ts"
import { expectShutdownSpans } from "./support/spans.ts"

/**
 * Keeps what it was given. (The SDK's `InMemorySpanExporter` forgets its
 * spans at shutdown, which is exactly when this test wants to read them.)
 */
class RecordingSpanExporter implements SpanExporter {
  readonly exported: Array<ReadableSpan> = []
  export(spans: Array<ReadableSpan>, done: (result: ExportResult) => void): void {
    this.exported.push(...spans)
    done({ code: ExportResultCode.SUCCESS })
  }
  shutdown(): Promise<void> {
    return Promise.resolve()
  }
}

/** Nothing is exported by a timer within a test: only a flush exports. */
const NEVER = 3_600_000

const telemetry = (spans: SpanExporter) => {
  const metrics = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE)
  const layer = NodeSdk.layer(() => ({
    resource: { serviceName: "telemetry-test" },
    spanProcessor: new BatchSpanProcessor(spans, { scheduledDelayMillis: NEVER }),
    metricReader: new PeriodicExportingMetricReader({ exporter: metrics, exportIntervalMillis: NEVER })
  }))
  return { layer, metrics }
}

/** A service with one managed release and one job that outlives the drain. */
const service = Effect.gen(function*() {
  yield* Resource.addFinalizer("db", Effect.sleep("20 millis"))
  yield* Effect.forkScoped(InFlight.track(Effect.sleep("1 hour"), { kind: "job", label: "export-7" }))
  return yield* Effect.never
})

describe("Telemetry.provide", () => {
  it.effect("the shutdown's spans and metrics are exported before the program returns", () =>
    Effect.gen(function*() {
      const spans = new RecordingSpanExporter()
      const { layer, metrics } = telemetry(spans)
      const fiber = yield* service.pipe(
        Graceful.run({ timeout: "10 seconds", drainTimeout: "1 second" }),
        Telemetry.provide(layer),
        counted,
        Effect.forkChild
      )
      yield* settle
      yield* GracefulTest.send("SIGTERM")
      // Nothing left the batch processor yet: it exports on flush only.
      expect(spans.exported).toEqual([])
      yield* TestClock.adjust("1 second")
      yield* TestClock.adjust("100 millis")
      yield* TestClock.adjust("20 millis")
      const report = yield* Fiber.join(fiber)
      expect(report.cut.map((c) => c.label)).toEqual(["export-7"])

      const finished = spans.exported
      const names = finished.map((s) => s.name)
      expectShutdownSpans(names)
      const byName = (name: string) => finished.find((s) => s.name === name)!
      const shutdown = byName("graceful.shutdown")
      const parentOf = (span: ReadableSpan) => span.parentSpanContext?.spanId
      for (const phase of ["graceful.draining", "graceful.closing", "graceful.cutting", "graceful.releasing"]) {
        expect(parentOf(byName(phase)), phase).toBe(shutdown.spanContext().spanId)
      }
      expect(byName("graceful.release db").resource.attributes["service.name"]).toBe("telemetry-test")

      const exported = metrics.getMetrics().flatMap((m) => m.scopeMetrics.flatMap((s) => s.metrics))
      const metricNames = exported.map((m) => m.descriptor.name)
      for (const name of ["graceful_shutdown_duration_ms", "graceful_drain_duration_ms", "graceful_cut_total"]) {
        expect(metricNames, metricNames.join(", ")).toContain(name)
      }
      const cutTotal = exported.find((m) => m.descriptor.name === "graceful_cut_total")!
      expect(cutTotal.dataPoints.map((p) => p.value)).toContain(1)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("an export that never finishes is abandoned at the end of the budget", () =>
    Effect.gen(function*() {
      const stuck: SpanExporter = {
        export: (_spans: Array<ReadableSpan>, _done: (result: ExportResult) => void) => {},
        shutdown: () => new Promise<void>(() => {})
      }
      const { layer } = telemetry(stuck)
      const fiber = yield* Effect.never.pipe(
        Graceful.run({ timeout: "2 seconds" }),
        Telemetry.provide(layer, { timeout: "2 seconds" }),
        counted,
        Effect.forkChild
      )
      yield* settle
      yield* GracefulTest.send("SIGTERM")
      yield* settle
      yield* TestClock.adjust("1990 millis")
      expect(fiber.pollUnsafe()).toBeUndefined()
      yield* TestClock.adjust("10 millis")
      const report = yield* Fiber.join(fiber)
      expect(report.exitCode).toBe(0)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("the deadline comes from the report: trigger time plus the budget in force", () =>
    Effect.gen(function*() {
      const fiber = yield* start(Effect.never, { timeout: "3 seconds" })
      yield* GracefulTest.send("SIGTERM")
      const report: Report.ShutdownReport = yield* Fiber.join(fiber)
      expect(report.budgetMs).toBe(3000)
      expect(Telemetry.exportDeadline(report)).toBe(report.startedAt + 3000)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("a layer that fails to build fails the program before it starts", () =>
    Effect.gen(function*() {
      let started = false
      const error = yield* Effect.sync(() => {
        started = true
      }).pipe(
        Effect.andThen(Effect.never),
        Graceful.run(),
        Telemetry.provide(Layer.effectDiscard(Effect.fail("no collector configured" as const))),
        Effect.flip
      )
      expect(error).toBe("no collector configured")
      expect(started).toBe(false)
    }).pipe(Effect.provide(GracefulTest.layer)))
})
