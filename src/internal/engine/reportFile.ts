/**
 * The file the shutdown report is written to (`SHUTDOWN_REPORT_FILE`): where
 * it is, how many bytes it may hold, a start-up check that it can be written,
 * and the write itself.
 *
 * The write is synchronous on purpose: the watchdog and a third signal write
 * the report from a process callback, right before `process.exit`.
 *
 * @internal
 */
import * as Config from "effect/Config"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { accessSync, constants, statfsSync, type Stats, statSync, writeFileSync } from "node:fs"
import { dirname, resolve } from "node:path"
import * as Report from "../../Report.ts"
import { type ShutdownConfig, ShutdownConfigError } from "../../ShutdownConfig.ts"
import { reasonOf } from "../base/errors.ts"

/** Where the report goes. */
export interface ReportFileTarget {
  readonly path: string
  /** The most bytes written, newline included; `undefined`: no limit. */
  readonly maxBytes: number | undefined
  /** Where `path` came from (`SHUTDOWN_REPORT_FILE` or `option reportFile`), for error messages. */
  readonly variable: string
}

/** Kubernetes' termination log: the path that gets a 4096-byte limit by default. */
export const TERMINATION_LOG = "/dev/termination-log"

/** The size limit when none is configured: 4096 bytes for the termination log, none elsewhere. */
export const defaultMaxBytes = (path: string): number | undefined =>
  resolve(path) === TERMINATION_LOG ? Report.TERMINATION_LOG_MAX_BYTES : undefined

/** Options given in code; each overrides its environment variable. */
export interface ReportFileOptions {
  readonly reportFile?: string | undefined
  readonly reportMaxBytes?: number | undefined
}

/** The smallest size limit accepted: room for the summary with some detail. */
export const MIN_MAX_BYTES = 1024

const parseMaxBytes = (variable: string, value: string | number): Effect.Effect<number, ShutdownConfigError> => {
  const text = String(value).trim()
  const bytes = /^\d+$/.test(text) ? Number(text) : Number.NaN
  if (!Number.isSafeInteger(bytes) || bytes < MIN_MAX_BYTES) {
    return Effect.fail(
      new ShutdownConfigError({
        variable,
        value: String(value),
        reason: `must be a whole number of bytes, at least ${MIN_MAX_BYTES}`
      })
    )
  }
  return Effect.succeed(bytes)
}

/**
 * The report file of a loaded configuration (`ShutdownConfig` is the one
 * owner of `SHUTDOWN_REPORT_FILE`), with its size limit from the code option
 * or `SHUTDOWN_REPORT_MAX_BYTES` (read here only). `undefined` when no file is
 * configured.
 */
export const load = (
  config: Pick<ShutdownConfig, "reportFile">,
  options: ReportFileOptions = {}
): Effect.Effect<ReportFileTarget | undefined, ShutdownConfigError> =>
  Effect.gen(function*() {
    const path = config.reportFile
    if (path === undefined) return undefined
    const env = yield* Config.all({
      maxBytes: Config.option(Config.String("SHUTDOWN_REPORT_MAX_BYTES"))
    }).pipe(
      Effect.mapError((error) => new ShutdownConfigError({ variable: "environment", value: "", reason: String(error) }))
    )
    const variable = options.reportFile !== undefined ? "option reportFile" : "SHUTDOWN_REPORT_FILE"
    const envMax = Option.getOrUndefined(env.maxBytes)
    const maxBytes = options.reportMaxBytes !== undefined
      ? yield* parseMaxBytes("option reportMaxBytes", options.reportMaxBytes)
      : envMax !== undefined && envMax !== ""
      ? yield* parseMaxBytes("SHUTDOWN_REPORT_MAX_BYTES", envMax)
      : defaultMaxBytes(path)
    return { path, maxBytes, variable }
  })

/** An operating-system failure: its errno code (`ENOENT`, `EROFS`, ...) and what it means here. */
interface SystemFailure {
  readonly code: string
  readonly detail: string
}

const codeOf = (error: unknown): string =>
  typeof error === "object" && error !== null && "code" in error && typeof error.code === "string"
    ? error.code
    : "UNKNOWN"

/** Free bytes for this process on the file system holding `dir` (root may use the reserved blocks). */
const freeBytes = (dir: string): number | undefined => {
  try {
    const fs = statfsSync(dir)
    const blocks = process.getuid?.() === 0 ? fs.bfree : fs.bavail
    return blocks * fs.bsize
  } catch {
    return undefined
  }
}

/** How many bytes must be free for the check to pass when there is no limit. */
const UNLIMITED_REPORT_BYTES = 16 * 1024

/**
 * Why `path` cannot take the report, or undefined when it can as far as can
 * be told without writing: the directory exists and is writable, the file (if
 * it exists) is not a directory and is writable, the file system is not
 * read-only and has room for `needBytes`. Nothing is created or changed.
 */
export const whyNotWritable = (path: string, needBytes: number): SystemFailure | undefined => {
  const absolute = resolve(path)
  const dir = dirname(absolute)
  let stats: Stats | undefined
  try {
    stats = statSync(absolute)
  } catch (error) {
    const code = codeOf(error)
    if (code !== "ENOENT") return { code, detail: reasonOf(error) }
  }
  if (stats?.isDirectory() === true) return { code: "EISDIR", detail: "it is a directory" }
  if (stats === undefined) {
    try {
      const dirStats = statSync(dir)
      if (!dirStats.isDirectory()) return { code: "ENOTDIR", detail: `${dir} is not a directory` }
    } catch (error) {
      const code = codeOf(error)
      return { code, detail: code === "ENOENT" ? `the directory ${dir} does not exist` : reasonOf(error) }
    }
    try {
      accessSync(dir, constants.W_OK)
    } catch (error) {
      return { code: codeOf(error), detail: `cannot create a file in ${dir}: ${reasonOf(error)}` }
    }
  } else {
    try {
      accessSync(absolute, constants.W_OK)
    } catch (error) {
      return { code: codeOf(error), detail: reasonOf(error) }
    }
  }
  // A device (the termination log may be one, /dev/null is one) has no free
  // space to speak of; a regular file does.
  if (stats === undefined || stats.isFile()) {
    const free = freeBytes(dir)
    if (free !== undefined && free < needBytes) {
      return {
        code: "ENOSPC",
        detail: `${free} bytes free on the file system of ${dir}, the report needs up to ${needBytes}`
      }
    }
  }
  return undefined
}

/**
 * Fails with a {@link ShutdownConfigError} naming the variable, the path and
 * the errno when the report could not be written there: a missing directory
 * (`ENOENT`), a directory in its place (`EISDIR`), no permission (`EACCES`),
 * a read-only file system (`EROFS`), a full disk (`ENOSPC`). Run it at
 * start-up, before anything is acquired.
 */
export const checkWritable = (target: ReportFileTarget): Effect.Effect<void, ShutdownConfigError> =>
  Effect.suspend(() => {
    const failure = whyNotWritable(target.path, target.maxBytes ?? UNLIMITED_REPORT_BYTES)
    if (failure === undefined) return Effect.void
    return Effect.fail(
      new ShutdownConfigError({
        variable: target.variable,
        value: target.path,
        reason: `the shutdown report cannot be written there: ${failure.code}: ${failure.detail}`
      })
    )
  })

/** The write of the report failed; `code` is the errno (`ENOSPC`, `EROFS`, ...). */
export class ReportFileError extends Data.TaggedError("ReportFileError")<{
  readonly path: string
  readonly code: string
  readonly detail: string
}> {
  override get message(): string {
    return `could not write the shutdown report to ${this.path}: ${this.detail}`
  }
}

/** The text written: the report's JSON, fit to the limit, and a newline. */
export const render = (target: Pick<ReportFileTarget, "maxBytes">, report: Report.ShutdownReport): string =>
  (target.maxBytes === undefined ? Report.toJson(report) : Report.fit(report, target.maxBytes - 1)) + "\n"

/** Writes the report (synchronously: it may run right before `process.exit`). */
export const write = (
  target: Pick<ReportFileTarget, "path" | "maxBytes">,
  report: Report.ShutdownReport
): Effect.Effect<void, ReportFileError> =>
  Effect.try({
    try: () => writeFileSync(target.path, render(target, report)),
    catch: (error) => new ReportFileError({ path: target.path, code: codeOf(error), detail: reasonOf(error) })
  })
