/**
 * The start-up checks: does the process run where its shutdown can work?
 *
 * **The budget check.** Does the shutdown budget fit in the time the
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
 * **The process check.** Does the stop signal reach this process, and is
 * there an init? Read from the process's PID and its parent and grandparent
 * (Linux: `/proc`; elsewhere only the PID is known). Each case below was
 * measured (test/e2e/platform-*.test.ts):
 *
 * | seen | what goes wrong | warning |
 * |---|---|---|
 * | PID 1 (a container without an init) | orphans' zombies are never reaped; the kernel ignores a re-raised signal, so `SHUTDOWN_RERAISE_SIGNAL` exits 128 + n instead | `Pid1WithoutInit` |
 * | the parent is npm, npx, yarn, pnpm or bun | a supervisor signals the wrapper, not node; npm forwards SIGTERM and passes the exit code on, other wrappers and versions may not | `PackageManagerParent` |
 * | the parent is `sh -c` | a shell does not forward signals (dash does not even `exec` the last command): SIGTERM to the shell's PID (npm's forward to a script without `exec`, `npm exec`, a shell-form `CMD` under PID 1 or tini) never reaches node, which is killed or orphaned without draining | `ShellParent` |
 *
 * @since 0.1.0
 */
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import { readFileSync } from "node:fs"
import { basename } from "node:path"
import * as ShutdownConfig from "./ShutdownConfig.ts"

/**
 * A platform that kills the process a fixed time after its stop signal.
 *
 * @category models
 * @since 0.1.0
 */
export type Platform = "pm2" | "kubernetes"

/**
 * PM2's `kill_timeout` when the app does not set one (PM2's `KILL_TIMEOUT` constant).
 *
 * @category constants
 * @since 0.1.0
 */
export const PM2_DEFAULT_KILL_TIMEOUT_MS = 1_600
/**
 * Kubernetes' default `terminationGracePeriodSeconds`.
 *
 * @category constants
 * @since 0.1.0
 */
export const KUBERNETES_DEFAULT_GRACE_SECONDS = 30
/**
 * Room the rules keep between the end of the budget and SIGKILL, per platform.
 *
 * @category constants
 * @since 0.1.0
 */
export const MARGIN_MS: Readonly<Record<Platform, number>> = { pm2: 1_000, kubernetes: 2_000 }

/**
 * How long the platform lets the process run after its stop signal, as far
 * as the process can tell.
 *
 * @category models
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
 * @category models
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
 * @category models
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
 * @category utils
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
 * @category utils
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
      return {
        ...window,
        budgetMs,
        requiredMs,
        fits,
        message: `${head}; ${budget}: fits, with ${window.windowMs - budgetMs} ms to spare`
      }
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
      message:
        `${head}, but ${budget} (+ ${MARGIN_MS[window.platform]} ms margin): the platform will kill the process ` +
        `before its shutdown ends: ${fix}.`
    }
  })

// -----------------------------------------------------------------------------
// The process check
// -----------------------------------------------------------------------------

/**
 * A process above this one, as the kernel shows it.
 *
 * @category models
 * @since 0.1.0
 */
export interface Ancestor {
  readonly pid: number
  /** Its command line; for a program that sets its title (npm does: `npm start`), the title. */
  readonly argv: ReadonlyArray<string>
}

/**
 * How this process was started, as far as it can see.
 *
 * @category models
 * @since 0.1.0
 */
export interface ProcessInfo {
  readonly pid: number
  /** The parent first, then the grandparent; empty where `/proc` is not available. */
  readonly ancestors: ReadonlyArray<Ancestor>
  /** The Node version running it (`process.versions.node`); not checked when absent. */
  readonly nodeVersion?: string | undefined
}

/**
 * The oldest Node version this library supports (`engines` in its
 * package.json). {@link inspectProcess} warns below it.
 *
 * @example
 * ```ts
 * import { PlatformCheck } from "effect-graceful"
 *
 * console.log(`needs Node ${PlatformCheck.MINIMUM_NODE_VERSION} or newer`)
 * ```
 *
 * @category process check
 * @since 0.1.0
 */
export const MINIMUM_NODE_VERSION = "22.19.0"

const versionParts = (version: string): ReadonlyArray<number> | undefined => {
  const match = /^v?(\d+)\.(\d+)\.(\d+)/.exec(version.trim())
  return match === null ? undefined : [Number(match[1]), Number(match[2]), Number(match[3])]
}

const isOlder = (version: ReadonlyArray<number>, than: ReadonlyArray<number>): boolean => {
  for (let i = 0; i < than.length; i++) {
    const a = version[i] ?? 0
    const b = than[i] ?? 0
    if (a !== b) return a < b
  }
  return false
}

/**
 * A way of starting the process that keeps its shutdown from working, or a
 * Node older than {@link MINIMUM_NODE_VERSION}.
 *
 * @category models
 * @since 0.1.0
 */
export type ProcessWarning =
  | { readonly _tag: "UnsupportedNode"; readonly version: string; readonly message: string }
  | { readonly _tag: "Pid1WithoutInit"; readonly message: string }
  | { readonly _tag: "PackageManagerParent"; readonly manager: string; readonly message: string }
  | {
    readonly _tag: "ShellParent"
    /** What started the shell: a package manager's script, an init or PID 1 (a shell-form `CMD`), or something else. */
    readonly startedBy: "package-manager" | "init" | "other"
    readonly message: string
  }

const PACKAGE_MANAGER = /^(npm|npx|yarn|yarnpkg|pnpm|pnpx|bun|bunx)(-cli)?(\.c?js)?$/
const SHELL = /^(sh|bash|dash|ash|zsh|ksh|mksh|busybox)$/
const INIT = /^(tini|tini-static|docker-init|dumb-init|catatonit|init|systemd|s6-svscan)$/

/** The first words of a command line: `node /usr/bin/npm start` and a title `npm start` both give npm. */
const words = (ancestor: Ancestor): ReadonlyArray<string> =>
  ancestor.argv.slice(0, 2).flatMap((arg) => arg.split(/\s+/)).filter((word) => word !== "").map((word) =>
    basename(word)
  )

const packageManagerOf = (ancestor: Ancestor | undefined): string | undefined => {
  if (ancestor === undefined) return undefined
  const [first, second] = words(ancestor)
  if (first !== undefined && PACKAGE_MANAGER.test(first)) return first.replace(/(-cli)?(\.c?js)?$/, "")
  // `node /usr/lib/node_modules/npm/bin/npm-cli.js start`
  if (first !== undefined && /^node(js)?$/.test(first) && second !== undefined && PACKAGE_MANAGER.test(second)) {
    return second.replace(/(-cli)?(\.c?js)?$/, "")
  }
  return undefined
}

const isShellRunningCommand = (ancestor: Ancestor | undefined): boolean =>
  ancestor !== undefined && SHELL.test(basename(ancestor.argv[0] ?? "")) && ancestor.argv.includes("-c")

const isInit = (ancestor: Ancestor | undefined): boolean =>
  ancestor !== undefined && (ancestor.pid === 1 || INIT.test(basename(ancestor.argv[0] ?? "")))

/**
 * The warnings for a process started as `info` says. Pure: give it
 * {@link readProcessInfo}'s answer or a test's record.
 *
 * @example
 * ```ts
 * import { PlatformCheck } from "effect-graceful"
 *
 * PlatformCheck.inspectProcess({ pid: 4242, ancestors: [{ pid: 4200, argv: ["npm exec node main.ts"] }] })
 * // [{ _tag: "PackageManagerParent", manager: "npm", message: "..." }]
 * ```
 *
 * @category process check
 * @since 0.1.0
 */
export const inspectProcess = (info: ProcessInfo): ReadonlyArray<ProcessWarning> => {
  const warnings: Array<ProcessWarning> = []
  const [parent, grandparent] = info.ancestors
  const version = info.nodeVersion === undefined ? undefined : versionParts(info.nodeVersion)
  if (version !== undefined && isOlder(version, versionParts(MINIMUM_NODE_VERSION)!)) {
    warnings.push({
      _tag: "UnsupportedNode",
      version: info.nodeVersion!,
      message: `this process runs on Node ${info.nodeVersion}, older than ${MINIMUM_NODE_VERSION}, the oldest ` +
        "version effect-graceful supports (and @effect/platform-node requires): it is not tested there and may misbehave. " +
        `Run Node ${MINIMUM_NODE_VERSION} or newer.`
    })
  }
  if (info.pid === 1) {
    warnings.push({
      _tag: "Pid1WithoutInit",
      message: "this process is PID 1 (a container started without an init): it does not reap the zombies of " +
        "orphaned processes, and the kernel ignores a signal it re-raises, so SHUTDOWN_RERAISE_SIGNAL exits " +
        "128 + n instead of dying by the signal. Run it under an init: `docker run --init`, tini as the ENTRYPOINT, " +
        "or Kubernetes' shareProcessNamespace."
    })
  }
  const manager = packageManagerOf(parent)
  if (manager !== undefined) {
    warnings.push({
      _tag: "PackageManagerParent",
      manager,
      message: `this process was started by ${manager} (PID ${parent!.pid}): a supervisor's SIGTERM reaches ` +
        `${manager}, not this process, and the shutdown works only if ${manager} forwards it and passes the exit ` +
        `code on (npm 11 does, measured, for a script that starts with \`exec\`). Fine for development; in production ` +
        "run node directly (an exec-form CMD, ExecStart=node ...)."
    })
  }
  if (isShellRunningCommand(parent)) {
    const shell = `\`${parent!.argv.join(" ")}\` (PID ${parent!.pid})`
    const byManager = packageManagerOf(grandparent)
    if (byManager !== undefined) {
      warnings.push({
        _tag: "ShellParent",
        startedBy: "package-manager",
        message: `this process was started by ${byManager} through ${shell}: ${byManager} forwards SIGTERM to the ` +
          "shell only, which dies and leaves this process running, never signalled, never drained. Start the " +
          "script with `exec` (`\"start\": \"exec node main.js\"`; `npm exec` always goes through a shell), or run " +
          "node directly."
      })
    } else if (parent!.pid === 1 || isInit(grandparent)) {
      warnings.push({
        _tag: "ShellParent",
        startedBy: "init",
        message:
          `this process was started by ${shell}${
            parent!.pid === 1 ? ", which is PID 1" : ", under an init"
          } (a shell-form CMD or ENTRYPOINT): the container's SIGTERM goes to the shell, which ignores it as PID 1 or ` +
          "dies of it under an init; either way this process is killed without draining. Use the exec form: " +
          "`CMD [\"node\", \"main.js\"]`."
      })
    } else {
      warnings.push({
        _tag: "ShellParent",
        startedBy: "other",
        message: `this process was started by ${shell}: a SIGTERM sent to the shell's PID alone does not reach ` +
          "this process (a shell does not forward signals). Start it with `exec node ...`, or have the supervisor " +
          "signal the whole process group (systemd's default KillMode does)."
      })
    }
  }
  return warnings
}

const readAncestor = (pid: number): { readonly ancestor: Ancestor; readonly ppid: number } | undefined => {
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter((arg) => arg !== "")
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
    // `pid (comm) state ppid ...`: comm may hold spaces and parentheses.
    const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1])
    return { ancestor: { pid, argv }, ppid }
  } catch {
    return undefined
  }
}

/**
 * This process's PID and its parent and grandparent, read from `/proc`
 * (on other systems, the PID alone). Never throws.
 *
 * @example
 * ```ts
 * import { PlatformCheck } from "effect-graceful"
 *
 * const info = PlatformCheck.readProcessInfo()
 * PlatformCheck.inspectProcess(info).forEach((warning) => console.warn(warning.message))
 * ```
 *
 * @category process check
 * @since 0.1.0
 */
export const readProcessInfo = (): ProcessInfo => {
  const ancestors: Array<Ancestor> = []
  let pid = process.ppid
  while (ancestors.length < 2 && pid > 0) {
    const found = readAncestor(pid)
    if (found === undefined) break
    ancestors.push(found.ancestor)
    pid = found.ppid
  }
  return { pid: process.pid, ancestors, nodeVersion: process.versions.node }
}

/**
 * Where {@link checkProcess} reads how the process was started: by default
 * {@link readProcessInfo}; a test provides its own.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { PlatformCheck } from "effect-graceful"
 *
 * PlatformCheck.checkProcess.pipe(
 *   Effect.provideService(PlatformCheck.CurrentProcess, { pid: 1, ancestors: [] })
 * )
 * ```
 *
 * @category services
 * @since 0.1.0
 */
export const CurrentProcess: Context.Reference<ProcessInfo> = Context.Reference<ProcessInfo>(
  "effect-graceful/PlatformCheck/CurrentProcess",
  { defaultValue: readProcessInfo }
)

/**
 * Inspects how the process was started ({@link inspectProcess} on
 * {@link CurrentProcess}), logs a warning for each problem, and returns them.
 * Never fails. {@link check} runs it.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { PlatformCheck } from "effect-graceful"
 *
 * const program = Effect.gen(function*() {
 *   const warnings = yield* PlatformCheck.checkProcess
 * })
 * ```
 *
 * @category process check
 * @since 0.1.0
 */
export const checkProcess: Effect.Effect<ReadonlyArray<ProcessWarning>> = Effect.gen(function*() {
  const warnings = inspectProcess(yield* CurrentProcess)
  for (const warning of warnings) {
    yield* Effect.logWarning(warning.message).pipe(Effect.annotateLogs({ check: warning._tag }))
  }
  return warnings
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
 * runs {@link checkProcess}, and returns the budget findings. Never fails.
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
 * @category utils
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
    yield* checkProcess
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
 * @category layers
 * @since 0.1.0
 */
export const layer = (
  options?: ShutdownConfig.ShutdownOptions
): Layer.Layer<never, ShutdownConfig.ShutdownConfigError> =>
  Layer.effectDiscard(Effect.flatMap(ShutdownConfig.load(options), check))
