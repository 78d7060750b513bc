/**
 * The shutdown configuration: one global budget and the slices taken from it.
 *
 * Every value comes from the environment through Effect's `Config` (so a
 * `ConfigProvider` can supply it in tests) and can be overridden in code.
 * A value given in code wins over the environment.
 *
 * | variable | option | meaning | default |
 * |---|---|---|---|
 * | `SHUTDOWN_TIMEOUT` | `timeout` | the global budget B, trigger to exit | `25 seconds` |
 * | `SHUTDOWN_DELAY` | `delay` | lame-duck delay before listeners close | `0 seconds` (`5 seconds` when `KUBERNETES_SERVICE_HOST` is set) |
 * | `SHUTDOWN_DRAIN_TIMEOUT` | `drainTimeout` | longest wait for in-flight work after the delay | `min(15 seconds, 60% of (B - delay))` |
 * | `SHUTDOWN_EMERGENCY_TIMEOUT` | `emergencyTimeout` | release budget on a defect or a 2nd signal | `1 second` |
 * | `SHUTDOWN_REPORT_FILE` | `reportFile` | where to write the report as JSON | unset |
 * | `SHUTDOWN_RERAISE_SIGNAL` | `reraiseSignal` | after a clean signal-triggered shutdown, die by the same signal (exit 143 / 130) instead of exit 0 | `false` |
 *
 * Invalid values fail at start-up, before anything is acquired, with a
 * {@link ShutdownConfigError} naming the variable and the value.
 *
 * @since 0.1.0
 */
import * as Config from "effect/Config"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Runtime from "effect/Runtime"

/**
 * Options given in code. Each one overrides its environment variable.
 *
 * @example
 * ```ts
 * import type { ShutdownConfig } from "effect-graceful"
 *
 * const options: ShutdownConfig.ShutdownOptions = {
 *   timeout: "10 seconds",
 *   delay: "2 seconds",
 *   emergencyTimeout: "500 millis"
 * }
 * ```
 *
 * @since 0.1.0
 */
export interface ShutdownOptions {
  readonly timeout?: Duration.Input | undefined
  readonly delay?: Duration.Input | undefined
  readonly drainTimeout?: Duration.Input | undefined
  readonly emergencyTimeout?: Duration.Input | undefined
  readonly reportFile?: string | undefined
  readonly reraiseSignal?: boolean | undefined
  /**
   * How long after the budget the watchdog waits before it ends the process
   * itself. Default 50 ms.
   */
  readonly watchdogSlack?: Duration.Input | undefined
}

/**
 * The resolved, validated configuration, in milliseconds.
 *
 * @since 0.1.0
 */
export interface ShutdownConfig {
  readonly timeoutMs: number
  readonly delayMs: number
  readonly drainTimeoutMs: number
  readonly emergencyTimeoutMs: number
  readonly reportFile: string | undefined
  readonly reraiseSignal: boolean
  readonly watchdogSlackMs: number
}

/**
 * A configuration value that cannot be used. `variable` is the environment
 * variable (or the code option) at fault, `value` what it held.
 *
 * Carries exit code 1 for `NodeRuntime.runMain`.
 *
 * @example
 * ```ts
 * import { ShutdownConfig } from "effect-graceful"
 *
 * const error = new ShutdownConfig.ShutdownConfigError({
 *   variable: "SHUTDOWN_TIMEOUT",
 *   value: "-1 seconds",
 *   reason: "must not be negative"
 * })
 * error.message // 'SHUTDOWN_TIMEOUT="-1 seconds": must not be negative'
 * ```
 *
 * @since 0.1.0
 */
export class ShutdownConfigError extends Data.TaggedError("ShutdownConfigError")<{
  readonly variable: string
  readonly value: string
  readonly reason: string
}> {
  override readonly [Runtime.errorExitCode] = 1
  override get message(): string {
    return `${this.variable}=${JSON.stringify(this.value)}: ${this.reason}`
  }
}

interface Source {
  readonly variable: string
  readonly value: string
}

const fromEnv = (variable: string) =>
  Config.option(Config.String(variable)).pipe(
    Config.map(Option.map((value): Source => ({ variable, value })))
  )

const fromCode = (option: string, value: unknown): Source => ({
  variable: `option ${option}`,
  value: typeof value === "string" ? value : String(value)
})

const pick = <A>(
  codeName: string,
  codeValue: A | undefined,
  env: Option.Option<Source>
): { readonly source: Source; readonly value: A | string } | undefined => {
  if (codeValue !== undefined) return { source: fromCode(codeName, codeValue), value: codeValue }
  if (Option.isSome(env)) return { source: env.value, value: env.value.value }
  return undefined
}

const parseDuration = (
  picked: { readonly source: Source; readonly value: unknown } | undefined,
  fallbackMs: number
): Effect.Effect<number, ShutdownConfigError> => {
  if (picked === undefined) return Effect.succeed(fallbackMs)
  const { source, value } = picked
  const fail = (reason: string) => Effect.fail(new ShutdownConfigError({ ...source, reason }))
  const parsed = Duration.fromInput(value as Duration.Input)
  if (Option.isNone(parsed)) {
    return fail("not a duration (expected e.g. \"5 seconds\" or \"500 millis\")")
  }
  const duration = parsed.value
  if (Duration.isNegative(duration)) return fail("must not be negative")
  if (!Duration.isFinite(duration)) return fail("must be finite")
  return Effect.succeed(Duration.toMillis(duration))
}

const parseBoolean = (
  picked: { readonly source: Source; readonly value: unknown } | undefined
): Effect.Effect<boolean, ShutdownConfigError> => {
  if (picked === undefined) return Effect.succeed(false)
  const { source, value } = picked
  if (typeof value === "boolean") return Effect.succeed(value)
  const text = String(value).trim().toLowerCase()
  if (["true", "1", "yes", "on"].includes(text)) return Effect.succeed(true)
  if (["false", "0", "no", "off", ""].includes(text)) return Effect.succeed(false)
  return Effect.fail(new ShutdownConfigError({ ...source, reason: "not a boolean (expected true or false)" }))
}

/** The default budget: fits Kubernetes' default 30 s grace period with room. */
export const DEFAULT_TIMEOUT_MS = 25_000
/** The lame-duck delay used when `KUBERNETES_SERVICE_HOST` is set. */
export const DEFAULT_KUBERNETES_DELAY_MS = 5_000
/** The default emergency budget for a defect or a 2nd signal. */
export const DEFAULT_EMERGENCY_TIMEOUT_MS = 1_000
/** The default watchdog slack past the budget. */
export const DEFAULT_WATCHDOG_SLACK_MS = 50

/**
 * Resolves the configuration from the environment (through the current
 * `ConfigProvider`) and the given code options, and validates it.
 *
 * Fails with {@link ShutdownConfigError} when a value is not a duration, is
 * negative or infinite, when the budget is zero, when the delay or the delay
 * plus the drain timeout does not fit in the budget, or when the emergency
 * budget is longer than the budget.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { ShutdownConfig } from "effect-graceful"
 *
 * const program = Effect.gen(function*() {
 *   const config = yield* ShutdownConfig.load({ timeout: "10 seconds" })
 *   config.timeoutMs // 10000
 * })
 * ```
 *
 * @since 0.1.0
 */
export const load = (options: ShutdownOptions = {}): Effect.Effect<ShutdownConfig, ShutdownConfigError> =>
  Effect.gen(function*() {
    const env = yield* Config.all({
      timeout: fromEnv("SHUTDOWN_TIMEOUT"),
      delay: fromEnv("SHUTDOWN_DELAY"),
      drainTimeout: fromEnv("SHUTDOWN_DRAIN_TIMEOUT"),
      emergencyTimeout: fromEnv("SHUTDOWN_EMERGENCY_TIMEOUT"),
      reportFile: fromEnv("SHUTDOWN_REPORT_FILE"),
      reraiseSignal: fromEnv("SHUTDOWN_RERAISE_SIGNAL"),
      kubernetes: fromEnv("KUBERNETES_SERVICE_HOST")
    }).pipe(
      Effect.mapError((error) =>
        new ShutdownConfigError({ variable: "environment", value: "", reason: String(error) })
      )
    )
    const timeout = pick("timeout", options.timeout, env.timeout)
    const timeoutMs = yield* parseDuration(timeout, DEFAULT_TIMEOUT_MS)
    if (timeoutMs <= 0 && timeout !== undefined) {
      return yield* new ShutdownConfigError({ ...timeout.source, reason: "the budget must be greater than zero" })
    }
    const onKubernetes = Option.isSome(env.kubernetes) && env.kubernetes.value.value !== ""
    const delay = pick("delay", options.delay, env.delay)
    const delayMs = yield* parseDuration(delay, onKubernetes ? DEFAULT_KUBERNETES_DELAY_MS : 0)
    if (delayMs >= timeoutMs) {
      return yield* new ShutdownConfigError({
        ...(delay?.source ?? { variable: "SHUTDOWN_DELAY", value: `${delayMs} millis (Kubernetes default)` }),
        reason: `the lame-duck delay must be shorter than the budget SHUTDOWN_TIMEOUT (${timeoutMs} ms)`
      })
    }
    const drain = pick("drainTimeout", options.drainTimeout, env.drainTimeout)
    const drainTimeoutMs = yield* parseDuration(drain, Math.min(15_000, Math.floor((timeoutMs - delayMs) * 0.6)))
    if (drain !== undefined && delayMs + drainTimeoutMs >= timeoutMs) {
      return yield* new ShutdownConfigError({
        ...drain.source,
        reason:
          `the delay (${delayMs} ms) plus the drain timeout must be shorter than the budget SHUTDOWN_TIMEOUT (${timeoutMs} ms), leaving time to release`
      })
    }
    const emergency = pick("emergencyTimeout", options.emergencyTimeout, env.emergencyTimeout)
    const emergencyTimeoutMs = yield* parseDuration(emergency, Math.min(DEFAULT_EMERGENCY_TIMEOUT_MS, timeoutMs))
    if (emergency !== undefined && emergencyTimeoutMs > timeoutMs) {
      return yield* new ShutdownConfigError({
        ...emergency.source,
        reason: `the emergency budget must not be longer than the budget SHUTDOWN_TIMEOUT (${timeoutMs} ms)`
      })
    }
    const slack = pick("watchdogSlack", options.watchdogSlack, Option.none())
    const watchdogSlackMs = yield* parseDuration(slack, DEFAULT_WATCHDOG_SLACK_MS)
    const reportFile = options.reportFile ??
      (Option.isSome(env.reportFile) && env.reportFile.value.value !== "" ? env.reportFile.value.value : undefined)
    const reraiseSignal = yield* parseBoolean(pick("reraiseSignal", options.reraiseSignal, env.reraiseSignal))
    return {
      timeoutMs,
      delayMs,
      drainTimeoutMs,
      emergencyTimeoutMs,
      reportFile,
      reraiseSignal,
      watchdogSlackMs
    }
  })
