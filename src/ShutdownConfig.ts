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
 * | `SHUTDOWN_REPORT_MAX_BYTES` | `reportMaxBytes` | the most bytes written there (see `Report.fit`) | `4096` for `/dev/termination-log`, else no limit |
 * | `SHUTDOWN_RERAISE_SIGNAL` | `reraiseSignal` | after a clean signal-triggered shutdown, die by the same signal (exit 143 / 130) instead of exit 0 | `false` |
 * | `SHUTDOWN_SIGNALS` | `signals` | the signals that trigger a shutdown, comma-separated, from SIGTERM, SIGINT, SIGHUP, SIGUSR2 | `SIGTERM,SIGINT,SIGHUP` |
 *
 * Durations are written as Effect writes them (`5 seconds`, `500 millis`) or
 * as Go, Kubernetes and Spring do (`5s`, `500ms`, `1m30s`). Each is a whole
 * number of milliseconds from 0 to 24 hours (Node's timers overflow past
 * about 24.8 days); the budget is at least 1 ms. A drain timeout of zero
 * means: cut what is in flight as soon as the listeners are closed, then
 * release normally.
 *
 * Invalid values fail at start-up, before anything is acquired, with a
 * {@link ShutdownConfigError} naming the variable and the value.
 *
 * @since 0.1.0
 */
import * as Config from "effect/Config"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Runtime from "effect/Runtime"
import * as DurationText from "./internal/base/duration.ts"
import { defaultSignals, type SignalName, signalNames } from "./Signals.ts"

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
 * @category models
 * @since 0.1.0
 */
export interface ShutdownOptions {
  /** The global budget B, trigger to exit (`SHUTDOWN_TIMEOUT`). */
  readonly timeout?: Duration.Input | undefined
  /** The lame-duck delay before listeners close (`SHUTDOWN_DELAY`). */
  readonly delay?: Duration.Input | undefined
  /** The longest wait for in-flight work after the delay (`SHUTDOWN_DRAIN_TIMEOUT`). */
  readonly drainTimeout?: Duration.Input | undefined
  /** The release budget on a defect or a 2nd signal (`SHUTDOWN_EMERGENCY_TIMEOUT`). */
  readonly emergencyTimeout?: Duration.Input | undefined
  /** Where to write the report as JSON (`SHUTDOWN_REPORT_FILE`). */
  readonly reportFile?: string | undefined
  /** The most bytes the report file gets (`SHUTDOWN_REPORT_MAX_BYTES`). */
  readonly reportMaxBytes?: number | undefined
  /** Die by the triggering signal after a clean shutdown (`SHUTDOWN_RERAISE_SIGNAL`). */
  readonly reraiseSignal?: boolean | undefined
  /** The signals that trigger a shutdown (`SHUTDOWN_SIGNALS`). */
  readonly signals?: ReadonlyArray<SignalName> | undefined
  /**
   * How long after the budget the watchdog waits before it ends the process
   * itself. Default 50 ms.
   */
  readonly watchdogSlack?: Duration.Input | undefined
}

/**
 * The resolved, validated configuration.
 *
 * @category models
 * @since 0.1.0
 */
export interface ShutdownConfig {
  readonly timeout: Duration.Duration
  readonly delay: Duration.Duration
  readonly drainTimeout: Duration.Duration
  readonly emergencyTimeout: Duration.Duration
  readonly reportFile: string | undefined
  readonly reraiseSignal: boolean
  readonly signals: ReadonlyArray<SignalName>
  readonly watchdogSlack: Duration.Duration
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
 * @category errors
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

/** Where a value came from: an environment variable or a code option. */
interface Source {
  readonly variable: string
  readonly value: string
}

interface Picked<A> {
  readonly source: Source
  readonly value: A | string
}

const fromEnv = (variable: string) =>
  Config.option(Config.String(variable)).pipe(
    Config.map(
      Option.flatMap((value) => value.trim() === "" ? Option.none() : Option.some<Source>({ variable, value }))
    )
  )

const pick = <A>(option: string, codeValue: A | undefined, env: Option.Option<Source>): Picked<A> | undefined => {
  if (codeValue !== undefined) {
    const value = typeof codeValue === "string"
      ? codeValue
      : Array.isArray(codeValue)
      ? codeValue.join(",")
      : String(codeValue)
    return { source: { variable: `option ${option}`, value }, value: codeValue }
  }
  if (Option.isSome(env)) return { source: env.value, value: env.value.value }
  return undefined
}

const fail = (source: Source, reason: string) => Effect.fail(new ShutdownConfigError({ ...source, reason }))

/**
 * The longest duration accepted: far below the ~24.8 days where Node's timers overflow.
 *
 * @category constants
 * @since 0.2.0
 */
export const MAX_DURATION: Duration.Duration = Duration.hours(24)

const parseDuration = (
  picked: Picked<Duration.Input> | undefined,
  fallback: Duration.Duration
): Effect.Effect<Duration.Duration, ShutdownConfigError> => {
  if (picked === undefined) return Effect.succeed(fallback)
  const parsed = DurationText.parse(picked.value as Duration.Input)
  if (Option.isNone(parsed)) {
    return fail(picked.source, "not a duration (expected e.g. \"5 seconds\", \"500 millis\", \"5s\" or \"1m30s\")")
  }
  const duration = parsed.value
  if (Duration.isNegative(duration)) return fail(picked.source, "must not be negative")
  if (!Duration.isFinite(duration) || Duration.isGreaterThan(duration, MAX_DURATION)) {
    return fail(picked.source, "must be at most 24 hours")
  }
  const millis = Duration.toMillis(duration)
  if (!Number.isInteger(millis)) {
    return fail(picked.source, "must be a whole number of milliseconds (timers have millisecond resolution)")
  }
  return Effect.succeed(Duration.millis(millis))
}

const parseBoolean = (picked: Picked<boolean> | undefined): Effect.Effect<boolean, ShutdownConfigError> => {
  if (picked === undefined) return Effect.succeed(false)
  if (typeof picked.value === "boolean") return Effect.succeed(picked.value)
  // What `Config.Boolean` accepts: true/false, yes/no, on/off, 1/0, y/n.
  const env = { value: picked.value.trim().toLowerCase() }
  return Config.Boolean("value").parse(ConfigProvider.fromEnv({ env })).pipe(
    Effect.mapError(() =>
      new ShutdownConfigError({ ...picked.source, reason: "not a boolean (expected true or false)" })
    )
  )
}

const parseSignals = (
  picked: Picked<ReadonlyArray<SignalName>> | undefined
): Effect.Effect<ReadonlyArray<SignalName>, ShutdownConfigError> => {
  if (picked === undefined) return Effect.succeed(defaultSignals)
  const names = typeof picked.value === "string"
    ? picked.value.split(",").map((name) => name.trim().toUpperCase()).filter((name) => name !== "")
    : picked.value
  const unknown = names.filter((name) => !(signalNames as ReadonlyArray<string>).includes(name))
  if (unknown.length > 0) {
    return fail(picked.source, `unknown signal ${unknown.join(", ")} (expected some of ${signalNames.join(", ")})`)
  }
  if (names.length === 0) return fail(picked.source, "name at least one signal, or nothing would trigger a shutdown")
  return Effect.succeed([...new Set(names as ReadonlyArray<SignalName>)])
}

/**
 * The default budget: fits Kubernetes' default 30 s grace period with room.
 *
 * @category constants
 * @since 0.2.0
 */
export const DEFAULT_TIMEOUT: Duration.Duration = Duration.seconds(25)
/**
 * The lame-duck delay used when `KUBERNETES_SERVICE_HOST` is set.
 *
 * @category constants
 * @since 0.2.0
 */
export const DEFAULT_KUBERNETES_DELAY: Duration.Duration = Duration.seconds(5)
/**
 * The default emergency budget for a defect or a 2nd signal.
 *
 * @category constants
 * @since 0.2.0
 */
export const DEFAULT_EMERGENCY_TIMEOUT: Duration.Duration = Duration.seconds(1)
/**
 * The default watchdog slack past the budget.
 *
 * @category constants
 * @since 0.2.0
 */
export const DEFAULT_WATCHDOG_SLACK: Duration.Duration = Duration.millis(50)

const ms = Duration.toMillis

/** The variables, each present (non-blank) or not. */
const environment = Config.all({
  timeout: fromEnv("SHUTDOWN_TIMEOUT"),
  delay: fromEnv("SHUTDOWN_DELAY"),
  drainTimeout: fromEnv("SHUTDOWN_DRAIN_TIMEOUT"),
  emergencyTimeout: fromEnv("SHUTDOWN_EMERGENCY_TIMEOUT"),
  reportFile: fromEnv("SHUTDOWN_REPORT_FILE"),
  reraiseSignal: fromEnv("SHUTDOWN_RERAISE_SIGNAL"),
  signals: fromEnv("SHUTDOWN_SIGNALS"),
  kubernetes: fromEnv("KUBERNETES_SERVICE_HOST")
})

type Environment = Config.Success<typeof environment>

/**
 * Resolves the configuration from the environment (through the current
 * `ConfigProvider`) and the given code options, and validates it.
 *
 * Fails with {@link ShutdownConfigError} when a value is not a duration, is
 * negative, longer than 24 hours or not whole milliseconds, when the budget
 * is zero, when the delay or the delay plus the drain timeout does not fit in
 * the budget, when the emergency budget is longer than the budget, or when a
 * signal name is unknown.
 *
 * @example
 * ```ts
 * import { Duration, Effect } from "effect"
 * import { ShutdownConfig } from "effect-graceful"
 *
 * const program = Effect.gen(function*() {
 *   const config = yield* ShutdownConfig.load({ timeout: "10 seconds" })
 *   Duration.toMillis(config.timeout) // 10000
 * })
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const load = (options: ShutdownOptions = {}): Effect.Effect<ShutdownConfig, ShutdownConfigError> =>
  Effect.flatMap(
    environment.pipe(
      Effect.mapError((error) => new ShutdownConfigError({ variable: "environment", value: "", reason: String(error) }))
    ),
    (env) => resolve(env, options)
  )

/**
 * The same configuration as a `Config`, to read together with an
 * application's own settings (`Config.all`, `Config.nested`, ...). It reads
 * the same `SHUTDOWN_*` variables with the same defaults and validation as
 * {@link load} (without code options); an invalid value fails with a
 * `ConfigError` whose message is the {@link ShutdownConfigError}'s
 * (`SHUTDOWN_TIMEOUT="-1 seconds": must not be negative`), the
 * `ShutdownConfigError` itself as the `SourceError`'s `cause`.
 *
 * @example
 * ```ts
 * import { Config, Duration, Effect } from "effect"
 * import { Graceful, ShutdownConfig } from "effect-graceful"
 *
 * const AppConfig = Config.all({
 *   shutdown: ShutdownConfig.config,
 *   port: Config.Port("PORT").pipe(Config.withDefault(3000))
 * })
 *
 * const program = Effect.gen(function*() {
 *   const { port, shutdown } = yield* AppConfig
 *   yield* Effect.log(`listening on ${port}, budget ${Duration.toMillis(shutdown.timeout)} ms`)
 *   return yield* Effect.never
 * })
 *
 * Effect.runFork(Graceful.run(program))
 * ```
 *
 * @category constructors
 * @since 0.2.0
 */
export const config: Config.Config<ShutdownConfig> = Config.mapEffect(
  environment,
  (env) =>
    Effect.mapError(
      resolve(env, {}),
      (error) => new Config.ConfigError(new ConfigProvider.SourceError({ message: error.message, cause: error }))
    )
)

function resolve(env: Environment, options: ShutdownOptions): Effect.Effect<ShutdownConfig, ShutdownConfigError> {
  return Effect.gen(function*() {
    const timeoutPick = pick("timeout", options.timeout, env.timeout)
    const timeout = yield* parseDuration(timeoutPick, DEFAULT_TIMEOUT)
    if (timeoutPick !== undefined && ms(timeout) < 1) {
      return yield* fail(timeoutPick.source, "the budget must be at least 1 millisecond")
    }
    const delayPick = pick("delay", options.delay, env.delay)
    const delay = yield* parseDuration(
      delayPick,
      Option.isSome(env.kubernetes) ? DEFAULT_KUBERNETES_DELAY : Duration.zero
    )
    if (ms(delay) >= ms(timeout)) {
      return yield* fail(
        delayPick?.source ?? { variable: "SHUTDOWN_DELAY", value: `${ms(delay)} millis (Kubernetes default)` },
        `the lame-duck delay must be shorter than the budget SHUTDOWN_TIMEOUT (${ms(timeout)} ms)`
      )
    }
    const drainPick = pick("drainTimeout", options.drainTimeout, env.drainTimeout)
    const drainTimeout = yield* parseDuration(
      drainPick,
      Duration.millis(Math.min(15_000, Math.floor((ms(timeout) - ms(delay)) * 0.6)))
    )
    if (drainPick !== undefined && ms(delay) + ms(drainTimeout) >= ms(timeout)) {
      return yield* fail(
        drainPick.source,
        `the delay (${ms(delay)} ms) plus the drain timeout must be shorter than the budget SHUTDOWN_TIMEOUT (${
          ms(timeout)
        } ms), leaving time to release`
      )
    }
    const emergencyPick = pick("emergencyTimeout", options.emergencyTimeout, env.emergencyTimeout)
    const emergencyTimeout = yield* parseDuration(emergencyPick, Duration.min(DEFAULT_EMERGENCY_TIMEOUT, timeout))
    if (emergencyPick !== undefined && ms(emergencyTimeout) > ms(timeout)) {
      return yield* fail(
        emergencyPick.source,
        `the emergency budget must not be longer than the budget SHUTDOWN_TIMEOUT (${ms(timeout)} ms)`
      )
    }
    const watchdogSlack = yield* parseDuration(
      pick("watchdogSlack", options.watchdogSlack, Option.none()),
      DEFAULT_WATCHDOG_SLACK
    )
    const reportFile = options.reportFile ?? Option.getOrUndefined(Option.map(env.reportFile, (source) => source.value))
    const reraiseSignal = yield* parseBoolean(pick("reraiseSignal", options.reraiseSignal, env.reraiseSignal))
    const signals = yield* parseSignals(pick("signals", options.signals, env.signals))
    return { timeout, delay, drainTimeout, emergencyTimeout, reportFile, reraiseSignal, signals, watchdogSlack }
  })
}

/**
 * A duration read from the configuration with the same parser as the
 * `SHUTDOWN_*` variables: Effect's form (`"5 seconds"`, `"500 millis"`) or
 * Go's (`"5s"`, `"1m30s"`). For an application's own settings, so every
 * duration it documents is written the same way.
 *
 * @example
 * ```ts
 * import { Config, Duration, Effect } from "effect"
 * import { ShutdownConfig } from "effect-graceful"
 *
 * const program = Effect.gen(function*() {
 *   // DATABASE_CONNECT_TIMEOUT=3s and DATABASE_CONNECT_TIMEOUT="3 seconds" both work.
 *   const timeout = yield* ShutdownConfig.duration("DATABASE_CONNECT_TIMEOUT").pipe(
 *     Config.withDefault(Duration.seconds(10))
 *   )
 * })
 * ```
 *
 * @category constructors
 * @since 0.2.0
 */
export const duration = (name: string): Config.Config<Duration.Duration> =>
  Config.String(name).pipe(Config.flatMap((text) => {
    const parsed = DurationText.parse(text as Duration.Input)
    if (Option.isSome(parsed) && !Duration.isNegative(parsed.value) && Duration.isFinite(parsed.value)) {
      return Config.succeed(parsed.value)
    }
    return Config.fail(
      new ConfigProvider.SourceError({
        message: `${name}=${
          JSON.stringify(text)
        }: not a duration (expected e.g. "5 seconds", "500 millis", "5s" or "1m30s")`
      })
    )
  }))
