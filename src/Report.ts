/**
 * The shutdown report: one typed value that says what a shutdown did.
 *
 * It names the trigger, gives each phase's start and duration, each
 * resource's release outcome and duration, the in-flight counts when the
 * drain started and ended, every item cut at the deadline, and the exit code.
 * The report is logged as one structured line plus a short human summary, and
 * written as JSON to `SHUTDOWN_REPORT_FILE` when that is set (Kubernetes reads
 * `/dev/termination-log`).
 *
 * All times are milliseconds. `at` fields are offsets from the first trigger
 * (t = 0), so a report reads as a timeline.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"

/**
 * What started the shutdown. The first trigger wins and is recorded; later
 * triggers are counted as escalations (signals) or ignored.
 *
 * - `Signal`: SIGTERM, SIGINT, SIGHUP or SIGUSR2 (see `SHUTDOWN_SIGNALS`).
 * - `Message`: PM2's `shutdown` IPC message.
 * - `Requested`: a programmatic `Lifecycle.shutdown(reason)`.
 * - `Defect`: an uncaught exception, an unhandled rejection, or a defect that
 *   ended the main program (`source` says which), with its rendered cause.
 * - `Completed`: the main program returned by itself.
 * - `Failed`: the main program (or its start-up) failed with an error.
 * - `Interrupted`: the main program was interrupted from outside.
 *
 * @example
 * ```ts
 * import { Report } from "effect-graceful"
 *
 * const trigger: Report.Trigger = { _tag: "Signal", signal: "SIGTERM" }
 * ```
 *
 * @since 0.1.0
 */
export const Trigger = Schema.Union([
  Schema.TaggedStruct("Signal", { signal: Schema.Literals(["SIGTERM", "SIGINT", "SIGHUP", "SIGUSR2"]) }),
  Schema.TaggedStruct("Message", { message: Schema.String }),
  Schema.TaggedStruct("Requested", { reason: Schema.String }),
  Schema.TaggedStruct("Defect", {
    source: Schema.Literals(["uncaughtException", "unhandledRejection", "program"]),
    cause: Schema.String
  }),
  Schema.TaggedStruct("Completed", {}),
  Schema.TaggedStruct("Failed", { cause: Schema.String }),
  Schema.TaggedStruct("Interrupted", {})
])

/**
 * @since 0.1.0
 */
export type Trigger = typeof Trigger.Type

/**
 * Whether a trigger takes the fast path: no lame duck, no drain, release
 * within the emergency budget.
 *
 * @example
 * ```ts
 * import { Report } from "effect-graceful"
 *
 * Report.isFastPath({ _tag: "Defect", source: "uncaughtException", cause: "boom" }) // true
 * Report.isFastPath({ _tag: "Signal", signal: "SIGTERM" }) // false
 * ```
 *
 * @since 0.1.0
 */
export const isFastPath = (trigger: Trigger): boolean => trigger._tag === "Defect" || trigger._tag === "Failed"

/**
 * The name of a phase in the report's timeline.
 *
 * @since 0.1.0
 */
export const PhaseName = Schema.Literals(["draining", "closing", "cutting", "releasing"])

/**
 * @since 0.1.0
 */
export type PhaseName = typeof PhaseName.Type

/**
 * One phase of the timeline: when it started (ms after the trigger) and how
 * long it lasted.
 *
 * @since 0.1.0
 */
export const PhaseTiming = Schema.Struct({
  phase: PhaseName,
  at: Schema.Number,
  durationMs: Schema.Number
})

/**
 * @since 0.1.0
 */
export type PhaseTiming = typeof PhaseTiming.Type

/**
 * How a named release ended.
 *
 * - `released`: it finished within its deadline.
 * - `failed`: it failed or died; `error` says how. Later releases still ran.
 * - `timedOut`: it was still running at its deadline and was interrupted (or
 *   abandoned, if it ignored interruption).
 * - `skipped`: the budget was already spent when its turn came.
 *
 * @since 0.1.0
 */
export const ReleaseOutcome = Schema.Literals(["released", "failed", "timedOut", "skipped"])

/**
 * @since 0.1.0
 */
export type ReleaseOutcome = typeof ReleaseOutcome.Type

/**
 * One resource's release: its name, outcome, when it started and how long it
 * took, the deadline it was given, and the error if it failed.
 *
 * @since 0.1.0
 */
export const ReleaseRecord = Schema.Struct({
  name: Schema.String,
  outcome: ReleaseOutcome,
  at: Schema.Number,
  durationMs: Schema.Number,
  deadlineMs: Schema.Number,
  error: Schema.optional(Schema.String)
})

/**
 * @since 0.1.0
 */
export type ReleaseRecord = typeof ReleaseRecord.Type

/**
 * A unit of in-flight work that was still running at the drain deadline and
 * was interrupted: its kind (`request`, `job`, ...), its label (`GET /work`,
 * a job id), and its age when cut.
 *
 * @since 0.1.0
 */
export const CutItem = Schema.Struct({
  kind: Schema.String,
  label: Schema.String,
  ageMs: Schema.Number
})

/**
 * @since 0.1.0
 */
export type CutItem = typeof CutItem.Type

/**
 * The whole report.
 *
 * `outcome` summarises: `clean` (exit 0), `degraded` (something was cut, a
 * release failed or timed out, or the budget ran out: exit 1), `defect`
 * (exit 1), `forced` (3rd signal: 130 / 143), `watchdog` (the process was
 * ended by the watchdog at the budget: exit 1).
 *
 * @example
 * ```ts
 * import { Report } from "effect-graceful"
 * import { Schema } from "effect"
 *
 * const json = '{"trigger":{"_tag":"Signal","signal":"SIGTERM"},"startedAt":0,"signals":1,' +
 *   '"phases":[],"hooks":[],"releases":[],"inFlight":{"atDrainStart":0,"atDrainEnd":0},"cut":[],' +
 *   '"outcome":"clean","exitCode":0,"durationMs":3}'
 * const report = Schema.decodeUnknownSync(Report.ShutdownReport)(JSON.parse(json))
 * ```
 *
 * @since 0.1.0
 */
export const ShutdownReport = Schema.Struct({
  trigger: Trigger,
  /** Wall-clock time of the trigger, epoch milliseconds. */
  startedAt: Schema.Number,
  /** How many shutdown signals arrived (2 = escalated). */
  signals: Schema.Number,
  phases: Schema.Array(PhaseTiming),
  /** Phase hooks (`Lifecycle.addHook`): closing listeners, stopping consumers. */
  hooks: Schema.Array(ReleaseRecord),
  /** Releases, in the order they ran (reverse acquisition order). */
  releases: Schema.Array(ReleaseRecord),
  inFlight: Schema.Struct({ atDrainStart: Schema.Number, atDrainEnd: Schema.Number }),
  cut: Schema.Array(CutItem),
  outcome: Schema.Literals(["clean", "degraded", "defect", "forced", "watchdog"]),
  exitCode: Schema.Number,
  durationMs: Schema.Number
})

/**
 * @since 0.1.0
 */
export type ShutdownReport = typeof ShutdownReport.Type

/**
 * A short, human summary of a report, a few lines long.
 *
 * @example
 * ```ts
 * import { Report } from "effect-graceful"
 *
 * declare const report: Report.ShutdownReport
 * console.log(Report.summary(report))
 * // shutdown clean in 412 ms (SIGTERM), exit 0
 * //   draining +0 ms 0 ms | closing +0 ms 400 ms | releasing +400 ms 12 ms
 * //   in flight: 3 at drain start, 0 at drain end, 0 cut
 * //   hooks: 2 ran
 * //   released http (10 ms), released db (2 ms)
 * ```
 *
 * @since 0.1.0
 */
export const summary = (report: ShutdownReport): string => {
  const lines = [
    `shutdown ${report.outcome} in ${Math.round(report.durationMs)} ms (${describeTrigger(report.trigger)}), exit ${report.exitCode}`
  ]
  if (report.phases.length > 0) {
    lines.push(
      "  " + report.phases.map((p) => `${p.phase} +${Math.round(p.at)} ms ${Math.round(p.durationMs)} ms`).join(" | ")
    )
  }
  lines.push(
    `  in flight: ${report.inFlight.atDrainStart} at drain start, ${report.inFlight.atDrainEnd} at drain end, ${report.cut.length} cut`
  )
  for (const item of report.cut) {
    lines.push(`  cut ${item.kind} ${item.label} (age ${Math.round(item.ageMs)} ms)`)
  }
  const failedHooks = report.hooks.filter((h) => h.outcome !== "released")
  if (report.hooks.length > 0) {
    lines.push(
      `  hooks: ${report.hooks.length - failedHooks.length} ran` +
        failedHooks.map((h) => `, ${h.outcome} ${h.name}${h.error === undefined ? "" : ` (${h.error})`}`).join("")
    )
  }
  if (report.releases.length > 0) {
    lines.push(
      "  " + report.releases.map((r) =>
        `${r.outcome} ${r.name} (${Math.round(r.durationMs)} ms${r.error === undefined ? "" : `: ${r.error}`})`
      ).join(", ")
    )
  }
  return lines.join("\n")
}

/**
 * One word or two for a trigger, as used in the summary and in logs.
 *
 * @example
 * ```ts
 * import { Report } from "effect-graceful"
 *
 * Report.describeTrigger({ _tag: "Requested", reason: "config reload" }) // "requested: config reload"
 * ```
 *
 * @since 0.1.0
 */
export const describeTrigger = (trigger: Trigger): string => {
  switch (trigger._tag) {
    case "Signal":
      return trigger.signal
    case "Message":
      return `message ${trigger.message}`
    case "Requested":
      return `requested: ${trigger.reason}`
    case "Defect":
      return `defect (${trigger.source})`
    case "Completed":
      return "program completed"
    case "Failed":
      return "program failed"
    case "Interrupted":
      return "interrupted"
  }
}

/**
 * The report encoded as a JSON string, one line.
 *
 * @example
 * ```ts
 * import { Report } from "effect-graceful"
 *
 * declare const report: Report.ShutdownReport
 * const line = Report.toJson(report)
 * ```
 *
 * @since 0.1.0
 */
export const toJson = (report: ShutdownReport): string =>
  JSON.stringify(Schema.encodeSync(ShutdownReport)(report))
