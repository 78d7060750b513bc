/**
 * The shutdown report: one typed value that says what a shutdown did.
 *
 * It names the trigger, gives each phase's start and duration, each
 * resource's release outcome and duration, the in-flight counts when the
 * drain started and ended, every item cut at the deadline, and the exit code.
 * The report is logged as one structured line plus a short human summary, and
 * written as JSON to `SHUTDOWN_REPORT_FILE` when that is set (Kubernetes reads
 * `/dev/termination-log`, and keeps its first 4096 bytes: see {@link fit}).
 * The summary fields come first in the JSON, the long lists last.
 *
 * All times are milliseconds. `at` fields are offsets from the first trigger
 * (t = 0), so a report reads as a timeline.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"
import { truncate } from "./internal/base/text.ts"

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
 * @category schemas
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
 * @category models
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
 * @category utils
 * @since 0.1.0
 */
export const isFastPath = (trigger: Trigger): boolean => trigger._tag === "Defect" || trigger._tag === "Failed"

/**
 * The name of a phase in the report's timeline.
 *
 * @category schemas
 * @since 0.1.0
 */
export const PhaseName = Schema.Literals(["draining", "closing", "cutting", "releasing"])

/**
 * @category models
 * @since 0.1.0
 */
export type PhaseName = typeof PhaseName.Type

/**
 * One phase of the timeline: when it started (ms after the trigger) and how
 * long it lasted.
 *
 * @category schemas
 * @since 0.1.0
 */
export const PhaseTiming = Schema.Struct({
  phase: PhaseName,
  at: Schema.Number,
  durationMs: Schema.Number
})

/**
 * @category models
 * @since 0.1.0
 */
export interface PhaseTiming extends Schema.Schema.Type<typeof PhaseTiming> {}

/**
 * How a named release ended.
 *
 * - `released`: it finished within its deadline.
 * - `failed`: it failed or died; `error` says how. Later releases still ran.
 * - `timedOut`: it was still running at its deadline and was interrupted (or
 *   abandoned, if it ignored interruption).
 * - `skipped`: the budget was already spent when its turn came.
 *
 * @category schemas
 * @since 0.1.0
 */
export const ReleaseOutcome = Schema.Literals(["released", "failed", "timedOut", "skipped"])

/**
 * @category models
 * @since 0.1.0
 */
export type ReleaseOutcome = typeof ReleaseOutcome.Type

/**
 * What a release says it did, as flat named values: a release that
 * succeeds with a {@link releaseSummary} of it has it in its `detail` (the
 * cluster handoff records its shards and entities this way).
 *
 * @category schemas
 * @since 0.2.0
 */
export const ReleaseDetail = Schema.Record(Schema.String, Schema.Union([Schema.Number, Schema.String, Schema.Boolean]))

/**
 * @category models
 * @since 0.2.0
 */
export type ReleaseDetail = typeof ReleaseDetail.Type

const ReleaseSummaryTypeId = "~effect-graceful/Report/ReleaseSummary" as const

/**
 * What a release returns to have its {@link ReleaseDetail} recorded: made
 * with {@link releaseSummary}, so that no other value a release happens to
 * return is taken for one.
 *
 * @category models
 * @since 0.2.0
 */
export interface ReleaseSummary {
  readonly [ReleaseSummaryTypeId]: typeof ReleaseSummaryTypeId
  readonly detail: ReleaseDetail
}

/**
 * Wraps what a release did, for its line of the report (`detail`).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Adapter, Report } from "effect-graceful"
 *
 * const program = Effect.gen(function*() {
 *   const registry = yield* Adapter.releaseRegistry
 *   const runRelease = yield* registry.register("cache", { timeout: "1 second" })
 *   yield* Effect.addFinalizer(() => runRelease(Effect.succeed(Report.releaseSummary({ entriesFlushed: 42 }))))
 * })
 * ```
 *
 * @category constructors
 * @since 0.2.0
 */
export const releaseSummary = (detail: ReleaseDetail): ReleaseSummary => ({
  [ReleaseSummaryTypeId]: ReleaseSummaryTypeId,
  detail
})

/**
 * Whether a value is a {@link ReleaseSummary}.
 *
 * @example
 * ```ts
 * import { Report } from "effect-graceful"
 *
 * Report.isReleaseSummary(Report.releaseSummary({ shardsHeld: 10 })) // true
 * Report.isReleaseSummary({ shardsHeld: 10 }) // false
 * ```
 *
 * @category guards
 * @since 0.2.0
 */
export const isReleaseSummary = (u: unknown): u is ReleaseSummary =>
  typeof u === "object" && u !== null && ReleaseSummaryTypeId in u

/**
 * One resource's release: its name, outcome, when it started and how long it
 * took, the deadline it was given, the error if it failed, and what it said
 * it did (`detail`, when it returned a {@link releaseSummary}).
 *
 * @category schemas
 * @since 0.1.0
 */
export const ReleaseRecord = Schema.Struct({
  name: Schema.String,
  outcome: ReleaseOutcome,
  at: Schema.Number,
  durationMs: Schema.Number,
  deadlineMs: Schema.Number,
  error: Schema.optional(Schema.String),
  detail: Schema.optional(ReleaseDetail)
})

/**
 * @category models
 * @since 0.1.0
 */
export interface ReleaseRecord extends Schema.Schema.Type<typeof ReleaseRecord> {}

/**
 * A unit of in-flight work that was still running at the drain deadline and
 * was interrupted: its kind (`request`, `job`, ...), its label (`GET /work`,
 * a job id), and its age when cut.
 *
 * @category schemas
 * @since 0.1.0
 */
export const CutItem = Schema.Struct({
  kind: Schema.String,
  label: Schema.String,
  ageMs: Schema.Number
})

/**
 * @category models
 * @since 0.1.0
 */
export interface CutItem extends Schema.Schema.Type<typeof CutItem> {}

/**
 * What held the event loop when the shutdown overran: taken when the budget
 * ran out (`budget`), when the watchdog ended the process (`watchdog`), at a
 * third signal (`forced`), or when the process was still alive a while after
 * Stopped (`aliveAfterStop`).
 *
 * - `openReleases`: this library's own releases not finished at that moment
 *   (still running or never started), in release order.
 * - `activeResources`: `process.getActiveResourcesInfo()` counted by type:
 *   what keeps Node's event loop alive (`Timeout`, `TCPSocketWrap`,
 *   `TCPServerWrap`, `FSReqCallback`, ...). Unref'd timers and handles are not
 *   listed: they do not hold the loop.
 * - `handles`: a few of those handles described (`Socket
 *   127.0.0.1:41234 -> 127.0.0.1:5432`, `Server 0.0.0.0:3000`), when Node
 *   exposes them.
 * - `resourcesUnknown`: set on a runtime that does not say what holds its
 *   loop (Bun): the two lists above are then empty because they are unknown.
 *
 * @example
 * ```ts
 * import { Report } from "effect-graceful"
 *
 * const held: Report.HeldBy = {
 *   at: 25000,
 *   reason: "watchdog",
 *   openReleases: ["db"],
 *   activeResources: { TCPSocketWrap: 1, Timeout: 1 },
 *   handles: ["Socket 127.0.0.1:41234 -> 127.0.0.1:5432"]
 * }
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export const HeldBy = Schema.Struct({
  /** When it was taken, ms after the trigger. */
  at: Schema.Number,
  reason: Schema.Literals(["budget", "watchdog", "forced", "aliveAfterStop"]),
  openReleases: Schema.Array(Schema.String),
  activeResources: Schema.Record(Schema.String, Schema.Number),
  handles: Schema.optionalKey(Schema.Array(Schema.String)),
  resourcesUnknown: Schema.optionalKey(Schema.String)
})

/**
 * @category models
 * @since 0.1.0
 */
export interface HeldBy extends Schema.Schema.Type<typeof HeldBy> {}

/**
 * Cut items of one kind, counted: how many, and the age of the oldest. Present
 * in a report {@link fit} to a size limit, where `cut` keeps only the oldest
 * few items by name.
 *
 * @category models
 * @since 0.1.0
 */
export const CutCount = Schema.Struct({
  kind: Schema.String,
  count: Schema.Number,
  oldestAgeMs: Schema.Number
})

/**
 * @category models
 * @since 0.1.0
 */
export interface CutCount extends Schema.Schema.Type<typeof CutCount> {}

/**
 * The whole report.
 *
 * `outcome` summarises: `clean` (exit 0), `degraded` (something was cut, a
 * release failed or timed out, or the budget ran out: exit 1), `defect`
 * (exit 1), `forced` (3rd signal: 130 / 143), `watchdog` (the process was
 * ended by the watchdog at the budget: exit 1).
 *
 * The fields are encoded in the order listed here: the outcome, the exit code
 * and the duration come first, and the longest lists (`releases`, `cut`)
 * last, so that a reader that keeps only the start of the text (Kubernetes
 * keeps 4096 bytes of `/dev/termination-log`) still has the summary.
 *
 * @example
 * ```ts
 * import { Report } from "effect-graceful"
 * import { Schema } from "effect"
 *
 * const json = '{"outcome":"clean","exitCode":0,"durationMs":3,"trigger":{"_tag":"Signal","signal":"SIGTERM"},' +
 *   '"startedAt":0,"signals":1,"inFlight":{"atDrainStart":0,"atDrainEnd":0},"phases":[],"hooks":[],' +
 *   '"releases":[],"cut":[]}'
 * const report = Schema.decodeUnknownSync(Report.ShutdownReport)(JSON.parse(json))
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export const ShutdownReport = Schema.Struct({
  outcome: Schema.Literals(["clean", "degraded", "defect", "forced", "watchdog"]),
  exitCode: Schema.Number,
  /** Trigger to stop, ms. */
  durationMs: Schema.Number,
  trigger: Trigger,
  /** Wall-clock time of the trigger, epoch milliseconds. */
  startedAt: Schema.Number,
  /**
   * The release deadline in force at the end, ms after the trigger: the
   * budget B, or less when a 2nd signal or a defect moved it earlier.
   */
  budgetMs: Schema.optionalKey(Schema.Number),
  /** How many shutdown signals arrived (2 = escalated). */
  signals: Schema.Number,
  /**
   * Present only in a report {@link fit} to a size limit: how many entries
   * each list lost (`cut`, `releases`, `hooks`, ...). Long texts lost their
   * end, marked `…`.
   */
  omitted: Schema.optionalKey(Schema.Record(Schema.String, Schema.Number)),
  inFlight: Schema.Struct({ atDrainStart: Schema.Number, atDrainEnd: Schema.Number }),
  phases: Schema.Array(PhaseTiming),
  /** What held the event loop when the shutdown overran; see {@link HeldBy}. */
  heldBy: Schema.optionalKey(HeldBy),
  /** Phase hooks (`Lifecycle.addHook`): closing listeners, stopping consumers. */
  hooks: Schema.Array(ReleaseRecord),
  /** Releases, in the order they ran (reverse acquisition order). */
  releases: Schema.Array(ReleaseRecord),
  /** Present only in a report {@link fit} to a size limit: every cut item, counted by kind. */
  cutByKind: Schema.optionalKey(Schema.Array(CutCount)),
  /** Each item cut (in a fitted report: the oldest few). */
  cut: Schema.Array(CutItem)
})

/**
 * @category models
 * @since 0.1.0
 */
export interface ShutdownReport extends Schema.Schema.Type<typeof ShutdownReport> {}

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
 * @category utils
 * @since 0.1.0
 */
export const summary = (report: ShutdownReport): string => {
  const lines = [
    `shutdown ${report.outcome} in ${Math.round(report.durationMs)} ms (${
      describeTrigger(report.trigger)
    }), exit ${report.exitCode}`
  ]
  if (report.phases.length > 0) {
    lines.push(
      "  " + report.phases.map((p) => `${p.phase} +${Math.round(p.at)} ms ${Math.round(p.durationMs)} ms`).join(" | ")
    )
  }
  const cutTotal = report.cut.length + (report.omitted?.cut ?? 0)
  lines.push(
    `  in flight: ${report.inFlight.atDrainStart} at drain start, ${report.inFlight.atDrainEnd} at drain end, ${cutTotal} cut`
  )
  // A few hundred cut requests must not become a few hundred log lines: the
  // oldest few by name, the rest counted by kind.
  const named = oldestFirst(report.cut).slice(0, SUMMARY_CUT_NAMED)
  for (const item of named) {
    lines.push(`  cut ${item.kind} ${item.label} (age ${Math.round(item.ageMs)} ms)`)
  }
  if (cutTotal > named.length) {
    const counts = report.cutByKind ?? countCutByKind(report.cut)
    lines.push(
      `  and ${cutTotal - named.length} more cut (` + counts.map((c) => `${c.count} ${c.kind}`).join(", ") + " in all)"
    )
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
      "  " +
        report.releases.map((r) =>
          `${r.outcome} ${r.name} (${Math.round(r.durationMs)} ms${r.error === undefined ? "" : `: ${r.error}`})`
        ).join(", ")
    )
  }
  if (report.heldBy !== undefined) lines.push("  " + describeHeldBy(report.heldBy))
  return lines.join("\n")
}

const SUMMARY_CUT_NAMED = 5

const oldestFirst = (items: ReadonlyArray<CutItem>): Array<CutItem> => [...items].sort((a, b) => b.ageMs - a.ageMs)

/**
 * Cut items counted by kind, the most frequent kind first.
 *
 * @example
 * ```ts
 * import { Report } from "effect-graceful"
 *
 * Report.countCutByKind([
 *   { kind: "request", label: "GET /a", ageMs: 900 },
 *   { kind: "request", label: "GET /b", ageMs: 400 },
 *   { kind: "job", label: "job-7", ageMs: 2000 }
 * ])
 * // [{ kind: "request", count: 2, oldestAgeMs: 900 }, { kind: "job", count: 1, oldestAgeMs: 2000 }]
 * ```
 *
 * @category summaries
 * @since 0.1.0
 */
export const countCutByKind = (items: ReadonlyArray<CutItem>): Array<CutCount> => {
  const byKind = new Map<string, { count: number; oldestAgeMs: number }>()
  for (const item of items) {
    const entry = byKind.get(item.kind)
    if (entry === undefined) byKind.set(item.kind, { count: 1, oldestAgeMs: item.ageMs })
    else {
      entry.count++
      entry.oldestAgeMs = Math.max(entry.oldestAgeMs, item.ageMs)
    }
  }
  return [...byKind].map(([kind, entry]) => ({ kind, ...entry })).sort((a, b) => b.count - a.count)
}

/**
 * One line naming what held the event loop.
 *
 * @example
 * ```ts
 * import { Report } from "effect-graceful"
 *
 * Report.describeHeldBy({
 *   at: 25000,
 *   reason: "watchdog",
 *   openReleases: ["db"],
 *   activeResources: { TCPSocketWrap: 1, Timeout: 2 }
 * })
 * // "event loop held at +25000 ms (watchdog) by: releases db; 2 Timeout, 1 TCPSocketWrap"
 * ```
 *
 * @category summaries
 * @since 0.1.0
 */
export const describeHeldBy = (held: HeldBy): string => {
  const resources = Object.entries(held.activeResources)
    .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
    .map(([type, count]) => `${count} ${type}`)
  const parts = [
    held.openReleases.length > 0 ? `releases ${held.openReleases.join(", ")}` : "no open release",
    resources.length > 0
      ? resources.join(", ")
      : held.resourcesUnknown !== undefined
      ? "active resources unknown on this runtime"
      : "no active resource"
  ]
  const handles = held.handles !== undefined && held.handles.length > 0 ? ` (${held.handles.join("; ")})` : ""
  return `event loop held at +${Math.round(held.at)} ms (${held.reason}) by: ${parts.join("; ")}${handles}`
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
 * @category utils
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
 * @category utils
 * @since 0.1.0
 */
export const toJson = (report: ShutdownReport): string => JSON.stringify(Schema.encodeSync(ShutdownReport)(report))

/**
 * Kubernetes keeps the first 4096 bytes of `/dev/termination-log`: the
 * default size limit of a report written there.
 *
 * @category encoding
 * @since 0.1.0
 */
export const TERMINATION_LOG_MAX_BYTES = 4096

/**
 * The smallest size limit {@link fit} accepts: room for the outcome, the
 * exit code, the trigger and the counts.
 *
 * @category encoding
 * @since 0.1.0
 */
export const MIN_FIT_BYTES = 512

/** How much each step of {@link fit} keeps. */
interface Level {
  /** Cut items named; the rest are counted in `cutByKind`. */
  readonly namedCut: number
  /** Longest text kept for the trigger's cause, an error, a label. */
  readonly causeChars: number
  readonly errorChars: number
  readonly labelChars: number
  /** Keep `released` entries of `releases` and `hooks` (failures are kept longer). */
  readonly keepReleased: boolean
  /** Entries kept of `releases`/`hooks` that did not release. */
  readonly problems: number
  readonly handles: number
  readonly resourceTypes: number
  readonly kinds: number
  readonly phases: boolean
}

const LEVELS: ReadonlyArray<Level> = [
  {
    namedCut: 5,
    causeChars: 2000,
    errorChars: 300,
    labelChars: 200,
    keepReleased: true,
    problems: 100,
    handles: 10,
    resourceTypes: 20,
    kinds: 20,
    phases: true
  },
  {
    namedCut: 5,
    causeChars: 1000,
    errorChars: 200,
    labelChars: 120,
    keepReleased: false,
    problems: 20,
    handles: 5,
    resourceTypes: 10,
    kinds: 10,
    phases: true
  },
  {
    namedCut: 3,
    causeChars: 400,
    errorChars: 100,
    labelChars: 80,
    keepReleased: false,
    problems: 10,
    handles: 2,
    resourceTypes: 6,
    kinds: 5,
    phases: true
  },
  {
    namedCut: 1,
    causeChars: 200,
    errorChars: 60,
    labelChars: 60,
    keepReleased: false,
    problems: 5,
    handles: 0,
    resourceTypes: 4,
    kinds: 3,
    phases: true
  },
  {
    namedCut: 0,
    causeChars: 100,
    errorChars: 0,
    labelChars: 40,
    keepReleased: false,
    problems: 2,
    handles: 0,
    resourceTypes: 2,
    kinds: 1,
    phases: true
  },
  {
    namedCut: 0,
    causeChars: 0,
    errorChars: 0,
    labelChars: 0,
    keepReleased: false,
    problems: 0,
    handles: 0,
    resourceTypes: 0,
    kinds: 0,
    phases: false
  }
]

const byteLength = (text: string): number => Buffer.byteLength(text, "utf8")

const shortenTrigger = (trigger: Trigger, chars: number): Trigger => {
  switch (trigger._tag) {
    case "Defect":
    case "Failed":
      return { ...trigger, cause: truncate(trigger.cause, chars) }
    case "Requested":
      return { ...trigger, reason: truncate(trigger.reason, Math.max(chars, 40)) }
    default:
      return trigger
  }
}

const fitAt = (report: ShutdownReport, level: Level): ShutdownReport => {
  const omitted: Record<string, number> = { ...report.omitted }
  const drop = (key: string, count: number) => {
    if (count > 0) omitted[key] = (omitted[key] ?? 0) + count
  }
  const shortenRecord = (full: ReleaseRecord): ReleaseRecord => {
    let record = full
    if (record.detail !== undefined && !level.keepReleased) {
      const { detail: _, ...rest } = record
      drop("details", 1)
      record = rest
    }
    if (record.error === undefined) return record
    if (level.errorChars === 0) {
      const { error: _, ...rest } = record
      return rest
    }
    return { ...record, error: truncate(record.error, level.errorChars) }
  }
  const keepRecords = (key: string, records: ReadonlyArray<ReleaseRecord>): Array<ReleaseRecord> => {
    let kept = level.keepReleased ? [...records] : records.filter((r) => r.outcome !== "released")
    const problems = kept.filter((r) => r.outcome !== "released")
    if (problems.length > level.problems) {
      const keep = new Set(problems.slice(0, level.problems))
      kept = kept.filter((r) => r.outcome === "released" || keep.has(r))
    }
    drop(key, records.length - kept.length)
    return kept.map(shortenRecord)
  }

  const allCut = report.cut
  const cutCounts = report.cutByKind ?? countCutByKind(allCut)
  const named = oldestFirst(allCut).slice(0, level.namedCut).map((item) => ({
    ...item,
    label: truncate(item.label, level.labelChars)
  }))
  drop("cut", allCut.length - named.length)
  const kinds = cutCounts.slice(0, level.kinds)
  drop("cutKinds", cutCounts.length - kinds.length)

  let heldBy: HeldBy | undefined
  if (report.heldBy !== undefined) {
    const held = report.heldBy
    const types = Object.entries(held.activeResources).sort((a, b) => b[1] - a[1])
    const keptTypes = types.slice(0, level.resourceTypes)
    drop("activeResources", types.length - keptTypes.length)
    const openReleases = held.openReleases.slice(0, Math.max(level.problems, 1))
    drop("openReleases", held.openReleases.length - openReleases.length)
    const handles = (held.handles ?? []).slice(0, level.handles).map((h) => truncate(h, 80))
    drop("handles", (held.handles?.length ?? 0) - handles.length)
    heldBy = {
      at: held.at,
      reason: held.reason,
      openReleases: openReleases.map((name) => truncate(name, Math.max(level.labelChars, 40))),
      activeResources: Object.fromEntries(keptTypes),
      ...(handles.length > 0 ? { handles } : {}),
      ...(held.resourcesUnknown !== undefined ? { resourcesUnknown: truncate(held.resourcesUnknown, 120) } : {})
    }
  }

  const phases = level.phases ? report.phases : []
  drop("phases", report.phases.length - phases.length)
  const hooks = keepRecords("hooks", report.hooks)
  const releases = keepRecords("releases", report.releases)

  return {
    outcome: report.outcome,
    exitCode: report.exitCode,
    durationMs: report.durationMs,
    trigger: shortenTrigger(report.trigger, level.causeChars),
    startedAt: report.startedAt,
    ...(report.budgetMs !== undefined ? { budgetMs: report.budgetMs } : {}),
    signals: report.signals,
    omitted,
    inFlight: report.inFlight,
    phases,
    ...(heldBy !== undefined ? { heldBy } : {}),
    hooks,
    releases,
    ...(allCut.length > 0 || report.cutByKind !== undefined ? { cutByKind: kinds } : {}),
    cut: named
  }
}

/**
 * The report as one line of JSON of at most `maxBytes` bytes (UTF-8).
 *
 * When {@link toJson} fits, that is the answer. Otherwise, step by step until
 * it fits:
 *
 * 1. cut items are counted by kind in `cutByKind` (count and oldest age) and
 *    only the oldest few stay named in `cut`;
 * 2. releases and hooks that released are dropped (failures and timeouts
 *    stay longest), long texts (the trigger's cause, errors, labels) are
 *    shortened and end with `…`, and `heldBy` keeps its largest entries;
 * 3. last, the phases go.
 *
 * `omitted` counts what each list lost. The outcome, the exit code, the
 * duration, the trigger and the in-flight counts are always kept, and come
 * first in the text. The result still decodes as a {@link ShutdownReport}.
 *
 * `maxBytes` below {@link MIN_FIT_BYTES} is raised to it.
 *
 * @example
 * ```ts
 * import { Report } from "effect-graceful"
 *
 * declare const report: Report.ShutdownReport
 * // What Kubernetes keeps of /dev/termination-log:
 * const text = Report.fit(report, Report.TERMINATION_LOG_MAX_BYTES)
 * ```
 *
 * @category encoding
 * @since 0.1.0
 */
export const fit = (report: ShutdownReport, maxBytes: number): string => {
  const limit = Math.max(MIN_FIT_BYTES, Math.floor(maxBytes))
  const full = toJson(report)
  if (byteLength(full) <= limit) return full
  let text = full
  for (const level of LEVELS) {
    text = toJson(fitAt(report, level))
    if (byteLength(text) <= limit) return text
  }
  // Only a trigger text beyond every bound is left (a huge `Requested`
  // reason or `Message` name): shorten it until the rest fits.
  const last = fitAt(report, LEVELS[LEVELS.length - 1]!)
  const trigger = last.trigger
  const words = trigger._tag === "Message" ? trigger.message : trigger._tag === "Requested" ? trigger.reason : ""
  for (let chars = Math.min(words.length, limit); chars >= 0; chars = chars === 0 ? -1 : Math.floor(chars / 2)) {
    const shortened: Trigger = trigger._tag === "Message"
      ? { ...trigger, message: truncate(words, chars) }
      : trigger._tag === "Requested"
      ? { ...trigger, reason: truncate(words, chars) }
      : trigger
    text = toJson({ ...last, trigger: shortened })
    if (byteLength(text) <= limit) return text
  }
  return text
}
