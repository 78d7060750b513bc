/**
 * `npm run bench:restart`: restarts on one machine with no load balancer in
 * front, under steady load, for each way of holding the port across a
 * restart, measured side by side in one run:
 *
 * | mechanism | who holds the port meanwhile | restart |
 * |---|---|---|
 * | `naive` | nobody | SIGTERM, wait for the exit, start the next (`Restart=always`) |
 * | `socket-activation` | the supervisor | the real `systemd-socket-activate` creates the socket; a stand-in for systemd's service manager (test/support/socket-holder.ts) holds it and restarts: stop, then start |
 * | `reuseport` | the kernel (`SO_REUSEPORT`), `tcp_migrate_req=0` | start the next on the same port, wait until it is ready, SIGTERM the old one |
 * | `reuseport-migrate` | the same, `tcp_migrate_req=1` | the same |
 * | `pm2-fork` | nobody (PM2 restarts a fork-mode app on reload) | `pm2 reload` |
 * | `pm2-cluster` | PM2's primary process (Node's cluster module) | `pm2 reload`, 2 instances |
 *
 * Every scenario runs inside a network namespace this bench creates (`ip
 * netns`, root needed), with its own `net.ipv4.tcp_migrate_req` (1 for
 * `reuseport-migrate`, else 0) and the bench's ports reserved against
 * ephemeral use, so the host's settings are never touched. PM2 (the `pm2` npm package) is
 * installed by the bench into a cache folder, and runs with its own
 * `PM2_HOME`; its daemon is killed at the end.
 *
 * Every scenario runs as its own child process, inside its namespace;
 * everything listens on 127.0.0.1, ports 42100-42199; each
 * scenario has a deadline, after which it is killed and reported as such.
 * Output: the table on stdout, bench/results/restart.json,
 * bench/results/restart.svg.
 *
 * Settings (environment): RESTART_COUNT (20), RESTART_MECHANISMS (all,
 * comma-separated), RESTART_SERVICE (`bench`: bench/restart/service.ts, or
 * `example`: examples/service/main.ts).
 */
import { type ChildProcess, execFile, spawn, spawnSync } from "node:child_process"
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import * as Http from "node:http"
import { cpus, loadavg, tmpdir } from "node:os"
import { join } from "node:path"
import { createInterface } from "node:readline"
import { renderChart } from "./chart.ts"
import { type LoadSummary, startLoad } from "./load.ts"

const root = join(import.meta.dirname, "..", "..")
const num = (name: string, fallback: number) => (process.env[name] === undefined ? fallback : Number(process.env[name]))

export const mechanismNames = [
  "naive",
  "socket-activation",
  "reuseport",
  "reuseport-migrate",
  "pm2-fork",
  "pm2-cluster"
] as const
export type MechanismName = (typeof mechanismNames)[number]

const settings = {
  restarts: num("RESTART_COUNT", 20),
  /** Steady load between restarts. */
  pauseMs: num("RESTART_PAUSE_MS", 300),
  warmupMs: 1_000,
  tailMs: 1_000,
  load: {
    host: "127.0.0.1",
    keepAliveRate: num("RESTART_KEEPALIVE_RATE", 60),
    freshRate: num("RESTART_FRESH_RATE", 30),
    longRate: 4,
    shortMs: 5,
    longMs: 1_000,
    timeoutMs: 20_000,
    stormConcurrency: num("RESTART_STORM_CONCURRENCY", 6)
  },
  /** Listening to Ready (PM2's `ready`): a warm-up, so a supervisor that does not wait for readiness shows it. */
  readyAfterMs: 300,
  /**
   * The lame duck: while it lasts, every response says `Connection: close`,
   * so keep-alive clients drop their connections after an answer instead of
   * having them closed while idle (a request can cross that close on the
   * wire: HTTP/1.1's keep-alive race, RFC 9112 §9.3.1).
   */
  shutdownDelay: process.env.RESTART_SHUTDOWN_DELAY ?? "1 second",
  pm2: {
    version: "7.0.4",
    instances: 2,
    listenTimeoutMs: 10_000,
    killTimeoutMs: 26_000
  },
  scenarioDeadlineMs: num("RESTART_SCENARIO_DEADLINE_MS", 420_000)
}

const serviceFile = process.env.RESTART_SERVICE === "example"
  ? join(root, "examples", "service", "main.ts")
  : join(import.meta.dirname, "service.ts")

/** The services' ports: PORT_BASE + the scenario's index, reserved in each namespace. */
const PORT_BASE = 42100

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

// -----------------------------------------------------------------------------
// Events: `MARK <event> <pid> <epoch ms>` from every service instance (their
// stdout, or PM2's log file), `HOLDER started|exited` from the socket holder.
// -----------------------------------------------------------------------------

interface Event {
  readonly event: string
  readonly pid: number
  readonly at: number
}

const events: Array<Event> = []
const eventWaiters: Array<() => void> = []
let output = ""

const onLine = (line: string) => {
  output = (output + line + "\n").slice(-20_000)
  const mark = /^MARK (\S+) (\d+) (\d+)$/.exec(line)
  const holder = /^HOLDER (started|exited) (\d+) (?:\S+ )?(\d+)$/.exec(line)
  const match = mark ?? holder
  if (match === null) return
  events.push({
    event: holder !== null ? `holder-${match[1]}` : match[1]!,
    pid: Number(match[2]),
    at: Number(match[3])
  })
  for (const wake of eventWaiters.splice(0)) wake()
}

const waitForEvent = (predicate: (event: Event) => boolean, what: string, timeoutMs = 30_000) =>
  new Promise<Event>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`no ${what} within ${timeoutMs} ms; last output:\n${output.slice(-3_000)}`)),
      timeoutMs
    )
    const check = () => {
      const found = events.find(predicate)
      if (found !== undefined) {
        clearTimeout(timer)
        return resolve(found)
      }
      eventWaiters.push(check)
    }
    check()
  })

const children = new Set<ChildProcess>()
process.on("exit", () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
  // Instances started by the socket holder are not our children: end those
  // not seen to exit (holder-exited, or released just before their exit).
  const gone = new Set(events.filter((e) => e.event === "holder-exited" || e.event === "released").map((e) => e.pid))
  for (const pid of new Set(events.filter((e) => e.event === "holder-started").map((e) => e.pid))) {
    if (gone.has(pid)) continue
    try {
      process.kill(pid, "SIGKILL")
    } catch {
      // already gone
    }
  }
})

const spawnLogged = (command: string, args: ReadonlyArray<string>, env: Record<string, string>) => {
  const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ["pipe", "pipe", "pipe"] })
  children.add(child)
  createInterface({ input: child.stdout! }).on("line", onLine)
  createInterface({ input: child.stderr! }).on("line", onLine)
  const exited = new Promise<number | string>((resolve) =>
    child.once("exit", (code, signal) => {
      children.delete(child)
      resolve(code ?? signal ?? "unknown")
    })
  )
  return { child, exited }
}

/** A GET on a fresh connection, to wake a socket-activated service. */
const wake = (port: number) =>
  new Promise<void>((resolve) => {
    const request = Http.get({ host: "127.0.0.1", port, path: "/work", agent: false }, (response) => {
      response.resume()
      response.on("end", resolve)
    })
    request.on("error", () => resolve())
  })

// -----------------------------------------------------------------------------
// Mechanisms
// -----------------------------------------------------------------------------

interface RestartTiming {
  /** From the restart command until the new instance(s) are ready and the old one(s) have exited. */
  readonly restartMs: number
}

interface Driver {
  /** Instances replaced by one restart (PM2 cluster: all of them); default 1. */
  readonly replacedPerRestart?: number
  readonly start: () => Promise<void>
  readonly restart: () => Promise<RestartTiming>
  /** Stops; may return what it checked on the way (PM2's listen_timeout). */
  readonly stop: () => Promise<Record<string, unknown> | void>
  /** What was checked live about the supervisor's settings, if anything. */
  readonly checks?: () => Promise<Record<string, unknown>>
}

const serviceEnv = (port: number, extra: Record<string, string> = {}) => ({
  PORT: String(port),
  HOST: "127.0.0.1",
  READY_AFTER_MS: String(settings.readyAfterMs),
  SHUTDOWN_DELAY: settings.shutdownDelay,
  LOG_FILE: join(tmpdir(), `restart-bench-${process.pid}.jsonl`),
  ...extra
})

/** One instance at a time on its own port: stop, then start. */
const naiveDriver = (port: number): Driver => {
  let current: ReturnType<typeof spawnLogged> | undefined
  const startOne = async () => {
    current = spawnLogged(process.execPath, [serviceFile], serviceEnv(port))
    const pid = current.child.pid!
    await waitForEvent((e) => e.event === "ready" && e.pid === pid, `ready from ${pid}`)
  }
  return {
    start: startOne,
    restart: async () => {
      const began = Date.now()
      current!.child.kill("SIGTERM")
      await current!.exited
      await startOne()
      return { restartMs: Date.now() - began }
    },
    stop: async () => {
      current?.child.kill("SIGTERM")
      await current?.exited
    }
  }
}

/** systemd-socket-activate creates the socket; the holder keeps it and restarts the service: stop, then start. */
const socketActivationDriver = (port: number): Driver => {
  let holder: ReturnType<typeof spawnLogged> | undefined
  let pid = 0
  const setenv = Object.entries(serviceEnv(port)).map(([name, value]) => `-E${name}=${value}`)
  return {
    start: async () => {
      holder = spawnLogged("systemd-socket-activate", [
        "-l",
        `127.0.0.1:${port}`,
        "--fdname=http",
        ...setenv,
        "--",
        process.execPath,
        join(root, "test", "support", "socket-holder.ts"),
        process.execPath,
        serviceFile
      ], {})
      await sleep(300)
      for (let i = 0; i < 50 && !output.includes(`Listening on 127.0.0.1:${port}`); i++) await sleep(100)
      // Socket activation starts the service on the first connection.
      await wake(port)
      pid = (await waitForEvent((e) => e.event === "holder-started", "the first instance")).pid
      await waitForEvent((e) => e.event === "ready" && e.pid === pid, `ready from ${pid}`)
    },
    restart: async () => {
      const began = Date.now()
      const old = pid
      holder!.child.stdin!.write("restart\n")
      await waitForEvent((e) => e.event === "holder-exited" && e.pid === old, `exit of ${old}`)
      pid =
        (await waitForEvent((e) => e.event === "holder-started" && e.at >= began && e.pid !== old, "the next instance"))
          .pid
      await waitForEvent((e) => e.event === "ready" && e.pid === pid, `ready from ${pid}`)
      return { restartMs: Date.now() - began }
    },
    stop: async () => {
      holder?.child.stdin!.write("stop\n")
      await holder?.exited
    }
  }
}

/** SO_REUSEPORT: the next instance binds the same port and is ready before the old one is stopped. */
const reusePortDriver = (port: number): Driver => {
  let current: ReturnType<typeof spawnLogged> | undefined
  const startOne = async () => {
    const next = spawnLogged(process.execPath, [serviceFile], serviceEnv(port, { REUSE_PORT: "true" }))
    const pid = next.child.pid!
    await waitForEvent((e) => e.event === "ready" && e.pid === pid, `ready from ${pid}`)
    return next
  }
  return {
    start: async () => {
      current = await startOne()
    },
    restart: async () => {
      const began = Date.now()
      const old = current!
      current = await startOne()
      old.child.kill("SIGTERM")
      await old.exited
      return { restartMs: Date.now() - began }
    },
    stop: async () => {
      current?.child.kill("SIGTERM")
      await current?.exited
    }
  }
}

const pm2Dir = join(tmpdir(), "effect-graceful-bench", `pm2-${settings.pm2.version}`)
const pm2Bin = join(pm2Dir, "node_modules", "pm2", "bin", "pm2")

/** Installs the `pm2` npm package once into a cache folder (outside the project). */
const ensurePm2 = () => {
  if (existsSync(pm2Bin)) return
  console.log(`installing pm2@${settings.pm2.version} into ${pm2Dir} ...`)
  mkdirSync(pm2Dir, { recursive: true })
  const result = spawnSync("npm", [
    "install",
    "--no-save",
    "--no-audit",
    "--no-fund",
    "--prefix",
    pm2Dir,
    `pm2@${settings.pm2.version}`
  ], {
    stdio: "inherit"
  })
  if (result.status !== 0 || !existsSync(pm2Bin)) throw new Error("could not install pm2")
}

const pm2Driver = (port: number, mode: "fork" | "cluster"): Driver => {
  const home = mkdtempSync(join(tmpdir(), "restart-bench-pm2-"))
  const logFile = join(home, "service.log")
  const name = `restart-bench-${mode}`
  const instances = mode === "cluster" ? settings.pm2.instances : 1
  const pm2 = (args: ReadonlyArray<string>, env: Record<string, string> = {}) =>
    new Promise<string>((resolve, reject) => {
      execFile(
        process.execPath,
        [pm2Bin, ...args],
        { env: { ...process.env, PM2_HOME: home, ...env } },
        (error, stdout, stderr) =>
          error ? reject(new Error(`pm2 ${args.join(" ")}: ${error.message}\n${stdout}\n${stderr}`)) : resolve(stdout)
      )
    })
  // However the scenario ends, PM2's daemon and its workers go with it.
  let killed = false
  process.on("exit", () => {
    if (killed) return
    spawnSync(process.execPath, [pm2Bin, "kill"], { env: { ...process.env, PM2_HOME: home }, stdio: "ignore" })
    rmSync(home, { recursive: true, force: true })
  })
  // Tail PM2's merged log file for the instances' marks.
  let offset = 0
  let partial = ""
  const tail = setInterval(() => {
    if (!existsSync(logFile)) return
    const content = readFileSync(logFile)
    if (content.length <= offset) return
    const text = partial + content.subarray(offset).toString("utf8")
    offset = content.length
    const lines = text.split("\n")
    partial = lines.pop() ?? ""
    for (const line of lines) onLine(line)
  }, 25)
  const ecosystem = join(home, "ecosystem.config.json")
  writeFileSync(
    ecosystem,
    JSON.stringify(
      {
        apps: [{
          name,
          script: serviceFile,
          interpreter: process.execPath,
          exec_mode: mode,
          instances,
          wait_ready: true,
          listen_timeout: settings.pm2.listenTimeoutMs,
          kill_timeout: settings.pm2.killTimeoutMs,
          shutdown_with_message: true,
          out_file: logFile,
          error_file: logFile,
          merge_logs: true,
          env: serviceEnv(port)
        }]
      },
      null,
      2
    )
  )
  const readyCount = () => {
    const exited = new Set(events.filter((e) => e.event === "released").map((e) => e.pid))
    return new Set(events.filter((e) => e.event === "ready" && !exited.has(e.pid)).map((e) => e.pid)).size
  }
  /**
   * A reload is over when `instances` instances started since `began`, the
   * live ones (listening, not released) are exactly `instances` and all
   * ready, and every instance told to stop has released.
   */
  const waitSettled = async (began: number, timeoutMs = 60_000) => {
    for (let waited = 0; waited < timeoutMs; waited += 50) {
      const since = events.filter((e) => e.at >= began)
      const fresh = new Set(since.filter((e) => e.event === "listening").map((e) => e.pid))
      const released = new Set(events.filter((e) => e.event === "released").map((e) => e.pid))
      const ready = new Set(events.filter((e) => e.event === "ready").map((e) => e.pid))
      const live = new Set(events.filter((e) => e.event === "listening" && !released.has(e.pid)).map((e) => e.pid))
      const stopping = events.filter((e) => e.event.startsWith("shutdown:") && !released.has(e.pid))
      if (
        fresh.size >= instances && live.size === instances && [...live].every((pid) => ready.has(pid)) &&
        stopping.length === 0
      ) {
        return
      }
      await sleep(50)
    }
    throw new Error(`pm2 reload did not settle within ${timeoutMs} ms; last output:\n${output.slice(-3_000)}`)
  }
  return {
    start: async () => {
      await pm2(["start", ecosystem])
      for (let i = 0; i < 600 && readyCount() < instances; i++) await sleep(50)
      if (readyCount() < instances) throw new Error(`pm2 start: not ready; last output:\n${output.slice(-3_000)}`)
    },
    // One `pm2 reload` replaces every instance, one after the other.
    replacedPerRestart: instances,
    restart: async () => {
      const began = Date.now()
      await pm2(["reload", name])
      await waitSettled(began)
      return { restartMs: Date.now() - began }
    },
    stop: async () => {
      let listenTimeout: Record<string, unknown> | undefined
      if (mode === "cluster") {
        // listen_timeout, live: one more reload whose new workers become
        // ready only long after listen_timeout. PM2 must stop waiting for
        // `ready` at listen_timeout and replace each old worker anyway.
        const began = Date.now()
        const slow = settings.pm2.listenTimeoutMs * 4
        // The workers live now: the ones this reload must replace.
        const gone = new Set(events.filter((e) => e.event === "released").map((e) => e.pid))
        const old = new Set(events.filter((e) => e.event === "listening" && !gone.has(e.pid)).map((e) => e.pid))
        try {
          await pm2(["reload", name, "--update-env"], serviceEnv(port, { READY_AFTER_MS: String(slow) }))
          for (let i = 0; i < 2 * settings.pm2.listenTimeoutMs * instances / 50; i++) {
            if (events.filter((e) => e.event === "released" && old.has(e.pid)).length >= instances) break
            await sleep(50)
          }
          const since = events.filter((e) => e.at >= began)
          const shutdowns = since.filter((e) => e.event.startsWith("shutdown:") && old.has(e.pid))
          const readyBefore = since.filter((e) => e.event === "ready" && !old.has(e.pid))
          listenTimeout = {
            listenTimeoutMs: settings.pm2.listenTimeoutMs,
            newWorkersReadyAfterMs: slow,
            oldStoppedAfterReloadMs: shutdowns.map((e) => e.at - began),
            ok: shutdowns.length === instances &&
              shutdowns.every((e) => e.at - began >= settings.pm2.listenTimeoutMs - 100) &&
              readyBefore.every((ready) => shutdowns.every((e) => e.at < ready.at))
          }
        } catch (error) {
          listenTimeout = { ok: false, error: String(error) }
        }
      }
      await pm2(["delete", name])
      await pm2(["kill"])
      killed = true
      clearInterval(tail)
      rmSync(home, { recursive: true, force: true })
      return listenTimeout === undefined ? undefined : { listenTimeout }
    },
    checks: async () => {
      const shutdowns = events.filter((e) => e.event.startsWith("shutdown:"))
      const released = new Set(events.filter((e) => e.event === "released").map((e) => e.pid))
      // wait_ready: when an old worker is told to stop, its replacement is
      // already ready (cluster mode; fork mode stops first by design).
      const readyAt = (pid: number) => events.find((e) => e.event === "ready" && e.pid === pid)?.at
      const liveReadyAt = (at: number, except: number) =>
        new Set(
          events.filter((e) =>
            e.event === "ready" && e.pid !== except && e.at <= at &&
            !shutdowns.some((s) => s.pid === e.pid && s.at <= at)
          ).map((e) => e.pid)
        ).size
      return {
        shutdownTriggers: Object.fromEntries(
          [...new Set(shutdowns.map((e) => e.event.slice("shutdown:".length)))].map((
            trigger
          ) => [trigger, shutdowns.filter((e) => e.event === `shutdown:${trigger}`).length])
        ),
        shutdownWithMessage: shutdowns.length > 0 && shutdowns.every((e) => e.event === "shutdown:Message"),
        killTimeoutRespected: shutdowns.every((e) => released.has(e.pid)),
        waitReady: mode === "cluster"
          ? shutdowns.filter((e) => readyAt(e.pid) !== undefined).every((e) => liveReadyAt(e.at, e.pid) >= instances)
          : "n/a (fork mode stops the old process before starting the new one)"
      }
    }
  }
}

const driverFor = (name: MechanismName, port: number): Driver => {
  switch (name) {
    case "naive":
      return naiveDriver(port)
    case "socket-activation":
      return socketActivationDriver(port)
    case "reuseport":
    case "reuseport-migrate":
      return reusePortDriver(port)
    case "pm2-fork":
      return pm2Driver(port, "fork")
    case "pm2-cluster":
      return pm2Driver(port, "cluster")
  }
}

// -----------------------------------------------------------------------------
// One scenario (a child process of the main run)
// -----------------------------------------------------------------------------

export interface ScenarioResult {
  readonly mechanism: MechanismName
  /** Instances replaced under load. */
  readonly restarts: number
  /** Restart commands (`pm2 reload`, ...): one replaces `restarts / commands` instances. */
  readonly commands: number
  /** Per restart command: until the new instance(s) are ready and the old one(s) have exited. */
  readonly restartMs: { readonly median: number; readonly max: number }
  readonly load: LoadSummary
  readonly tcpMigrateReq: number | null
  readonly checks: Record<string, unknown>
  /** Every instance's marks (listening, ready, shutdown:<trigger>, released), ms since the load started. */
  readonly events: ReadonlyArray<Event>
  readonly error?: string
}

const median = (values: ReadonlyArray<number>) => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted.length === 0 ? 0 : sorted[Math.floor(sorted.length / 2)]!
}

const runScenario = async (name: MechanismName, port: number): Promise<ScenarioResult> => {
  const driver = driverFor(name, port)
  await driver.start()
  const load = startLoad({ ...settings.load, port })
  const loadStartedAt = Date.now()
  await sleep(settings.warmupMs)
  const timings: Array<RestartTiming> = []
  let error: string | undefined
  try {
    // `restarts` counts instance replacements: a PM2 cluster reload of 2 instances is 2.
    const perRestart = driver.replacedPerRestart ?? 1
    for (let i = 0; i < Math.ceil(settings.restarts / perRestart); i++) {
      // A storm of new connections across the handover.
      void load.storm(true)
      timings.push(await driver.restart())
      await sleep(200)
      await load.storm(false)
      // Back to steady state before the next restart: what queued during
      // this one has been answered (or has failed), then a pause.
      await load.settledUpToNow()
      await sleep(settings.pauseMs)
    }
    await sleep(settings.tailMs)
  } catch (cause) {
    error = String(cause)
  }
  const summary = await load.stop()
  const checks = { ...(await driver.checks?.()), ...(await driver.stop()) }
  const migrate = existsSync("/proc/sys/net/ipv4/tcp_migrate_req")
    ? Number(readFileSync("/proc/sys/net/ipv4/tcp_migrate_req", "utf8").trim())
    : null
  return {
    mechanism: name,
    restarts: timings.length * (driver.replacedPerRestart ?? 1),
    commands: timings.length,
    restartMs: {
      median: median(timings.map((t) => t.restartMs)),
      max: Math.max(0, ...timings.map((t) => t.restartMs))
    },
    load: summary,
    tcpMigrateReq: migrate,
    checks,
    events: events.map((e) => ({ ...e, at: e.at - loadStartedAt })),
    ...(error === undefined ? {} : { error })
  }
}

// -----------------------------------------------------------------------------
// The main run
// -----------------------------------------------------------------------------

/** `tcp_migrate_req` for the scenario's network namespace (every scenario gets one). */
const migrateFor = (name: MechanismName): 0 | 1 => (name === "reuseport-migrate" ? 1 : 0)

const ip = (...args: Array<string>) => {
  const result = spawnSync("ip", args, { encoding: "utf8" })
  if (result.status !== 0) throw new Error(`ip ${args.join(" ")}: ${result.stderr}`)
}

const runInChild = async (name: MechanismName, port: number): Promise<ScenarioResult> => {
  const out = join(mkdtempSync(join(tmpdir(), "restart-bench-")), "result.json")
  const namespace = `eg-restart-${process.pid}-${name}`
  const self = [process.execPath, import.meta.filename, "--scenario", name, "--port", String(port), "--out", out]
  // Each scenario in a network namespace of its own: its own loopback, its
  // own tcp_migrate_req, and the bench's ports reserved, so that no client's
  // ephemeral source port can take the service's port while it is unbound
  // between a naive restart's stop and start. The host's settings are never
  // touched.
  ip("netns", "add", namespace)
  ip("netns", "exec", namespace, "ip", "link", "set", "lo", "up")
  ip("netns", "exec", namespace, "sysctl", "-q", "-w", `net.ipv4.tcp_migrate_req=${migrateFor(name)}`)
  ip(
    "netns",
    "exec",
    namespace,
    "sysctl",
    "-q",
    "-w",
    `net.ipv4.ip_local_reserved_ports=${PORT_BASE}-${PORT_BASE + 99}`
  )
  const command = ["ip", "netns", "exec", namespace, ...self]
  try {
    const child = spawn(command[0]!, command.slice(1), { stdio: ["ignore", "inherit", "inherit"] })
    children.add(child)
    // At the deadline: SIGTERM (the scenario cleans up: PM2's daemon, its instances), then SIGKILL.
    const timer = setTimeout(() => {
      child.kill("SIGTERM")
      setTimeout(() => child.kill("SIGKILL"), 10_000).unref()
    }, settings.scenarioDeadlineMs)
    const code = await new Promise<number | null>((resolve) => child.once("exit", resolve))
    clearTimeout(timer)
    children.delete(child)
    if (code !== 0 || !existsSync(out)) {
      throw new Error(`scenario ${name} ended with ${code} (deadline ${settings.scenarioDeadlineMs} ms)`)
    }
    return JSON.parse(readFileSync(out, "utf8")) as ScenarioResult
  } finally {
    spawnSync("ip", ["netns", "del", namespace])
  }
}

const pad = (text: string | number, width: number) => String(text).padStart(width)

/** The figures of the table: steady load (keep-alive, new connections, long requests) and the storm, apart. */
export const figuresOf = (r: ScenarioResult) => {
  const steadyStreams = [r.load.streams.keepAlive, r.load.streams.fresh, r.load.streams.long]
  const steadyKinds: Record<string, number> = {}
  for (const stream of steadyStreams) {
    for (const [kind, count] of Object.entries(stream.kinds)) steadyKinds[kind] = (steadyKinds[kind] ?? 0) + count
  }
  const storm = r.load.streams.storm
  return {
    requests: steadyStreams.reduce((sum, s) => sum + s.sent, 0),
    failed: steadyStreams.reduce((sum, s) => sum + s.failed, 0),
    refused: steadyKinds.refused ?? 0,
    reset: (steadyKinds.reset ?? 0) + (steadyKinds["closed without response"] ?? 0) +
      (steadyKinds["body cut short"] ?? 0),
    timeout: steadyKinds.timeout ?? 0,
    kinds: steadyKinds,
    stormConnections: storm.sent,
    /** Connected (the kernel accepted them), then reset or closed without an answer. */
    stormDropped: (storm.kinds.reset ?? 0) + (storm.kinds["closed without response"] ?? 0) +
      (storm.kinds["body cut short"] ?? 0),
    stormRefused: storm.kinds.refused ?? 0,
    stormFailed: storm.failed
  }
}

const printTable = (results: ReadonlyArray<ScenarioResult>) => {
  console.log("")
  console.log(
    `${"mechanism".padEnd(18)} ${pad("restarts", 8)} ${pad("requests", 9)} ${pad("failed", 7)} ${pad("refused", 8)} ${
      pad("reset", 6)
    } ${pad("timeout", 8)} ${pad("p99 ms", 7)} ${pad("max ms", 7)} ${pad("restart ms", 11)} | ${
      pad("storm conns", 11)
    } ${pad("dropped", 8)} ${pad("refused", 8)}`
  )
  for (const r of results) {
    const f = figuresOf(r)
    console.log(
      `${r.mechanism.padEnd(18)} ${pad(r.restarts, 8)} ${pad(f.requests, 9)} ${pad(f.failed, 7)} ${pad(f.refused, 8)} ${
        pad(f.reset, 6)
      } ${pad(f.timeout, 8)} ${pad(r.load.latencyMs.p99, 7)} ${pad(r.load.latencyMs.max, 7)} ${
        pad(r.restartMs.median, 11)
      } | ${pad(f.stormConnections, 11)} ${pad(f.stormDropped, 8)} ${pad(f.stormRefused, 8)}${
        r.error === undefined ? "" : `  ERROR: ${r.error.split("\n")[0]}`
      }`
    )
  }
}

const main = async () => {
  const argv = process.argv.slice(2)
  const at = (flag: string) => argv[argv.indexOf(flag) + 1]
  if (argv.includes("--scenario")) {
    process.on("SIGTERM", () => process.exit(1))
    const result = await runScenario(at("--scenario") as MechanismName, Number(at("--port")))
    writeFileSync(at("--out")!, JSON.stringify(result))
    process.exit(0)
  }
  const selected = (process.env.RESTART_MECHANISMS?.split(",") ?? mechanismNames) as ReadonlyArray<MechanismName>
  if (selected.some((name) => name.startsWith("pm2"))) ensurePm2()
  if (process.getuid?.() !== 0) {
    throw new Error("each scenario runs in a network namespace the bench creates: run as root")
  }
  if (selected.includes("socket-activation") && spawnSync("systemd-socket-activate", ["--version"]).status !== 0) {
    throw new Error("systemd-socket-activate not found (Debian: apt-get install systemd)")
  }
  const began = Date.now()
  // The machine's 1-minute load average at the start and the end: figures from a busy machine are slower.
  const loadBefore = loadavg()[0]!
  const results: Array<ScenarioResult> = []
  for (const [i, name] of selected.entries()) {
    console.log(`\n== ${name} (${settings.restarts} restarts) ==`)
    const started = Date.now()
    const result = await runInChild(name, PORT_BASE + i)
    console.log(
      `${name}: ${result.load.sent} requests, ${result.load.failed} failed ${JSON.stringify(result.load.kinds)}, ${
        Math.round((Date.now() - started) / 1000)
      } s`
    )
    results.push(result)
  }
  printTable(results)
  const resultsDir = join(root, "bench", "results")
  mkdirSync(resultsDir, { recursive: true })
  const report = {
    date: new Date().toISOString(),
    machine: {
      cpus: cpus().length,
      node: process.version,
      kernel: spawnSync("uname", ["-r"], { encoding: "utf8" }).stdout.trim(),
      loadAverage: { atStart: Number(loadBefore.toFixed(1)), atEnd: Number(loadavg()[0]!.toFixed(1)) }
    },
    settings: { ...settings, service: serviceFile.slice(root.length + 1) },
    durationSeconds: Math.round((Date.now() - began) / 1000),
    results
  }
  const basename = process.env.RESTART_RESULTS_NAME ?? "restart"
  writeFileSync(join(resultsDir, `${basename}.json`), JSON.stringify(report, null, 2) + "\n")
  writeFileSync(join(resultsDir, `${basename}.svg`), renderChart(results.map((r) => ({ ...r, figures: figuresOf(r) }))))
  console.log(`\nwrote bench/results/${basename}.json and bench/results/${basename}.svg (${report.durationSeconds} s)`)
}

if (import.meta.main) {
  main().catch((error) => {
    console.error(error)
    process.exit(1)
  })
}
