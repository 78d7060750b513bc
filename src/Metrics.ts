/**
 * The metrics a shutdown produces, as Effect `Metric`s. Export them with any
 * Effect metrics exporter (OpenTelemetry, Prometheus) or read them with
 * `Metric.value`.
 *
 * Each phase also runs in its own span (`graceful.draining`,
 * `graceful.closing`, `graceful.releasing`, and `graceful.release <name>`
 * per resource), so a tracer shows the shutdown as a timeline.
 *
 * @example
 * ```ts
 * import { Effect, Metric } from "effect"
 * import { Metrics } from "effect-graceful"
 *
 * const inFlightNow = Metric.value(Metrics.inFlight)
 * ```
 *
 * @since 0.1.0
 */
import * as Metric from "effect/Metric"

const durationBoundaries = Metric.exponentialBoundaries({ start: 1, factor: 2, count: 18 })

/**
 * Work in flight right now (requests, jobs).
 *
 * @category metrics
 * @since 0.1.0
 */
export const inFlight: Metric.Gauge<number> = Metric.gauge("graceful_in_flight", {
  description: "Tracked work in flight"
})

/**
 * Work interrupted at the drain deadline, or cut on arrival after it.
 *
 * @category metrics
 * @since 0.1.0
 */
export const cut: Metric.Counter<number> = Metric.counter("graceful_cut_total", {
  description: "In-flight work cut at the drain deadline",
  incremental: true
})

/**
 * How long the drain took, in milliseconds.
 *
 * @category metrics
 * @since 0.1.0
 */
export const drainDuration: Metric.Histogram<number> = Metric.histogram("graceful_drain_duration_ms", {
  description: "Time from drain start until nothing was in flight or the deadline cut the rest",
  boundaries: durationBoundaries
})

/**
 * How long the whole shutdown took, trigger to stop, in milliseconds.
 *
 * @category metrics
 * @since 0.1.0
 */
export const shutdownDuration: Metric.Histogram<number> = Metric.histogram("graceful_shutdown_duration_ms", {
  description: "Time from the first trigger until the shutdown stopped",
  boundaries: durationBoundaries
})
