import { describe, expect, it } from "@effect/vitest"
import { Config, ConfigProvider, Effect, Exit } from "effect"
import { Duration as DurationModule } from "effect"
import { Graceful, ShutdownConfig } from "../src/index.ts"
import * as GracefulTest from "../src/testing.ts"

const ms = DurationModule.toMillis

/** The configuration with each duration in milliseconds, as the assertions read it. */
const millisOf = (config: ShutdownConfig.ShutdownConfig) => ({
  timeoutMs: ms(config.timeout),
  delayMs: ms(config.delay),
  drainTimeoutMs: ms(config.drainTimeout),
  emergencyTimeoutMs: ms(config.emergencyTimeout),
  reportFile: config.reportFile,
  reraiseSignal: config.reraiseSignal,
  watchdogSlackMs: ms(config.watchdogSlack)
})

const withEnv = (env: Record<string, string>) => Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env })))

const loadError = (env: Record<string, string>, options?: ShutdownConfig.ShutdownOptions) =>
  ShutdownConfig.load(options).pipe(withEnv(env), Effect.flip)

describe("ShutdownConfig", () => {
  it.effect("defaults", () =>
    Effect.gen(function*() {
      const config = yield* ShutdownConfig.load().pipe(withEnv({}))
      expect(millisOf(config)).toEqual({
        timeoutMs: 25_000,
        delayMs: 0,
        drainTimeoutMs: 15_000,
        emergencyTimeoutMs: 1_000,
        reportFile: undefined,
        reraiseSignal: false,
        watchdogSlackMs: 50
      })
    }))

  it.effect("reads every variable as an Effect duration string", () =>
    Effect.gen(function*() {
      const config = yield* ShutdownConfig.load().pipe(withEnv({
        SHUTDOWN_TIMEOUT: "10 seconds",
        SHUTDOWN_DELAY: "2 seconds",
        SHUTDOWN_DRAIN_TIMEOUT: "5 seconds",
        SHUTDOWN_EMERGENCY_TIMEOUT: "500 millis",
        SHUTDOWN_REPORT_FILE: "/dev/termination-log",
        SHUTDOWN_RERAISE_SIGNAL: "true"
      }))
      expect(millisOf(config)).toMatchObject({
        timeoutMs: 10_000,
        delayMs: 2_000,
        drainTimeoutMs: 5_000,
        emergencyTimeoutMs: 500,
        reportFile: "/dev/termination-log",
        reraiseSignal: true
      })
    }))

  it.effect("on Kubernetes the lame-duck delay defaults to 5 seconds", () =>
    Effect.gen(function*() {
      const config = yield* ShutdownConfig.load().pipe(withEnv({ KUBERNETES_SERVICE_HOST: "10.0.0.1" }))
      expect(ms(config.delay)).toBe(5_000)
      expect(ms(config.delay) + ms(config.drainTimeout)).toBeLessThan(ms(config.timeout))
    }))

  it.effect("code options win over the environment", () =>
    Effect.gen(function*() {
      const config = yield* ShutdownConfig.load({ timeout: "8 seconds" }).pipe(
        withEnv({ SHUTDOWN_TIMEOUT: "30 seconds" })
      )
      expect(ms(config.timeout)).toBe(8_000)
    }))

  const bad: ReadonlyArray<readonly [string, Record<string, string>, string, string]> = [
    ["not a duration", { SHUTDOWN_TIMEOUT: "5 parsecs" }, "SHUTDOWN_TIMEOUT", "not a duration"],
    ["a bare number (which unit?)", { SHUTDOWN_TIMEOUT: "5000" }, "SHUTDOWN_TIMEOUT", "not a duration"],
    ["garbage", { SHUTDOWN_DELAY: "soon" }, "SHUTDOWN_DELAY", "not a duration"],
    ["negative", { SHUTDOWN_EMERGENCY_TIMEOUT: "-1 seconds" }, "SHUTDOWN_EMERGENCY_TIMEOUT", "negative"],
    ["infinite", { SHUTDOWN_TIMEOUT: "Infinity" }, "SHUTDOWN_TIMEOUT", "at most 24 hours"],
    // Past ~24.8 days Node's timers overflow and fire at once: every SIGTERM
    // would end in a watchdog exit within milliseconds.
    ["a budget Node's timers cannot hold", { SHUTDOWN_TIMEOUT: "25 days" }, "SHUTDOWN_TIMEOUT", "at most 24 hours"],
    [
      "a budget far past the timer limit",
      { SHUTDOWN_TIMEOUT: "1000000000 seconds" },
      "SHUTDOWN_TIMEOUT",
      "at most 24 hours"
    ],
    [
      "a sub-millisecond budget",
      { SHUTDOWN_TIMEOUT: "500 micros" },
      "SHUTDOWN_TIMEOUT",
      "whole number of milliseconds"
    ],
    ["zero budget", { SHUTDOWN_TIMEOUT: "0 seconds" }, "SHUTDOWN_TIMEOUT", "at least 1 millisecond"],
    ["zero budget, Go form", { SHUTDOWN_TIMEOUT: "0s" }, "SHUTDOWN_TIMEOUT", "at least 1 millisecond"],
    ["an unknown signal", { SHUTDOWN_SIGNALS: "SIGTERM,SIGQUIT" }, "SHUTDOWN_SIGNALS", "unknown signal SIGQUIT"],
    [
      "delay longer than the budget",
      { SHUTDOWN_TIMEOUT: "10 seconds", SHUTDOWN_DELAY: "30 seconds" },
      "SHUTDOWN_DELAY",
      "shorter than the budget"
    ],
    [
      "drain longer than the budget",
      { SHUTDOWN_TIMEOUT: "10 seconds", SHUTDOWN_DRAIN_TIMEOUT: "10 seconds" },
      "SHUTDOWN_DRAIN_TIMEOUT",
      "shorter than the budget"
    ],
    [
      "emergency longer than the budget",
      { SHUTDOWN_TIMEOUT: "1 second", SHUTDOWN_EMERGENCY_TIMEOUT: "2 seconds" },
      "SHUTDOWN_EMERGENCY_TIMEOUT",
      "emergency"
    ],
    ["not a boolean", { SHUTDOWN_RERAISE_SIGNAL: "maybe" }, "SHUTDOWN_RERAISE_SIGNAL", "boolean"]
  ]
  for (const [title, env, variable, reason] of bad) {
    it.effect(`rejects ${title}, naming the variable and the value`, () =>
      Effect.gen(function*() {
        const error = yield* loadError(env)
        expect(error._tag).toBe("ShutdownConfigError")
        expect(error.variable).toBe(variable)
        expect(error.value).toBe(env[variable])
        expect(error.message).toContain(variable)
        expect(error.message).toContain(JSON.stringify(env[variable]))
        expect(error.reason).toContain(reason)
      }))
  }

  for (const [title, env, variable] of bad) {
    it.effect(`ShutdownConfig.config rejects ${title} with load's message`, () =>
      Effect.gen(function*() {
        const expected = yield* loadError(env)
        const error = yield* Effect.flip(ShutdownConfig.config.parse(ConfigProvider.fromEnv({ env })))
        expect(error._tag).toBe("ConfigError")
        expect(error.message).toContain(`${variable}=${JSON.stringify(env[variable])}: ${expected.reason}`)
        expect(error.cause).toMatchObject({ cause: expected })
      }))
  }

  it.effect("ShutdownConfig.config reads what load reads, combined with an app's own settings", () =>
    Effect.gen(function*() {
      const env = {
        SHUTDOWN_TIMEOUT: "10s",
        SHUTDOWN_DRAIN_TIMEOUT: "4 seconds",
        SHUTDOWN_SIGNALS: "SIGTERM",
        KUBERNETES_SERVICE_HOST: "10.0.0.1",
        PORT: "8080"
      }
      const { port, shutdown } = yield* Config.all({ shutdown: ShutdownConfig.config, port: Config.Port("PORT") })
        .pipe(withEnv(env))
      expect(port).toBe(8080)
      expect(millisOf(shutdown)).toEqual(millisOf(yield* ShutdownConfig.load().pipe(withEnv(env))))
      expect(millisOf(shutdown)).toMatchObject({ timeoutMs: 10_000, delayMs: 5_000, drainTimeoutMs: 4_000 })
      expect(shutdown.signals).toEqual(["SIGTERM"])
      const defaults = yield* ShutdownConfig.config.parse(ConfigProvider.fromEnv({ env: {} }))
      expect(millisOf(defaults)).toEqual(millisOf(yield* ShutdownConfig.load().pipe(withEnv({}))))
    }))

  it.effect("accepts durations as Go, Kubernetes and Spring write them", () =>
    Effect.gen(function*() {
      const config = yield* ShutdownConfig.load().pipe(withEnv({
        SHUTDOWN_TIMEOUT: "1m30s",
        SHUTDOWN_DELAY: "0s",
        SHUTDOWN_DRAIN_TIMEOUT: "45s",
        SHUTDOWN_EMERGENCY_TIMEOUT: "500ms"
      }))
      expect(millisOf(config)).toMatchObject({
        timeoutMs: 90_000,
        delayMs: 0,
        drainTimeoutMs: 45_000,
        emergencyTimeoutMs: 500
      })
      const hours = yield* ShutdownConfig.load().pipe(withEnv({ SHUTDOWN_TIMEOUT: "1.5h" }))
      expect(ms(hours.timeout)).toBe(5_400_000)
    }))

  it.effect("the longest accepted budget is 24 hours; a zero drain is accepted", () =>
    Effect.gen(function*() {
      const config = yield* ShutdownConfig.load().pipe(
        withEnv({ SHUTDOWN_TIMEOUT: "24 hours", SHUTDOWN_DRAIN_TIMEOUT: "0 seconds" })
      )
      expect(ms(config.timeout)).toBe(86_400_000)
      expect(ms(config.drainTimeout)).toBe(0)
    }))

  it.effect("signals: SIGTERM, SIGINT and SIGHUP by default; SHUTDOWN_SIGNALS chooses", () =>
    Effect.gen(function*() {
      expect((yield* ShutdownConfig.load().pipe(withEnv({}))).signals).toEqual(["SIGTERM", "SIGINT", "SIGHUP"])
      const chosen = yield* ShutdownConfig.load().pipe(withEnv({ SHUTDOWN_SIGNALS: "sigterm, SIGUSR2" }))
      expect(chosen.signals).toEqual(["SIGTERM", "SIGUSR2"])
    }))

  it.effect("a bad code option names the option", () =>
    Effect.gen(function*() {
      const error = yield* loadError({}, { delay: "-3 seconds" })
      expect(error.variable).toBe("option delay")
      expect(error.value).toBe("-3 seconds")
    }))

  it.effect("Graceful.run fails before the program acquires anything", () =>
    Effect.gen(function*() {
      let started = false
      const exit = yield* Effect.sync(() => {
        started = true
      }).pipe(Graceful.run(), withEnv({ SHUTDOWN_TIMEOUT: "-5 seconds" }), Effect.exit)
      expect(started).toBe(false)
      expect(Exit.isFailure(exit)).toBe(true)
      const error = yield* Effect.flip(Effect.suspend(() => exit))
      expect(error.message).toBe("SHUTDOWN_TIMEOUT=\"-5 seconds\": must not be negative")
    }).pipe(Effect.provide(GracefulTest.layer)))
})
