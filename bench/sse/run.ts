/**
 * Server-sent event streams across rolling restarts behind HAProxy: do
 * long-lived streams move from instance to instance without losing,
 * repeating or breaking anything?
 *
 * Two instances of the example service (`GET /events`: event n every 100 ms,
 * resumed after `Last-Event-ID`) behind HAProxy on loopback, with the
 * rolling benchmark's configuration (../rolling/haproxy.ts: health checks on
 * /health/ready, redispatch). STREAMS real `EventSource` clients (the
 * `eventsource` package) hold one stream each through HAProxy. Then ROUNDS
 * rounds of rolling restarts: SIGTERM one instance, wait for its exit, start
 * its replacement on the same port, wait until HAProxy has it UP, then the
 * other. At each SIGTERM the instance's streams get a last `retry:` event
 * at Closing and end; their clients reconnect through HAProxy to the other
 * instance and resume after the last id they saw.
 *
 * Counted per client, at the end: every id from 1 to the last must have
 * arrived exactly once and in order (gaps, duplicates, out-of-order ids are
 * counted); streams that broke (an error with a message: reset, cut, refused
 * connect, non-200); and from HAProxy's log, streams the server side ended
 * abnormally (termination state starting with `S`). Also: the gap each
 * reconnection left between two events, and each shutdown report.
 *
 * Results: bench/results/sse.json. Loopback only, bounded in rounds and
 * time, kills every child on the way out. Environment (optional):
 * SSE_STREAMS (100), SSE_ROUNDS (6: 12 restarts), SSE_SECONDS (time cap, 900).
 */
import { EventSource } from "eventsource"
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, writeFileSync } from "node:fs"
import * as Http from "node:http"
import { cpus, tmpdir } from "node:os"
import { join } from "node:path"
import * as Haproxy from "../rolling/haproxy.ts"
import { freePort } from "../support/ports.ts"

const num = (name: string, fallback: number) => {
  const value = process.env[name]
  return value === undefined || value === "" ? fallback : Number(value)
}

const root = join(import.meta.dirname, "..", "..")
const haproxySettings = Haproxy.defaultSettings
const settings = {
  streams: num("SSE_STREAMS", 100),
  rounds: num("SSE_ROUNDS", 6),
  seconds: num("SSE_SECONDS", 900),
  // The rolling bench's rule: the lame duck covers HAProxy's detection (fall × inter), twice over.
  shutdownDelayMs: 2 * haproxySettings.fall * haproxySettings.interMs,
  pauseBetweenRestartsMs: 1_000,
  tailMs: 2_000
}

const children = new Set<ChildProcess>()
const killAll = () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
}
process.on("exit", killAll)
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(signal, () => {
    console.error(`\n${signal}: stopping the SSE benchmark`)
    killAll()
    process.exit(130)
  })
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

const median = (values: ReadonlyArray<number>) => {
  if (values.length === 0) return 0
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)]!
}

const probe = (port: number, path: string): Promise<number> =>
  new Promise((resolve, reject) => {
    const request = Http.get({ host: "127.0.0.1", port, path, agent: false }, (response) => {
      response.resume()
      response.on("end", () => resolve(response.statusCode ?? 0))
    })
    request.setTimeout(2_000, () => request.destroy(new Error("probe timeout")))
    request.on("error", reject)
  })

interface Instance {
  readonly name: string
  readonly port: number
  readonly generation: number
  readonly child: ChildProcess
  readonly exited: Promise<{ readonly at: number; readonly code: number | null }>
  readonly reportFile: string
}

const startInstance = (dir: string, name: string, port: number, generation: number): Instance => {
  const base = join(dir, `${name}-${generation}`)
  const log = openSync(`${base}.log`, "a")
  const child = spawn(process.execPath, [join(root, "examples", "service", "main.ts")], {
    env: {
      ...process.env,
      PORT: String(port),
      HOST: "127.0.0.1",
      LOG_FILE: `${base}.jsonl`,
      SHUTDOWN_REPORT_FILE: `${base}.report.json`,
      SHUTDOWN_DELAY: `${settings.shutdownDelayMs} millis`,
      DATABASE_URL: "",
      REDIS_URL: "",
      PGLITE_DIR: "",
      KUBERNETES_SERVICE_HOST: ""
    },
    stdio: ["ignore", log, log]
  })
  closeSync(log)
  children.add(child)
  const exited = new Promise<{ at: number; code: number | null }>((resolve) =>
    child.once("exit", (code) => {
      children.delete(child)
      resolve({ at: performance.now(), code })
    })
  )
  return { name, port, generation, child, exited, reportFile: `${base}.report.json` }
}

const waitReady = async (instance: Instance, timeoutMs: number) => {
  const deadline = performance.now() + timeoutMs
  while (performance.now() < deadline) {
    if (instance.child.exitCode !== null) throw new Error(`${instance.name}#${instance.generation} exited`)
    if (await probe(instance.port, "/health/ready").then((status) => status === 200, () => false)) return
    await sleep(25)
  }
  throw new Error(`${instance.name}#${instance.generation} not ready after ${timeoutMs} ms`)
}

const waitHaproxyUp = async (statsPort: number, server: string, timeoutMs: number) => {
  const deadline = performance.now() + timeoutMs
  while (performance.now() < deadline) {
    const rows = await Haproxy.readStats(statsPort).catch(() => [])
    if (rows.some((row) => row.pxname === "service" && row.svname === server && row.status === "UP")) return
    await sleep(50)
  }
  throw new Error(`HAProxy did not see ${server} UP within ${timeoutMs} ms`)
}

/** One EventSource client and what it saw. */
class Client {
  readonly ids: Array<number> = []
  /** Per reconnection: ms from the last event before it to the first event after it. */
  readonly reconnectGaps: Array<number> = []
  #lastArrival = 0
  #opensAtLastEvent = 0
  opens = 0
  readonly failures: Array<string> = []
  /** Non-200 answers: a standard EventSource gives up for good on those. */
  refusals = 0
  readonly source: EventSource
  constructor(port: number) {
    this.source = new EventSource(`http://127.0.0.1:${port}/events`)
    this.source.onopen = () => this.opens++
    this.source.onmessage = (event) => {
      this.ids.push(Number(event.lastEventId))
      const now = performance.now()
      if (this.#opensAtLastEvent > 0 && this.opens !== this.#opensAtLastEvent) {
        this.reconnectGaps.push(Math.round(now - this.#lastArrival))
      }
      this.#opensAtLastEvent = this.opens
      this.#lastArrival = now
    }
    // A clean end of the stream is an error event without a message (the
    // client reconnects); a message means a broken stream or a failed
    // connection. A non-200 closes the EventSource for good.
    this.source.onerror = (event) => {
      if (event.message !== undefined) this.failures.push(`${event.code ?? ""} ${event.message}`.trim())
      if (event.code !== undefined) this.refusals++
    }
  }
  verdict() {
    let gaps = 0
    let duplicates = 0
    let outOfOrder = 0
    let expected = 1
    const seen = new Set<number>()
    for (const id of this.ids) {
      if (seen.has(id)) duplicates++
      else if (id < expected) outOfOrder++
      else if (id > expected) gaps += id - expected
      seen.add(id)
      expected = Math.max(expected, id + 1)
    }
    return { events: this.ids.length, gaps, duplicates, outOfOrder, reconnectGaps: this.reconnectGaps }
  }
}

/** Streams HAProxy logged as ended by the server side abnormally, and all /events it logged. */
const readHaproxyLog = (file: string) => {
  const text = existsSync(file) ? readFileSync(file, "utf8") : ""
  let streams = 0
  const serverAborts: Record<string, number> = {}
  const statuses: Record<string, number> = {}
  for (const line of text.split("\n")) {
    const match = / web (\S+) \S+ (-?\d+) \S+ \S+ \S+ (\S{4}) .*"GET \/events /.exec(line)
    if (match === null) continue
    streams++
    const [, server, status, termination] = match
    statuses[status!] = (statuses[status!] ?? 0) + 1
    if (termination!.startsWith("S")) {
      const key = `${status} ${termination} ${server}`
      serverAborts[key] = (serverAborts[key] ?? 0) + 1
    }
  }
  return { streams, statuses, serverAborts }
}

const readReport = (file: string) => {
  if (!existsSync(file)) return undefined
  const report = JSON.parse(readFileSync(file, "utf8")) as {
    outcome: string
    exitCode: number
    cut: ReadonlyArray<unknown>
    phases: ReadonlyArray<{ phase: string; at: number; durationMs: number }>
    durationMs: number
  }
  return {
    outcome: report.outcome,
    exitCode: report.exitCode,
    cut: report.cut.length,
    closingMs: report.phases.find((phase) => phase.phase === "closing")?.durationMs,
    durationMs: report.durationMs
  }
}

const main = async () => {
  const started = performance.now()
  const haproxyVersion = Haproxy.ensureInstalled()
  console.log(
    `SSE across rolling restarts: ${settings.streams} EventSource streams, ${settings.rounds} rounds, ${haproxyVersion}`
  )
  const dir = mkdtempSync(join(tmpdir(), "effect-graceful-bench-sse-"))
  const ports = {
    frontend: await freePort(),
    stats: await freePort(),
    servers: [{ name: "a", port: await freePort() }, { name: "b", port: await freePort() }]
  }
  const instances = new Map<string, Instance>()
  for (const { name, port } of ports.servers) instances.set(name, startInstance(dir, name, port, 0))
  await Promise.all([...instances.values()].map((instance) => waitReady(instance, 180_000)))

  const configFile = join(dir, "haproxy.cfg")
  writeFileSync(configFile, Haproxy.config(ports, haproxySettings))
  const check = spawnSync("haproxy", ["-c", "-q", "-f", configFile], { encoding: "utf8" })
  if (check.status !== 0) throw new Error(`haproxy rejected ${configFile}:\n${check.stdout}${check.stderr}`)
  const haproxyLogFile = join(dir, "haproxy.log")
  const haproxyLog = openSync(haproxyLogFile, "a")
  const haproxy = spawn("haproxy", ["-db", "-f", configFile], { stdio: ["ignore", haproxyLog, haproxyLog] })
  closeSync(haproxyLog)
  children.add(haproxy)
  const haproxyExited = new Promise<void>((resolve) => haproxy.once("exit", () => resolve()))
  for (const { name } of ports.servers) await waitHaproxyUp(ports.stats, name, 15_000)

  const clients = Array.from({ length: settings.streams }, () => new Client(ports.frontend))
  await sleep(2_000)
  console.log(`  ${clients.filter((client) => client.opens > 0).length}/${settings.streams} streams open`)

  const restarts: Array<Record<string, unknown>> = []
  let round = 0
  try {
    while (round < settings.rounds) {
      if (performance.now() - started > settings.seconds * 1000) {
        console.log(`  stopping after ${round} rounds: ${settings.seconds} s cap`)
        break
      }
      round++
      for (const { name, port } of ports.servers) {
        const old = instances.get(name)!
        const sigtermAt = performance.now()
        old.child.kill("SIGTERM")
        const killer = setTimeout(() => old.child.kill("SIGKILL"), 30_000)
        const exit = await old.exited
        clearTimeout(killer)
        const next = startInstance(dir, name, port, old.generation + 1)
        instances.set(name, next)
        await waitReady(next, 180_000)
        await waitHaproxyUp(ports.stats, name, 15_000)
        restarts.push({
          round,
          server: name,
          exitCode: exit.code,
          sigtermToExitMs: Math.round(exit.at - sigtermAt),
          report: readReport(old.reportFile)
        })
        await sleep(settings.pauseBetweenRestartsMs)
      }
      const failures = clients.reduce((sum, client) => sum + client.failures.length, 0)
      console.log(
        `  round ${round}: ${restarts.length} restarts, ` +
          `${clients.reduce((sum, client) => sum + client.ids.length, 0)} events, ${failures} stream failures so far`
      )
    }
    await sleep(settings.tailMs)
  } finally {
    for (const client of clients) client.source.close()
  }
  haproxy.kill("SIGTERM")
  for (const instance of instances.values()) instance.child.kill("SIGTERM")
  await Promise.all([haproxyExited, ...[...instances.values()].map((instance) => instance.exited)])

  const verdicts = clients.map((client) => client.verdict())
  const sum = (f: (v: ReturnType<Client["verdict"]>) => number) => verdicts.reduce((total, v) => total + f(v), 0)
  const reconnectGaps = verdicts.flatMap((v) => v.reconnectGaps)
  const haproxyStreams = readHaproxyLog(haproxyLogFile)
  const result = {
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, node: process.version, haproxy: haproxyVersion },
    settings: { ...settings, haproxy: haproxySettings },
    rounds: round,
    restarts: restarts.length,
    streams: settings.streams,
    events: {
      delivered: sum((v) => v.events),
      lost: sum((v) => v.gaps),
      duplicated: sum((v) => v.duplicates),
      outOfOrder: sum((v) => v.outOfOrder)
    },
    reconnections: {
      opens: clients.reduce((total, client) => total + client.opens, 0),
      perStream: { min: Math.min(...clients.map((c) => c.opens)), max: Math.max(...clients.map((c) => c.opens)) },
      // From the last event an instance sent to the first the next one sent:
      // the stream's end, the client's retry (500 ms), the new connection, the next tick.
      gapMs: { median: median(reconnectGaps), max: Math.max(0, ...reconnectGaps), count: reconnectGaps.length }
    },
    streamFailures: {
      total: clients.reduce((total, client) => total + client.failures.length, 0),
      refusedNon200: clients.reduce((total, client) => total + client.refusals, 0),
      first: clients.flatMap((client) => client.failures).slice(0, 10)
    },
    haproxy: haproxyStreams,
    restartEvents: restarts,
    durationSeconds: Math.round((performance.now() - started) / 1000)
  }
  const resultsDir = join(root, "bench", "results")
  mkdirSync(resultsDir, { recursive: true })
  writeFileSync(join(resultsDir, "sse.json"), JSON.stringify(result, null, 2) + "\n")

  const serverAborts = Object.values(haproxyStreams.serverAborts).reduce((a, b) => a + b, 0)
  const reports = restarts.map((r) => r.report as ReturnType<typeof readReport>)
  console.log(`
  streams                 ${settings.streams}
  restarts                ${restarts.length} (${round} rounds)
  events delivered        ${result.events.delivered}
  events lost             ${result.events.lost}
  events duplicated       ${result.events.duplicated}
  events out of order     ${result.events.outOfOrder}
  streams broken          ${result.streamFailures.total} (client side), ${serverAborts} (server aborts in HAProxy's log)
  reconnections           ${
    result.reconnections.opens - settings.streams
  } (gap between events: median ${result.reconnections.gapMs.median} ms, max ${result.reconnections.gapMs.max} ms)
  shutdowns               ${reports.filter((r) => r?.outcome === "clean").length}/${reports.length} clean, ${
    reports.reduce((t, r) => t + (r?.cut ?? 0), 0)
  } cut, closing phase median ${median(reports.map((r) => r?.closingMs ?? 0))} ms
  results                 bench/results/sse.json (${result.durationSeconds} s)`)
  const ok = result.events.lost === 0 && result.events.duplicated === 0 && result.events.outOfOrder === 0 &&
    result.streamFailures.total === 0 && serverAborts === 0
  if (!ok) process.exitCode = 1
}

main().catch((error: unknown) => {
  console.error(error)
  killAll()
  process.exit(1)
})
