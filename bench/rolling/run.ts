/**
 * Rolling restarts behind a real load balancer, under load: effect-graceful
 * (the example service) against a naive baseline (the same routes on Effect's
 * stock NodeHttpServer), measured in the same run.
 *
 * For each variant: HAProxy on loopback (see haproxy.ts for the settings and
 * why) in front of two instances; a steady rate of keep-alive requests
 * through HAProxy (load.ts); then rounds of rolling restarts: SIGTERM one
 * instance, start its replacement on the same port once the old process has
 * exited, wait until it answers /health/ready 200 directly and HAProxy has it
 * UP again, then the other instance. Every failed request counts (non-2xx,
 * reset, closed without an answer, timeout), per second.
 *
 * The lame-duck delay of our service follows the rule
 *   SHUTDOWN_DELAY ≥ fall × inter   (HAProxy's worst-case time to notice a 503)
 * with a margin of 100 % for check latency and scheduling jitter.
 *
 * Results: bench/results/rolling.json, and the chart bench/results/rolling.svg
 * (chart.ts). Loopback only, bounded in rounds and time, stops by itself, and
 * kills every child on the way out (error, SIGINT, SIGTERM included).
 *
 * Environment (all optional): ROLLING_ROUNDS (10), ROLLING_MIN_REQUESTS
 * (100000: more rounds until that many requests, up to ROLLING_MAX_ROUNDS 30),
 * ROLLING_RATE (requests/s, 1000), ROLLING_WORK_MS (5), ROLLING_VARIANT_SECONDS
 * (time cap per variant, 180), ROLLING_ONLY (one variant), ROLLING_OURS (the
 * service file for "ours", default examples/service/main.ts).
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, writeFileSync } from "node:fs"
import * as Http from "node:http"
import { cpus, tmpdir } from "node:os"
import { join, relative } from "node:path"
import { freePort } from "../support/ports.ts"
import { renderChart } from "./chart.ts"
import * as Haproxy from "./haproxy.ts"
import { Load, type LoadSummary } from "./load.ts"

const num = (name: string, fallback: number) => {
  const value = process.env[name]
  return value === undefined || value === "" ? fallback : Number(value)
}

const root = join(import.meta.dirname, "..", "..")
const haproxySettings = Haproxy.defaultSettings
/** HAProxy's worst-case time to take a server that answers 503 out of the pool. */
const detectionMs = haproxySettings.fall * haproxySettings.interMs
const settings = {
  rounds: num("ROLLING_ROUNDS", 10),
  maxRounds: num("ROLLING_MAX_ROUNDS", 30),
  minRequests: num("ROLLING_MIN_REQUESTS", 100_000),
  // One instance must carry the whole rate while its peer restarts (and the
  // example service's start-up, PGlite included, takes a CPU for ~3 s): on a
  // 2-CPU machine it sustains about 1,700 req/s alone, so 1,000 leaves room.
  rate: num("ROLLING_RATE", 1_000),
  workMs: num("ROLLING_WORK_MS", 5),
  timeoutMs: 5_000,
  maxSockets: 64,
  warmupMs: 2_000,
  pauseBetweenRoundsMs: 500,
  tailMs: 2_000,
  // Ours needs ~115 s for 10 rounds, the naive baseline ~160 s (its processes
  // take 6.4 s to exit): the cap keeps `npm run bench` within 10 minutes.
  variantSeconds: num("ROLLING_VARIANT_SECONDS", 180),
  // The rule: delay ≥ fall × inter; twice that leaves room for a check's own
  // latency and for timers firing late on a busy machine.
  shutdownDelayMs: num("ROLLING_SHUTDOWN_DELAY_MS", 2 * detectionMs),
  bucketMs: 1_000
}

interface Variant {
  readonly name: "effect-graceful" | "naive"
  readonly description: string
  readonly file: string
  readonly env: Readonly<Record<string, string>>
}

const variants: ReadonlyArray<Variant> = [
  {
    name: "effect-graceful",
    description:
      "examples/service on effect-graceful (one JSONL line and one PGlite row per /work; readiness 503 at SIGTERM, lame-duck delay, drain)",
    file: process.env.ROLLING_OURS ?? join(root, "examples", "service", "main.ts"),
    env: { SHUTDOWN_DELAY: `${settings.shutdownDelayMs} millis` }
  },
  {
    name: "naive",
    description:
      "the same routes on Effect's stock NodeHttpServer.layer + NodeRuntime.runMain, no effect-graceful (and no database or log work)",
    file: join(import.meta.dirname, "naive-service.ts"),
    env: {}
  }
]

// -----------------------------------------------------------------------------
// Children: every process we start is killed when we leave, however we leave.
// -----------------------------------------------------------------------------

const children = new Set<ChildProcess>()
const killAll = () => {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
  }
}
process.on("exit", killAll)
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(signal, () => {
    console.error(`\n${signal}: stopping the rolling benchmark`)
    killAll()
    process.exit(130)
  })
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** A GET on a fresh connection (no agent): a probe must not hold a keep-alive socket open on the service. */
const probe = (port: number, path: string): Promise<{ status: number; body: string }> =>
  new Promise((resolve, reject) => {
    const request = Http.get(
      { host: "127.0.0.1", port, path, agent: false, headers: { connection: "close" } },
      (response) => {
        let body = ""
        response.setEncoding("utf8")
        response.on("data", (chunk: string) => (body += chunk))
        response.on("end", () => resolve({ status: response.statusCode ?? 0, body }))
        response.on("error", reject)
      }
    )
    request.setTimeout(2_000, () => request.destroy(new Error("probe timeout")))
    request.on("error", reject)
  })

const median = (values: ReadonlyArray<number>) => {
  if (values.length === 0) return 0
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

const percentile99 = (values: ReadonlyArray<number>) => {
  if (values.length === 0) return 0
  const sorted = [...values].sort((a, b) => a - b)
  return Math.round(sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.99))]! * 10) / 10
}

// -----------------------------------------------------------------------------
// Instances of the service
// -----------------------------------------------------------------------------

interface Exited {
  readonly at: number
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
}

interface Instance {
  readonly server: string
  readonly port: number
  readonly generation: number
  readonly child: ChildProcess
  readonly exited: Promise<Exited>
  readonly reportFile: string
}

const startInstance = (
  variant: Variant,
  server: string,
  port: number,
  generation: number,
  dir: string,
  clock: () => number
): Instance => {
  const base = join(dir, `${variant.name}-${server}-${generation}`)
  const log = openSync(`${base}.log`, "a")
  const env: Record<string, string | undefined> = {
    ...process.env,
    ...variant.env,
    PORT: String(port),
    HOST: "127.0.0.1",
    LOG_FILE: `${base}.jsonl`,
    SHUTDOWN_REPORT_FILE: `${base}.report.json`,
    // The embedded database and pub/sub: the run is hermetic and the same on every machine.
    DATABASE_URL: undefined,
    REDIS_URL: undefined,
    KUBERNETES_SERVICE_HOST: undefined
  }
  const child = spawn(process.execPath, [variant.file], { env, stdio: ["ignore", log, log] })
  closeSync(log)
  children.add(child)
  const exited = new Promise<Exited>((resolve) =>
    child.once("exit", (code, signal) => {
      children.delete(child)
      resolve({ at: clock(), code, signal })
    })
  )
  return { server, port, generation, child, exited, reportFile: `${base}.report.json` }
}

/** Polls /health/ready directly until 200; fails if the process exits or time runs out. */
const waitReady = async (instance: Instance, timeoutMs: number): Promise<void> => {
  let exited = false
  void instance.exited.then(() => (exited = true))
  const deadline = performance.now() + timeoutMs
  while (performance.now() < deadline) {
    if (exited) throw new Error(`${instance.server}#${instance.generation} exited before it was ready`)
    const ok = await probe(instance.port, "/health/ready").then((r) => r.status === 200, () => false)
    if (ok) return
    await sleep(20)
  }
  throw new Error(`${instance.server}#${instance.generation} not ready after ${timeoutMs} ms`)
}

// -----------------------------------------------------------------------------
// HAProxy's view of the servers, sampled every 50 ms
// -----------------------------------------------------------------------------

interface Transition {
  readonly at: number
  readonly server: string
  readonly status: string
}

class Watcher {
  readonly transitions: Array<Transition> = []
  readonly status: Record<string, string> = {}
  /** When the last sample was read, on the run's clock. */
  sampledAt = -Infinity
  private timer: NodeJS.Timeout | undefined
  private stopped = false
  private readonly statsPort: number
  private readonly clock: () => number
  constructor(statsPort: number, clock: () => number) {
    this.statsPort = statsPort
    this.clock = clock
  }
  async sample(): Promise<ReadonlyArray<Haproxy.StatsRow>> {
    const startedAt = this.clock()
    const rows = await Haproxy.readStats(this.statsPort)
    for (const row of rows) {
      if (row.pxname !== "service" || row.svname === "BACKEND" || row.svname === "FRONTEND") continue
      const server = row.svname!
      const status = row.status ?? ""
      if (this.status[server] !== status) {
        this.status[server] = status
        this.transitions.push({ at: Math.round(this.clock()), server, status })
      }
    }
    this.sampledAt = startedAt
    return rows
  }
  start(): void {
    const loop = () => {
      // A sample in flight at stop() must not schedule another.
      if (!this.stopped) this.timer = setTimeout(() => void this.sample().then(loop, loop), 50)
    }
    loop()
  }
  stop(): void {
    this.stopped = true
    clearTimeout(this.timer)
  }
  /** Resolves once a sample taken after `since` shows the server exactly UP. */
  async waitUp(server: string, since: number, timeoutMs: number): Promise<number> {
    const deadline = performance.now() + timeoutMs
    while (performance.now() < deadline) {
      if (this.sampledAt > since && this.status[server] === "UP") return this.sampledAt
      await sleep(10)
    }
    throw new Error(`HAProxy did not see ${server} UP within ${timeoutMs} ms (status ${this.status[server]})`)
  }
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

/**
 * Reads HAProxy's request log: how many requests it logged, and every one
 * that is not a plain 200 (normal termination `----`), counted by status,
 * termination state and server, with the first few lines verbatim. A "+N" in
 * the retries field means HAProxy redispatched the request N times.
 * `acceptedAt` gives, per server, when each request it served was accepted,
 * in ms on the run's clock (`epochAtZero` is that clock's zero, epoch ms).
 */
const summarizeHaproxyLog = (file: string, epochAtZero: number) => {
  const abnormal: Record<string, number> = {}
  const samples: Array<string> = []
  const acceptedAt: Record<string, Array<number>> = {}
  let requests = 0
  let redispatched = 0
  const text = existsSync(file) ? readFileSync(file, "utf8") : ""
  for (const line of text.split("\n")) {
    // 127.0.0.1:5000 [21/Nov/2026:08:23:31.317] web service/a 0/0/0/5/5 200 148 - - ---- 65/64/8/5/+1 0/0 "GET /work?ms=5 HTTP/1.1"
    const match =
      /\[(\d+)\/(\w+)\/(\d+):(\d+):(\d+):(\d+)\.(\d+)\] web (\S+) \S+ (-?\d+) \S+ \S+ \S+ (\S{4}) \d+\/\d+\/\d+\/\d+\/(\+?)(\d+) \S+ "/
        .exec(line)
    if (match === null) continue
    requests++
    const [, day, month, year, hours, minutes, seconds, millis, server, status, termination, plus, retries] = match
    // HAProxy logs local time.
    const accepted = new Date(
      Number(year),
      MONTHS.indexOf(month!),
      Number(day),
      Number(hours),
      Number(minutes),
      Number(seconds),
      Number(millis)
    ).getTime()
    ;(acceptedAt[server!] ??= []).push(accepted - epochAtZero)
    if (plus === "+") redispatched++
    if (status === "200" && termination === "----") continue
    const key = `${status} ${termination} ${server}${retries !== "0" ? ` retries ${plus}${retries}` : ""}`
    abnormal[key] = (abnormal[key] ?? 0) + 1
    if (samples.length < 20) samples.push(line)
  }
  const stateChanges = text.split("\n").filter((line) => line.startsWith("[WARNING]") && line.includes(" is ")).length
  return { summary: { requests, redispatched, abnormal, samples, stateChanges }, acceptedAt }
}

// -----------------------------------------------------------------------------
// One variant
// -----------------------------------------------------------------------------

interface Restart {
  readonly round: number
  readonly server: string
  readonly sigtermAt: number
  readonly exitedAt: number
  readonly exitCode: number | null
  readonly exitSignal: string | null
  /** SIGTERM → process exit, ms. */
  readonly costMs: number
  /** First time HAProxy had the server out of the pool (DOWN) after the SIGTERM, if it noticed at all. */
  readonly downAt: number | undefined
  /** The replacement answered /health/ready 200 directly. */
  readonly readyAt: number
  /** HAProxy had the replacement UP. */
  readonly upAt: number
  readonly report: unknown
}

const readReport = (file: string) => {
  if (!existsSync(file)) return undefined
  try {
    const report = JSON.parse(readFileSync(file, "utf8")) as {
      outcome?: string
      exitCode?: number
      inFlight?: unknown
      cut?: ReadonlyArray<unknown>
      phases?: ReadonlyArray<{ phase: string; at: number; durationMs: number }>
      durationMs?: number
    }
    return {
      outcome: report.outcome,
      exitCode: report.exitCode,
      inFlight: report.inFlight,
      cut: report.cut?.length,
      durationMs: report.durationMs,
      phases: report.phases?.map((p) => `${p.phase}@${Math.round(p.at)}+${Math.round(p.durationMs)}`).join(" ")
    }
  } catch {
    return "unreadable"
  }
}

const runVariant = async (variant: Variant, dir: string) => {
  console.log(`\n${variant.name}: ${variant.description}`)
  const variantStarted = performance.now()
  const ports = {
    frontend: await freePort(),
    stats: await freePort(),
    servers: [{ name: "a", port: await freePort() }, { name: "b", port: await freePort() }]
  }
  const load = new Load({
    port: ports.frontend,
    path: `/work?ms=${settings.workMs}`,
    rate: settings.rate,
    timeoutMs: settings.timeoutMs,
    maxSockets: settings.maxSockets,
    bucketMs: settings.bucketMs
  })
  // Until the load starts, times are measured from the variant's start.
  const clock = () => (load.startedAt === 0 ? performance.now() - variantStarted : load.now())

  const instances = new Map<string, Instance>()
  for (const { name, port } of ports.servers) instances.set(name, startInstance(variant, name, port, 0, dir, clock))
  await Promise.all([...instances.values()].map((instance) => waitReady(instance, 30_000)))

  const configFile = join(dir, `${variant.name}-haproxy.cfg`)
  writeFileSync(configFile, Haproxy.config(ports, haproxySettings))
  const check = spawnSync("haproxy", ["-c", "-q", "-f", configFile], { encoding: "utf8" })
  if (check.status !== 0) throw new Error(`haproxy rejected ${configFile}:\n${check.stdout}${check.stderr}`)
  const haproxyLogFile = join(dir, `${variant.name}-haproxy.log`)
  const haproxyLog = openSync(haproxyLogFile, "a")
  const haproxy = spawn("haproxy", ["-db", "-f", configFile], { stdio: ["ignore", haproxyLog, haproxyLog] })
  closeSync(haproxyLog)
  children.add(haproxy)
  const haproxyExited = new Promise<void>((resolve) => haproxy.once("exit", () => resolve()))
  haproxy.once("exit", (code, signal) => {
    children.delete(haproxy)
    if (!stopping) console.error(`  haproxy exited unexpectedly (${code ?? signal}); see ${haproxyLogFile}`)
  })
  let stopping = false

  const watcher = new Watcher(ports.stats, clock)
  const statsDeadline = performance.now() + 10_000
  while (true) {
    const ready = await watcher.sample().then(() => true, () => false)
    if (ready) break
    if (performance.now() > statsDeadline) throw new Error("HAProxy's stats page never answered")
    await sleep(50)
  }
  watcher.start()
  for (const { name } of ports.servers) await watcher.waitUp(name, -Infinity, 10_000)

  load.start()
  await sleep(settings.warmupMs)

  const restarts: Array<Restart> = []
  const roundMarks: Array<{ round: number; at: number }> = []
  const timeUp = () => performance.now() - variantStarted > settings.variantSeconds * 1000
  let round = 0
  let loadEndedAt = 0
  try {
    while (round < settings.maxRounds) {
      const expected = load.sent + (settings.rate * settings.tailMs) / 1000
      if (round >= settings.rounds && expected >= settings.minRequests) break
      if (timeUp()) {
        console.log(`  stopping after ${round} rounds: ${settings.variantSeconds} s cap for a variant`)
        break
      }
      round++
      roundMarks.push({ round, at: Math.round(clock()) })
      for (const { name, port } of ports.servers) {
        const old = instances.get(name)!
        const sigtermAt = clock()
        old.child.kill("SIGTERM")
        // Bounded: a process that will not exit is killed, and the round says so.
        const killer = setTimeout(() => old.child.kill("SIGKILL"), 30_000)
        const exit = await old.exited
        clearTimeout(killer)
        const next = startInstance(variant, name, port, old.generation + 1, dir, clock)
        instances.set(name, next)
        await waitReady(next, 30_000)
        const readyAt = clock()
        const upAt = await watcher.waitUp(name, readyAt, 15_000)
        const downAt = watcher.transitions.find((t) =>
          t.server === name && t.at >= sigtermAt && t.status.startsWith("DOWN")
        )?.at
        restarts.push({
          round,
          server: name,
          sigtermAt: Math.round(sigtermAt),
          exitedAt: Math.round(exit.at),
          exitCode: exit.code,
          exitSignal: exit.signal,
          costMs: Math.round(exit.at - sigtermAt),
          downAt,
          readyAt: Math.round(readyAt),
          upAt: Math.round(upAt),
          report: readReport(old.reportFile)
        })
      }
      const last = restarts.slice(-ports.servers.length)
      console.log(
        `  round ${String(round).padStart(2)}: SIGTERM→exit ${
          last.map((r) => `${r.server} ${r.costMs} ms`).join(", ")
        }; ` +
          `${load.sent} sent, ${load.failed} failed so far`
      )
      await sleep(settings.pauseBetweenRoundsMs)
    }
    await sleep(settings.tailMs)
  } finally {
    loadEndedAt = clock()
    await load.stop()
    watcher.stop()
  }
  // The run's clock (ms since the load started) as epoch ms, to read HAProxy's log.
  const epochAtZero = performance.timeOrigin + load.startedAt
  const counters = await watcher.sample().then(
    (rows) => rows.find((r) => r.pxname === "service" && r.svname === "BACKEND"),
    () => undefined
  )
  stopping = true
  haproxy.kill("SIGTERM")
  for (const instance of instances.values()) instance.child.kill("SIGKILL")
  await Promise.all([haproxyExited, ...[...instances.values()].map((instance) => instance.exited)])

  const summary: LoadSummary = load.summary()
  const haproxyLogSummary = summarizeHaproxyLog(haproxyLogFile, epochAtZero)
  const events = restarts.map((restart) => ({
    ...restart,
    // Requests HAProxy still passed to the instance after its SIGTERM (by
    // accept time): for ours, what the lame duck served after readiness
    // turned 503 and before HAProxy noticed.
    servedAfterSigterm:
      (haproxyLogSummary.acceptedAt[`service/${restart.server}`] ?? []).filter((at) =>
        at >= restart.sigtermAt && at <= restart.exitedAt
      ).length
  }))
  const served = events.map((e) => e.servedAfterSigterm)
  const costs = restarts.map((r) => r.costMs)
  const noticed = restarts.filter((r) => r.downAt !== undefined).map((r) => r.downAt! - r.sigtermAt)
  const result = {
    variant: variant.name,
    description: variant.description,
    service: relative(root, variant.file),
    env: variant.env,
    rounds: round,
    restarts: restarts.length,
    requests: {
      sent: summary.sent,
      ok: summary.ok,
      failed: summary.failed,
      failureKinds: summary.kinds,
      latencyMs: summary.latencyMs
    },
    restartCostMs: { median: median(costs), max: Math.max(...costs), min: Math.min(...costs) },
    // How long HAProxy took to take the instance out after SIGTERM (when it did).
    sigtermToHaproxyDownMs: {
      noticed: noticed.length,
      median: median(noticed),
      max: noticed.length > 0 ? Math.max(...noticed) : 0
    },
    requestsServedAfterSigterm: {
      total: served.reduce((a, b) => a + b, 0),
      median: median(served),
      max: Math.max(0, ...served)
    },
    haproxy: {
      backendCounters: counters === undefined ? undefined : {
        retries: Number(counters.wretr),
        redispatches: Number(counters.wredis),
        connectionErrors: Number(counters.econ),
        responseErrors: Number(counters.eresp),
        responses5xx: Number(counters.hrsp_5xx),
        sessions: Number(counters.stot)
      },
      log: haproxyLogSummary.summary
    },
    // When the load stopped issuing requests (ms); the buckets after it are partial.
    loadEndedAt: Math.round(loadEndedAt),
    perSecond: summary.buckets.map((b, i) => ({
      t: (i * settings.bucketMs) / 1000,
      sent: b.sent,
      ok: b.ok,
      failed: b.failed,
      kinds: b.kinds,
      p99Ms: percentile99(b.latencies)
    })),
    roundStarts: roundMarks,
    restartEvents: events,
    haproxyTransitions: watcher.transitions,
    firstFailures: summary.firstFailures,
    durationSeconds: Math.round((performance.now() - variantStarted) / 1000)
  }
  console.log(
    `  ${variant.name}: ${summary.sent} requests, ${summary.failed} failed ${JSON.stringify(summary.kinds)}, ` +
      `${restarts.length} restarts in ${round} rounds, SIGTERM→exit median ${result.restartCostMs.median} ms, max ${result.restartCostMs.max} ms`
  )
  console.log(
    `  HAProxy took an instance out ${result.sigtermToHaproxyDownMs.median} ms after its SIGTERM (median; max ` +
      `${result.sigtermToHaproxyDownMs.max} ms) and passed it ${result.requestsServedAfterSigterm.total} requests after SIGTERMs; ` +
      `it redispatched ${result.haproxy.log.redispatched} requests after a failed connect`
  )
  return result
}

// -----------------------------------------------------------------------------

const main = async () => {
  const started = performance.now()
  const only = process.env.ROLLING_ONLY
  const selected = variants.filter((v) => only === undefined || only === "" || v.name === only)
  for (const variant of selected) {
    if (!existsSync(variant.file)) throw new Error(`${variant.name}: ${variant.file} does not exist`)
  }
  console.log(
    `Rolling restarts behind HAProxy (${settings.rate} req/s of GET /work?ms=${settings.workMs}, ` +
      `≥ ${settings.rounds} rounds of 2 restarts, ≥ ${settings.minRequests} requests per variant)`
  )
  const haproxyVersion = Haproxy.ensureInstalled()
  console.log(`  ${haproxyVersion}`)
  const ruleHolds = settings.shutdownDelayMs >= detectionMs
  console.log(
    `  health check every ${haproxySettings.interMs} ms, fall ${haproxySettings.fall}, rise ${haproxySettings.rise}: ` +
      `SHUTDOWN_DELAY ${settings.shutdownDelayMs} ms ${
        ruleHolds ? "≥" : "< (rule broken!)"
      } fall × inter = ${detectionMs} ms`
  )
  const dir = mkdtempSync(join(tmpdir(), "rolling-"))
  console.log(`  logs, configs and shutdown reports in ${dir}`)

  const results = []
  for (const variant of selected) results.push(await runVariant(variant, dir))

  console.log("\nSummary")
  console.log("  variant          requests  failed  kinds                              SIGTERM→exit median/max  rounds")
  for (const r of results) {
    console.log(
      `  ${r.variant.padEnd(16)} ${String(r.requests.sent).padStart(8)}  ${String(r.requests.failed).padStart(6)}  ` +
        `${JSON.stringify(r.requests.failureKinds).padEnd(34)} ${
          `${r.restartCostMs.median} / ${r.restartCostMs.max} ms`.padStart(23)
        }  ${r.rounds}`
    )
  }
  for (const r of results) {
    // An overloaded machine fails requests for reasons that have nothing to
    // do with shutdown: say so rather than let the numbers speak alone.
    if ((r.requests.failureKinds["timeout"] ?? 0) > 0 || r.requests.latencyMs.p99 > 1_000) {
      console.log(
        `  warning: ${r.variant} shows timeouts or a p99 of ${r.requests.latencyMs.p99} ms: the machine may not sustain ` +
          `${settings.rate} req/s; check p99 per second in the JSON and lower ROLLING_RATE`
      )
    }
  }
  const output = {
    date: new Date().toISOString(),
    node: process.version,
    cpus: cpus().length,
    haproxy: haproxyVersion,
    durationSeconds: Math.round((performance.now() - started) / 1000),
    targets: { ours: "0 failed requests out of >= 100000, across >= 10 restarts" },
    settings: {
      ...settings,
      haproxy: haproxySettings,
      delayRule:
        `SHUTDOWN_DELAY (${settings.shutdownDelayMs} ms) >= fall (${haproxySettings.fall}) x inter (${haproxySettings.interMs} ms) = ${detectionMs} ms`,
      delayRuleHolds: ruleHolds,
      haproxyConfig: Haproxy.config({
        frontend: 0,
        stats: 0,
        servers: [{ name: "a", port: 0 }, { name: "b", port: 0 }]
      }, haproxySettings)
    },
    variants: results
  }
  const resultsDir = join(import.meta.dirname, "..", "results")
  mkdirSync(resultsDir, { recursive: true })
  const file = only === undefined || only === "" ? "rolling" : `rolling-${only}`
  writeFileSync(join(resultsDir, `${file}.json`), JSON.stringify(output, null, 2) + "\n")
  writeFileSync(join(resultsDir, `${file}.svg`), renderChart(output))
  console.log(`written to bench/results/${file}.json and bench/results/${file}.svg (${output.durationSeconds} s)`)
}

await main().then(
  // Everything we started is stopped by now; exit even if a stray handle remains.
  () => process.exit(0),
  (error: unknown) => {
    console.error(error)
    killAll()
    process.exit(1)
  }
)
