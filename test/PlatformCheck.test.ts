import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect, Layer, Logger } from "effect"
import { Duration as DurationModule } from "effect"
import packageJson from "../package.json" with { type: "json" }
import { PlatformCheck, ShutdownConfig } from "../src/index.ts"

const ms = DurationModule.toMillis

// A process started plainly (by a terminal's shell, not `sh -c`): the process check has nothing to say.
const plainProcess: PlatformCheck.ProcessInfo = { pid: 4242, ancestors: [{ pid: 4000, argv: ["-bash"] }] }

const withEnv =
  (env: Record<string, string>, process: PlatformCheck.ProcessInfo = plainProcess) =>
  <A, E, R>(effect: Effect.Effect<A, E, R>) =>
    effect.pipe(
      Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env }))),
      Effect.provideService(PlatformCheck.CurrentProcess, process)
    )

/** Runs `effect` with a logger that records warnings (and worse). */
const captureWarnings = <A, E>(effect: Effect.Effect<A, E>) =>
  Effect.gen(function*() {
    const warnings: Array<string> = []
    const logger = Logger.make((options) => {
      if (options.logLevel === "Warn" || options.logLevel === "Error") {
        warnings.push((options.message as ReadonlyArray<unknown>).map(String).join(" "))
      }
    })
    const value = yield* effect.pipe(Effect.provide(Logger.layer([logger])))
    return { value, warnings }
  })

describe("PlatformCheck.detect", () => {
  it("sees nothing outside PM2 and Kubernetes", () => {
    expect(PlatformCheck.detect({ PATH: "/usr/bin", kill_timeout: "100" })).toEqual([])
  })

  it("PM2: the app's kill_timeout, then the daemon's PM2_KILL_TIMEOUT, then PM2's default 1600 ms", () => {
    expect(PlatformCheck.detect({ pm_id: "3", kill_timeout: "30000", PM2_KILL_TIMEOUT: "5000" })).toEqual([
      { platform: "pm2", windowMs: 30_000, preStopMs: 0, source: "kill_timeout=30000", assumed: false }
    ])
    expect(PlatformCheck.detect({ pm_id: "0", PM2_KILL_TIMEOUT: "5000" })).toMatchObject([
      { platform: "pm2", windowMs: 5_000, assumed: false }
    ])
    expect(PlatformCheck.detect({ pm_id: "0" })).toMatchObject([
      { platform: "pm2", windowMs: PlatformCheck.PM2_DEFAULT_KILL_TIMEOUT_MS, assumed: true }
    ])
    // A value that is not a number is not trusted.
    expect(PlatformCheck.detect({ pm_id: "0", kill_timeout: "soon" })).toMatchObject([
      { platform: "pm2", windowMs: 1_600, assumed: true }
    ])
  })

  it("Kubernetes: TERMINATION_GRACE_PERIOD_SECONDS minus PRE_STOP_SLEEP_SECONDS, else the default 30 s", () => {
    expect(PlatformCheck.detect({ KUBERNETES_SERVICE_HOST: "10.0.0.1" })).toMatchObject([
      { platform: "kubernetes", windowMs: 30_000, preStopMs: 0, assumed: true }
    ])
    expect(
      PlatformCheck.detect({
        KUBERNETES_SERVICE_HOST: "10.0.0.1",
        TERMINATION_GRACE_PERIOD_SECONDS: "45",
        PRE_STOP_SLEEP_SECONDS: "5"
      })
    ).toMatchObject([{ platform: "kubernetes", windowMs: 40_000, preStopMs: 5_000, assumed: false }])
    // An empty KUBERNETES_SERVICE_HOST is not Kubernetes.
    expect(PlatformCheck.detect({ KUBERNETES_SERVICE_HOST: "" })).toEqual([])
  })
})

describe("PlatformCheck.evaluate", () => {
  it("PM2: kill_timeout must be at least the budget + 1 s", () => {
    const at = (killTimeout: number) =>
      PlatformCheck.evaluate(25_000, PlatformCheck.detect({ pm_id: "0", kill_timeout: String(killTimeout) }))[0]!
    expect(at(26_000).fits).toBe(true)
    expect(at(25_999).fits).toBe(false)
    expect(at(25_999).requiredMs).toBe(26_000)
    expect(at(25_999).message).toContain("set kill_timeout to at least 26000")
  })

  it("Kubernetes: grace period must be at least preStop + budget + 2 s", () => {
    const at = (grace: number, preStop: number) =>
      PlatformCheck.evaluate(
        25_000,
        PlatformCheck.detect({
          KUBERNETES_SERVICE_HOST: "10.0.0.1",
          TERMINATION_GRACE_PERIOD_SECONDS: String(grace),
          PRE_STOP_SLEEP_SECONDS: String(preStop)
        })
      )[0]!
    expect(at(32, 5).fits).toBe(true)
    expect(at(31, 5).fits).toBe(false)
    expect(at(31, 5).message).toContain("set terminationGracePeriodSeconds to at least 32")
    expect(at(27, 0).fits).toBe(true)
    // The default 30 s grace period fits the default 25 s budget without a preStop sleep.
    expect(PlatformCheck.evaluate(25_000, PlatformCheck.detect({ KUBERNETES_SERVICE_HOST: "x" }))[0]!.fits).toBe(true)
  })
})

describe("PlatformCheck.check", () => {
  it.effect("warns under PM2 with its default kill_timeout and the default budget, naming both fixes", () =>
    Effect.gen(function*() {
      const { value, warnings } = yield* captureWarnings(
        Effect.flatMap(ShutdownConfig.load(), PlatformCheck.check).pipe(withEnv({ pm_id: "0" }))
      )
      expect(value).toHaveLength(1)
      expect(warnings).toHaveLength(1)
      expect(warnings[0]).toContain("PM2 sends SIGKILL 1600 ms after its stop signal")
      expect(warnings[0]).toContain(`SHUTDOWN_TIMEOUT is ${ms(ShutdownConfig.DEFAULT_TIMEOUT)} ms`)
      expect(warnings[0]).toContain("set kill_timeout to at least 26000")
      expect(warnings[0]).toContain("SHUTDOWN_TIMEOUT to at most 600 millis")
    }))

  it.effect("stays quiet when the budget fits", () =>
    Effect.gen(function*() {
      const { value, warnings } = yield* captureWarnings(
        Effect.flatMap(ShutdownConfig.load(), PlatformCheck.check).pipe(
          withEnv({ pm_id: "0", kill_timeout: "26000", KUBERNETES_SERVICE_HOST: "10.0.0.1" })
        )
      )
      expect(value.map((f) => [f.platform, f.fits])).toEqual([["pm2", true], ["kubernetes", true]])
      expect(warnings).toEqual([])
    }))

  it.effect("warns on Kubernetes when SHUTDOWN_TIMEOUT outgrows the grace period, and says the default was assumed", () =>
    Effect.gen(function*() {
      const { warnings } = yield* captureWarnings(
        Effect.flatMap(ShutdownConfig.load(), PlatformCheck.check).pipe(
          withEnv({ KUBERNETES_SERVICE_HOST: "10.0.0.1", SHUTDOWN_TIMEOUT: "40 seconds" })
        )
      )
      expect(warnings).toHaveLength(1)
      expect(warnings[0]).toContain("Kubernetes' default, 30 s")
      expect(warnings[0]).toContain("set terminationGracePeriodSeconds to at least 42")
    }))

  it.effect("as a layer, with the program's code options", () =>
    Effect.gen(function*() {
      const { warnings } = yield* captureWarnings(
        Layer.build(PlatformCheck.layer({ timeout: "20 seconds" })).pipe(
          Effect.scoped,
          withEnv({ pm_id: "1", kill_timeout: "20500" })
        )
      )
      expect(warnings).toHaveLength(1)
      expect(warnings[0]).toContain("set kill_timeout to at least 21000")
    }))
})

describe("PlatformCheck.inspectProcess", () => {
  const tags = (info: PlatformCheck.ProcessInfo) => PlatformCheck.inspectProcess(info).map((w) => w._tag)
  const npmStart = { pid: 200, argv: ["npm start"] }

  it("says nothing for node started by a terminal, systemd, tini or a supervisor", () => {
    expect(tags(plainProcess)).toEqual([])
    expect(tags({ pid: 900, ancestors: [{ pid: 1, argv: ["/sbin/init"] }] })).toEqual([])
    expect(tags({ pid: 7, ancestors: [{ pid: 1, argv: ["/usr/bin/tini", "--", "node", "main.js"] }] })).toEqual([])
    expect(tags({ pid: 300, ancestors: [{ pid: 250, argv: ["PM2 v6.0.8: God Daemon (/root/.pm2)"] }] })).toEqual([])
    expect(tags({ pid: 300, ancestors: [] })).toEqual([])
  })

  it("PID 1: no init, so no reaping and no re-raised signal", () => {
    const [warning] = PlatformCheck.inspectProcess({ pid: 1, ancestors: [] })
    expect(warning?._tag).toBe("Pid1WithoutInit")
    expect(warning?.message).toContain("is PID 1")
    expect(warning?.message).toContain("SHUTDOWN_RERAISE_SIGNAL exits 128 + n")
    expect(warning?.message).toContain("docker run --init")
  })

  it("a package manager as the parent: npm's title, npm-cli.js, yarn, pnpm, bun", () => {
    const managerOf = (argv: ReadonlyArray<string>) => {
      const [warning] = PlatformCheck.inspectProcess({ pid: 300, ancestors: [{ pid: 200, argv }] })
      return warning?._tag === "PackageManagerParent" ? warning.manager : undefined
    }
    expect(managerOf(["npm start"])).toBe("npm")
    expect(managerOf(["npm exec node main.ts"])).toBe("npm")
    expect(managerOf(["node", "/usr/lib/node_modules/npm/bin/npm-cli.js", "start"])).toBe("npm")
    expect(managerOf(["node", "/usr/local/bin/yarn", "start"])).toBe("yarn")
    expect(managerOf(["/usr/local/bin/pnpm", "start"])).toBe("pnpm")
    expect(managerOf(["bun", "run", "start"])).toBe("bun")
    expect(managerOf(["node", "server.js"])).toBeUndefined()
    expect(PlatformCheck.inspectProcess({ pid: 300, ancestors: [npmStart] })[0]?.message).toContain(
      "run node directly"
    )
  })

  it("a shell between npm and node (a script without exec, npm exec): the SIGTERM never reaches node", () => {
    const warnings = PlatformCheck.inspectProcess({
      pid: 301,
      ancestors: [{ pid: 300, argv: ["sh", "-c", "node main.ts"] }, npmStart]
    })
    expect(warnings).toMatchObject([{ _tag: "ShellParent", startedBy: "package-manager" }])
    expect(warnings[0]!.message).toContain("never signalled, never drained")
    expect(warnings[0]!.message).toContain("exec")
  })

  it("a shell-form CMD: sh as PID 1, or sh under tini", () => {
    expect(PlatformCheck.inspectProcess({ pid: 7, ancestors: [{ pid: 1, argv: ["/bin/sh", "-c", "node main.ts"] }] }))
      .toMatchObject([{ _tag: "ShellParent", startedBy: "init", message: expect.stringContaining("which is PID 1") }])
    expect(
      PlatformCheck.inspectProcess({
        pid: 8,
        ancestors: [{ pid: 7, argv: ["/bin/sh", "-c", "node main.ts"] }, { pid: 1, argv: ["/usr/bin/tini", "--"] }]
      })
    ).toMatchObject([{ _tag: "ShellParent", startedBy: "init", message: expect.stringContaining("exec form") }])
  })

  it("any other `sh -c` parent; an interactive shell is not one", () => {
    expect(tags({ pid: 9, ancestors: [{ pid: 8, argv: ["bash", "-c", "node main.ts"] }, { pid: 5, argv: ["cron"] }] }))
      .toEqual(["ShellParent"])
    expect(tags({ pid: 9, ancestors: [{ pid: 8, argv: ["bash"] }] })).toEqual([])
  })

  it("a Node older than 22.19 (package.json engines): warned, with the version; 22.19 and newer are not", () => {
    const warned = (nodeVersion: string) => tags({ ...plainProcess, nodeVersion })
    expect(warned("20.20.2")).toEqual(["UnsupportedNode"])
    expect(warned("v22.18.9")).toEqual(["UnsupportedNode"])
    expect(warned("18.0.0")).toEqual(["UnsupportedNode"])
    expect(warned("22.19.0")).toEqual([])
    expect(warned("22.20.1")).toEqual([])
    expect(warned("24.0.0")).toEqual([])
    expect(warned("v100.0.0")).toEqual([])
    expect(warned("not a version")).toEqual([])
    expect(PlatformCheck.inspectProcess({ ...plainProcess, nodeVersion: "20.20.2" })).toEqual([{
      _tag: "UnsupportedNode",
      version: "20.20.2",
      message: expect.stringContaining("runs on Node 20.20.2, older than 22.19.0")
    }])
  })

  it("MINIMUM_NODE_VERSION is package.json's engines.node", () => {
    const engines = (packageJson as { readonly engines: { readonly node: string } }).engines.node
    expect(engines).toBe(`>=${PlatformCheck.MINIMUM_NODE_VERSION}`)
  })

  it("readProcessInfo reads this process and its parent from /proc", () => {
    const info = PlatformCheck.readProcessInfo()
    expect(info.pid).toBe(process.pid)
    expect(info.nodeVersion).toBe(process.versions.node)
    if (process.platform === "linux") expect(info.ancestors[0]?.pid).toBe(process.ppid)
  })
})

describe("PlatformCheck.check: the process check", () => {
  it.effect("logs a warning for each problem, besides the budget findings", () =>
    Effect.gen(function*() {
      const { value, warnings } = yield* captureWarnings(
        Effect.flatMap(ShutdownConfig.load(), PlatformCheck.check).pipe(
          withEnv({}, { pid: 1, ancestors: [] })
        )
      )
      expect(value).toEqual([])
      expect(warnings).toHaveLength(1)
      expect(warnings[0]).toContain("is PID 1")
    }))

  it.effect("at start-up, under Node 20: a warning naming the version and the supported one", () =>
    Effect.gen(function*() {
      const { value, warnings } = yield* captureWarnings(
        Effect.flatMap(ShutdownConfig.load(), PlatformCheck.check).pipe(
          withEnv({}, { ...plainProcess, nodeVersion: "20.20.2" })
        )
      )
      expect(value).toEqual([])
      expect(warnings).toEqual([expect.stringContaining("runs on Node 20.20.2, older than 22.19.0")])
    }))
})
