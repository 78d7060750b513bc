/**
 * The start-up budget check: does the shutdown budget fit in the time the
 * platform gives the process between its stop signal and SIGKILL?
 *
 * A budget longer than that window is worse than a short one: the platform
 * kills the process in the middle of its drain or its releases, and nothing
 * (not the report, not the exit code) says why. The check runs once at start
 * and logs a warning that names the setting to change.
 *
 * | platform | detected by | kill window | rule |
 * |---|---|---|---|
 * | PM2 | `pm_id` in the environment (PM2 passes the app's settings to the process as variables) | `kill_timeout` (ms); else `PM2_KILL_TIMEOUT`; else PM2's default, 1600 ms | `kill_timeout` >= `SHUTDOWN_TIMEOUT` + 1 s |
 * | Kubernetes | `KUBERNETES_SERVICE_HOST` | `TERMINATION_GRACE_PERIOD_SECONDS` (set it in the manifest to the pod's `terminationGracePeriodSeconds`: a pod cannot read its own) minus `PRE_STOP_SLEEP_SECONDS`; else Kubernetes' default, 30 s | `terminationGracePeriodSeconds` >= preStop sleep + `SHUTDOWN_TIMEOUT` + 2 s |
 *
 * `SHUTDOWN_DELAY` is not added: the lame-duck delay is part of the budget.
 * When the window is not visible and a default is assumed, the warning says so.
 *
 * @since 0.1.0
 */
import * as Config from "effect/Config"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as ShutdownConfig from "./ShutdownConfig.ts"

/**
 * A platform that kills the process a fixed time after its stop signal.
 *
 * @since 0.1.0
 */
export type Platform = "pm2" | "kubernetes"

/** PM2's `kill_timeout` when the app does not set one (PM2's `KILL_TIMEOUT` constant). */
export const PM2_DEFAULT_KILL_TIMEOUT_MS = 1_600
/** Kubernetes' default `terminationGracePeriodSeconds`. */
export const KUBERNETES_DEFAULT_GRACE_SECONDS = 30
/** Room the rules keep between the end of the budget and SIGKILL, per platform. */
export const MARGIN_MS: Readonly<Record<Platform, number>> = { pm2: 1_000, kubernetes: 2_000 }

/**
 * How long the platform lets the process run after its stop signal, as far
 * as the process can tell.
 *
 * @since 0.1.0
 */
export interface KillWindow {
  readonly platform: Platform
  /** Milliseconds from the stop signal to SIGKILL. */
  readonly windowMs: number
  /** Kubernetes: the preStop sleep, spent before SIGTERM out of the grace period. */
  readonly preStopMs: number
  /** Where the number comes from, for the log. */
  readonly source: string
  /** The platform's default was assumed: the real setting is not visible. */
  readonly assumed: boolean
}

/**
 * The verdict for one platform.
 *
 * @since 0.1.0
 */
export interface Finding extends KillWindow {
  readonly budgetMs: number
  /** The budget plus the platform's margin: the window needed. */
  readonly requiredMs: number
  readonly fits: boolean
  /** One line for the log; for a window that does not fit, what to change. */
  readonly message: string
}

/**
 * The environment variables the check reads.
 *
 * @since 0.1.0
 */
export type Environment = Readonly<Record<string, string | undefined>>

const variables = [
  "pm_id",
  "kill_timeout",
  "PM2_KILL_TIMEOUT",
  "KUBERNETES_SERVICE_HOST",
  "TERMINATION_GRACE_PERIOD_SECONDS",
  "PRE_STOP_SLEEP_SECONDS"
] as const

const present = (value: string | undefined): value is string => value !== undefined && value.trim() !== ""

const nonNegative = (value: string | undefined): number | undefined => {
  if (!present(value)) return undefined
  const number = Number(value.trim())
  return Number.isFinite(number) && number >= 0 ? number : undefined
}

/**
 * The kill windows of the platforms the environment shows. Pure: give it
 * `process.env` or a test's record.
 *
 * @example
 * ```ts
 * import { PlatformCheck } from "effect-graceful"
 *
 * PlatformCheck.detect({ pm_id: "0", kill_timeout: "30000" })
 * // [{ platform: "pm2", windowMs: 30000, preStopMs: 0, source: "kill_timeout=30000", assumed: false }]
 * ```
 *
 * @since 0.1.0
 */
export const detect = (env: Environment): ReadonlyArray<KillWindow> => {
  const windows: Array<KillWindow> = []
  if (present(env.pm_id)) {
    const own = nonNegative(env.kill_timeout)
    const daemon = nonNegative(env.PM2_KILL_TIMEOUT)
    windows.push(
      own !== undefined
        ? { platform: "pm2", windowMs: own, preStopMs: 0, source: `kill_timeout=${own}`, assumed: false }
        : daemon !== undefined
        ? { platform: "pm2", windowMs: daemon, preStopMs: 0, source: `PM2_KILL_TIMEOUT=${daemon}`, assumed: false }
        : {
          platform: "pm2",
          windowMs: PM2_DEFAULT_KILL_TIMEOUT_MS,
          preStopMs: 0,
          source: `kill_timeout not set: PM2's default, ${PM2_DEFAULT_KILL_TIMEOUT_MS} ms`,
          assumed: true
        }
    )
  }
  if (present(env.KUBERNETES_SERVICE_HOST)) {
    const grace = nonNegative(env.TERMINATION_GRACE_PERIOD_SECONDS)
    const preStop = nonNegative(env.PRE_STOP_SLEEP_SECONDS) ?? 0
    const graceSeconds = grace ?? KUBERNETES_DEFAULT_GRACE_SECONDS
    const graceText = grace !== undefined
      ? `TERMINATION_GRACE_PERIOD_SECONDS=${grace}`
      : `terminationGracePeriodSeconds not visible (set TERMINATION_GRACE_PERIOD_SECONDS): Kubernetes' default, ${KUBERNETES_DEFAULT_GRACE_SECONDS} s`
    windows.push({
      platform: "kubernetes",
      windowMs: Math.max(0, Math.round((graceSeconds - preStop) * 1000)),
      preStopMs: Math.round(preStop * 1000),
      source: preStop > 0 ? `${graceText}, minus PRE_STOP_SLEEP_SECONDS=${preStop}` : graceText,
      assumed: grace === undefined
    })
  }
  return windows
}

const seconds = (ms: number) => Math.ceil(ms / 1000)

/**
 * Compares each kill window with the budget.
 *
 * @example
 * ```ts
 * import { PlatformCheck } from "effect-graceful"
 *
 * const [finding] = PlatformCheck.evaluate(25_000, PlatformCheck.detect({ pm_id: "0" }))
 * finding?.fits // false: PM2's default kill_timeout is 1600 ms
 * ```
 *
 * @since 0.1.0
 */
export const evaluate = (budgetMs: number, windows: ReadonlyArray<KillWindow>): ReadonlyArray<Finding> =>
  windows.map((window): Finding => {
    const requiredMs = budgetMs + MARGIN_MS[window.platform]
    const fits = window.windowMs >= requiredMs
    const head = window.platform === "pm2"
      ? `PM2 sends SIGKILL ${window.windowMs} ms after its stop signal (${window.source})`
      : `Kubernetes sends SIGKILL ${window.windowMs} ms after SIGTERM (${window.source})`
    const budget = `the shutdown budget SHUTDOWN_TIMEOUT is ${budgetMs} ms`
    if (fits) {
      return { ...window, budgetMs, requiredMs, fits, message: `${head}; ${budget}: fits, with ${window.windowMs - budgetMs} ms to spare` }
    }
    const lower = Math.max(0, window.windowMs - MARGIN_MS[window.platform])
    const fix = window.platform === "pm2"
      ? `set kill_timeout to at least ${requiredMs} in the PM2 ecosystem file, or SHUTDOWN_TIMEOUT to at most ${lower} millis`
      : `set terminationGracePeriodSeconds to at least ${
        seconds(window.preStopMs + requiredMs)
      } (preStop sleep + budget + 2 s) and TERMINATION_GRACE_PERIOD_SECONDS with it, or SHUTDOWN_TIMEOUT to at most ${lower} millis`
    return {
      ...window,
      budgetMs,
      requiredMs,
      fits,
      message: `${head}, but ${budget} (+ ${MARGIN_MS[window.platform]} ms margin): the platform will kill the process ` +
        `before its shutdown ends: ${fix}.`
    }
  })

const readEnvironment: Effect.Effect<Environment> = Effect.gen(function*() {
  const env: Record<string, string | undefined> = {}
  for (const name of variables) {
    const value = yield* Config.option(Config.String(name)).pipe(
      Effect.orElseSucceed(() => Option.none<string>())
    )
    env[name] = Option.getOrUndefined(value)
  }
  return env
})

/**
 * Reads the environment (through the current `ConfigProvider`), compares
 * each detected platform's kill window with `config`'s budget, logs a
 * warning for each that does not fit (and a debug line for each that does),
 * and returns the findings. Never fails.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { PlatformCheck, ShutdownConfig } from "effect-graceful"
 *
 * const program = Effect.gen(function*() {
 *   const config = yield* ShutdownConfig.load()
 *   const findings = yield* PlatformCheck.check(config)
 * })
 * ```
 *
 * @since 0.1.0
 */
export const check = (
  config: Pick<ShutdownConfig.ShutdownConfig, "timeout">
): Effect.Effect<ReadonlyArray<Finding>> =>
  Effect.gen(function*() {
    const findings = evaluate(Duration.toMillis(config.timeout), detect(yield* readEnvironment))
    for (const finding of findings) {
      yield* (finding.fits ? Effect.logDebug(finding.message) : Effect.logWarning(finding.message)).pipe(
        Effect.annotateLogs({ platform: finding.platform, windowMs: finding.windowMs, budgetMs: finding.budgetMs })
      )
    }
    return findings
  })

/**
 * The check as a layer, for a program that does not run under
 * `Graceful.run` (which runs {@link check} itself at start): loads the
 * shutdown configuration (with the same code options as the program's) and
 * runs {@link check} when the layer is built.
 *
 * @example
 * ```ts
 * import { NodeRuntime } from "@effect/platform-node"
 * import { Layer } from "effect"
 * import { PlatformCheck } from "effect-graceful"
 *
 * declare const AppLive: Layer.Layer<never>
 *
 * Layer.launch(Layer.merge(AppLive, PlatformCheck.layer())).pipe(NodeRuntime.runMain)
 * ```
 *
 * @since 0.1.0
 */
export const layer = (
  options?: ShutdownConfig.ShutdownOptions
): Layer.Layer<never, ShutdownConfig.ShutdownConfigError> =>
  Layer.effectDiscard(Effect.flatMap(ShutdownConfig.load(options), check))
