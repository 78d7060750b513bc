/**
 * `npm run demo`: the example service under load, stopped with SIGTERM in
 * the middle, in under 30 seconds.
 *
 * 1. Starts examples/service/main.ts as a child process (PGlite kept in a
 *    temporary directory, the request log in the same directory,
 *    `SHUTDOWN_DELAY=2 seconds` so that the lame duck is visible).
 * 2. Drives it like production traffic: keep-alive HTTP clients calling
 *    `/work?ms=N` behind a simulated load balancer that polls `/health/ready`
 *    and stops routing new requests once it answers 503, WebSocket
 *    clients echoing a message every 200 ms, and `EventSource` clients on
 *    `/events` behind a connection balancer that also knows a successor
 *    instance (started beside the first): at Closing each stream gets its
 *    last event, and its client resumes on the successor with
 *    `Last-Event-ID`.
 * 3. Sends SIGTERM while requests are in flight and prints each phase as the
 *    service enters it, then the phase timings from the service's shutdown
 *    report.
 * 4. Counts what happened from the outside (requests started, completed,
 *    failed; WebSocket close codes) and from what the service left behind
 *    (lines in the JSONL request log, rows in the database), and checks
 *    that they agree. Exits 1 if any check fails.
 */
import { PGlite } from "@electric-sql/pglite"
import { EventSource } from "eventsource"
import { spawn } from "node:child_process"
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import * as Http from "node:http"
import * as Net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { createInterface } from "node:readline"
import WebSocket from "ws"
import type { ShutdownReport } from "../src/Report.ts"

const HTTP_CLIENTS = 8
/** Of the clients, how many call /work?ms=2500..3000, so that work is still in flight when the listener closes. */
const SLOW_CLIENTS = 2
const WEBSOCKETS = 4
const EVENT_STREAMS = 4
const LOAD_BEFORE_SIGTERM_MS = 3_000
const LAME_DUCK = "2 seconds"
const BALANCER_POLL_MS = 250
/** Consecutive failed probes before the balancer stops routing (Kubernetes: `failureThreshold`). */
const BALANCER_FAILURES = 2

const color = process.stdout.isTTY && process.env.NO_COLOR === undefined
const paint = (code: number) => (text: string) => color ? `\x1b[${code}m${text}\x1b[0m` : text
const bold = paint(1)
const dim = paint(2)
const green = paint(32)
const red = paint(31)
const yellow = paint(33)
const cyan = paint(36)

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
const pad = (text: string, width: number) => text.padEnd(width)

const dir = mkdtempSync(join(tmpdir(), "effect-graceful-demo-"))
const logFile = join(dir, "requests.jsonl")
const pgliteDir = join(dir, "pglite")
const reportFile = join(dir, "report.json")
const serviceMain = join(import.meta.dirname, "service", "main.ts")
const successorLog = join(dir, "successor.jsonl")

const demoStart = Date.now()
let sigtermAt: number | undefined
const since = () => sigtermAt === undefined ? "" : `${`+${Date.now() - sigtermAt}`.padStart(6)} ms`
const say = (text: string) => console.log(`  ${pad(since(), 9)} ${text}`)

// -----------------------------------------------------------------------------
// The service
// -----------------------------------------------------------------------------

console.log(bold("effect-graceful demo") + dim(": the example service under load, stopped with SIGTERM mid-flight\n"))

const child = spawn(process.execPath, [serviceMain], {
  env: {
    ...process.env,
    PORT: "0",
    HOST: "127.0.0.1",
    LOG_FILE: logFile,
    PGLITE_DIR: pgliteDir,
    SHUTDOWN_DELAY: LAME_DUCK,
    SHUTDOWN_REPORT_FILE: reportFile,
    DATABASE_URL: "",
    REDIS_URL: "",
    KUBERNETES_SERVICE_HOST: ""
  },
  stdio: ["ignore", "pipe", "pipe"]
})
// The successor: a second instance (in-memory database), for the event streams to move to.
const successor = spawn(process.execPath, [serviceMain], {
  env: {
    ...process.env,
    PORT: "0",
    HOST: "127.0.0.1",
    LOG_FILE: successorLog,
    PGLITE_DIR: "",
    SHUTDOWN_REPORT_FILE: "",
    DATABASE_URL: "",
    REDIS_URL: "",
    KUBERNETES_SERVICE_HOST: ""
  },
  stdio: ["ignore", "pipe", "pipe"]
})
const successorExited = new Promise<number | null>((resolve) => successor.on("exit", (code) => resolve(code)))
let successorOutput = ""
const successorPort = new Promise<number>((resolve, reject) => {
  createInterface({ input: successor.stdout! }).on("line", (line) => {
    successorOutput += line + "\n"
    const listening = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(line)
    if (listening) resolve(Number(listening[1]))
  })
  successor.stderr!.on("data", (chunk) => (successorOutput += String(chunk)))
  void successorExited.then(() => reject(new Error(`the successor exited before listening:\n${successorOutput}`)))
})
let serviceOutput = ""
const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((resolve) =>
  child.on("exit", (code, signal) => resolve({ code, signal, at: Date.now() }))
)

const inFlight = new Set<Http.ClientRequest>()
const counts = { started: 0, completed: 0, failed: 0, connectionClose: 0 }
const failures: Array<string> = []
const phasesSeen: Array<string> = []
const sockets: Array<{ ws: WebSocket; echoes: number; close?: { code: number; reason: string } }> = []

const onPhase = (phase: string) => {
  phasesSeen.push(phase)
  if (phase === "Draining") {
    say(`${yellow("Draining")}   readiness 503, liveness 200, every request still served, with Connection: close`)
  } else if (phase === "Closing") {
    say(
      `${yellow("Closing")}    listener closed, idle keep-alive sockets ended, WebSockets sent 1001, ` +
        `event streams ended with a last retry: event; ${inFlight.size} request(s) in flight`
    )
  } else if (phase === "Releasing") {
    say(`${yellow("Releasing")}  in flight empty: resources released in reverse order`)
  }
}

const port = await new Promise<number>((resolve, reject) => {
  const lines = (stream: NodeJS.ReadableStream) =>
    createInterface({ input: stream }).on("line", (line) => {
      serviceOutput += line + "\n"
      const listening = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(line)
      if (listening) resolve(Number(listening[1]))
      const phase = /phase: (\w+)/.exec(line)
      if (phase && sigtermAt !== undefined) onPhase(phase[1]!)
    })
  lines(child.stdout!)
  lines(child.stderr!)
  void exited.then(() => reject(new Error(`the service exited before listening:\n${serviceOutput}`)))
})

const nextPort = await successorPort
console.log(`  service    pid ${child.pid}, http://127.0.0.1:${port} (started in ${Date.now() - demoStart} ms)`)
console.log(`             PGlite in ${pgliteDir}, request log ${logFile}`)
console.log(`             SHUTDOWN_DELAY=${LAME_DUCK} (lame duck), SHUTDOWN_TIMEOUT default (25 s)`)
console.log(
  `  load       ${HTTP_CLIENTS} keep-alive HTTP clients: ${HTTP_CLIENTS - SLOW_CLIENTS} call GET /work?ms=50..800, ` +
    `${SLOW_CLIENTS} call GET /work?ms=2500..3000`
)
console.log(
  `             behind a load balancer that probes /health/ready every ${BALANCER_POLL_MS} ms ` +
    `and stops routing after ${BALANCER_FAILURES} failures`
)
console.log(`             ${WEBSOCKETS} WebSocket clients on /ws, one echo every 200 ms`)
console.log(
  `  streams    ${EVENT_STREAMS} EventSource clients on /events (an event every 100 ms) through a connection balancer\n` +
    `             that sends each connection to the first instance that accepts it: this one, then its\n` +
    `             successor (pid ${successor.pid}, http://127.0.0.1:${nextPort})\n`
)

// -----------------------------------------------------------------------------
// The load balancer and the clients
// -----------------------------------------------------------------------------

let routing = true
let probeFailures = 0
const balancer = (async () => {
  while (routing) {
    await sleep(BALANCER_POLL_MS)
    const status = await new Promise<number>((resolve) => {
      Http.get({ host: "127.0.0.1", port, path: "/health/ready", agent: false }, (response) => {
        response.resume()
        resolve(response.statusCode ?? 0)
      }).on("error", () => resolve(0))
    })
    probeFailures = status === 200 ? 0 : probeFailures + 1
    if (probeFailures >= BALANCER_FAILURES && sigtermAt !== undefined) {
      routing = false
      say(
        `${cyan("balancer")}   /health/ready answered ${status} ${BALANCER_FAILURES} times: ` +
          `no new requests routed here (${counts.connectionClose} served with Connection: close meanwhile)`
      )
    }
  }
})()

const agent = new Http.Agent({ keepAlive: true, maxSockets: HTTP_CLIENTS })

const work = (ms: number) =>
  new Promise<void>((resolve) => {
    counts.started++
    const fail = (why: string) => {
      counts.failed++
      failures.push(why)
      resolve()
    }
    const request = Http.get({ host: "127.0.0.1", port, path: `/work?ms=${ms}`, agent }, (response) => {
      let body = ""
      response.setEncoding("utf8")
      response.on("data", (chunk: string) => (body += chunk))
      response.on("end", () => {
        inFlight.delete(request)
        if (response.headers.connection === "close") counts.connectionClose++
        if (response.statusCode === 200 && JSON.parse(body).ok === true) {
          counts.completed++
          resolve()
        } else fail(`HTTP ${response.statusCode}: ${body.trim()}`)
      })
      response.on("error", (error) => {
        inFlight.delete(request)
        fail(error.message)
      })
    })
    inFlight.add(request)
    request.on("error", (error) => {
      inFlight.delete(request)
      fail(`${(error as NodeJS.ErrnoException).code ?? ""} ${error.message}`)
    })
  })

const clients = Array.from({ length: HTTP_CLIENTS }, async (_, i) => {
  while (routing) {
    await work(i < SLOW_CLIENTS ? 2_500 + Math.floor(Math.random() * 500) : 50 + Math.floor(Math.random() * 750))
  }
})

for (let i = 0; i < WEBSOCKETS; i++) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`)
  const entry: (typeof sockets)[number] = { ws, echoes: 0 }
  sockets.push(entry)
  let timer: NodeJS.Timeout | undefined
  ws.on("open", () => {
    timer = setInterval(() => ws.send(`ping ${i}`), 200)
  })
  ws.on("message", () => entry.echoes++)
  ws.on("close", (code, reason) => {
    clearInterval(timer)
    entry.close = { code, reason: String(reason) }
  })
  ws.on("error", () => {})
}

// Event streams: a connection balancer in front of [service, successor].
const balancerForStreams = Net.createServer((client) => {
  client.on("error", () => client.destroy())
  const attempt = (backends: ReadonlyArray<number>) => {
    const [first, ...rest] = backends
    if (first === undefined) return client.destroy()
    const upstream = Net.connect({ port: first, host: "127.0.0.1" })
    let connected = false
    upstream.once("connect", () => {
      connected = true
      client.pipe(upstream).pipe(client)
    })
    upstream.on("error", () => (connected ? client.destroy() : attempt(rest)))
  }
  attempt([port, nextPort])
})
await new Promise<void>((resolve) => balancerForStreams.listen(0, "127.0.0.1", resolve))
const streamsPort = (balancerForStreams.address() as Net.AddressInfo).port
const streams = Array.from({ length: EVENT_STREAMS }, () => {
  const source = new EventSource(`http://127.0.0.1:${streamsPort}/events`)
  const entry = { source, ids: [] as Array<number>, opens: 0, failures: [] as Array<string> }
  source.onopen = () => {
    entry.opens++
    if (entry.opens === 2) {
      say(`${cyan("stream")}     resumed on the successor after Last-Event-ID ${entry.ids.at(-1) ?? "(none)"}`)
    }
  }
  source.onmessage = (event) => entry.ids.push(Number(event.lastEventId))
  // A clean end carries no message; a broken stream or a failed connect does.
  source.onerror = (event) => {
    if (event.message !== undefined) entry.failures.push(event.message)
  }
  return entry
})

// -----------------------------------------------------------------------------
// SIGTERM in the middle
// -----------------------------------------------------------------------------

const progress = setInterval(() => {
  if (sigtermAt !== undefined) return
  console.log(
    dim(
      `  ${pad("", 9)} Ready      ${counts.completed} requests completed, ${inFlight.size} in flight, ` +
        `${sockets.filter((s) => s.ws.readyState === WebSocket.OPEN).length} WebSockets open, ` +
        `${streams.reduce((sum, s) => sum + s.ids.length, 0)} events streamed`
    )
  )
}, 1_000)
await sleep(LOAD_BEFORE_SIGTERM_MS)
clearInterval(progress)
const inFlightAtSigterm = inFlight.size
sigtermAt = Date.now()
child.kill("SIGTERM")
console.log(`\n  ${pad("    +0 ms", 9)} ${bold(red("SIGTERM"))}    sent with ${inFlightAtSigterm} requests in flight`)

const exit = await exited
routing = false
say(`${yellow("Stopped")}    process exited with code ${exit.code}${exit.signal ? ` (${exit.signal})` : ""}`)
await Promise.all(clients)
await balancer
agent.destroy()
// Let the streams show they go on from the successor, then stop it too.
const resumedBy = Date.now() + 5_000
while (streams.some((s) => s.opens < 2) && Date.now() < resumedBy) await sleep(50)
await sleep(500)
for (const stream of streams) stream.source.close()
balancerForStreams.close()
successor.kill("SIGTERM")
const successorCode = await successorExited

// -----------------------------------------------------------------------------
// The service's own report, and what it left behind
// -----------------------------------------------------------------------------

const report: ShutdownReport | undefined = existsSync(reportFile)
  ? JSON.parse(readFileSync(reportFile, "utf8"))
  : undefined

if (report !== undefined) {
  console.log(`\n  ${bold("phase timings")} ${dim("(from the service's shutdown report, t = 0 at SIGTERM)")}`)
  for (const phase of report.phases) {
    console.log(
      `    ${pad(phase.phase, 10)} at ${`+${phase.at}`.padStart(6)} ms, took ${String(phase.durationMs).padStart(5)} ms`
    )
  }
  console.log(`    ${pad("total", 10)} ${report.durationMs} ms, outcome ${report.outcome}`)
  const releases = report.releases
  console.log(
    `    releases   ${releases.map((r) => `${r.name} ${r.outcome} (${r.durationMs} ms)`).join(", ")}`
  )
  console.log(
    `    in flight  ${report.inFlight.atDrainStart} at drain start, ${report.inFlight.atDrainEnd} at drain end, ${report.cut.length} cut`
  )
}

const lines = existsSync(logFile)
  ? readFileSync(logFile, "utf8").split("\n").filter((line) => line !== "").map((line) => JSON.parse(line))
  : []
const workLines = lines.filter((line: { path?: string }) => line.path === "/work").length
let rows = -1
try {
  const db = await PGlite.create(pgliteDir)
  rows = (await db.query<{ n: number }>("SELECT count(*)::int AS n FROM work")).rows[0]?.n ?? -1
  await db.close()
} catch (error) {
  failures.push(`could not open the database: ${String(error)}`)
}
const closed1001 = sockets.filter((s) => s.close?.code === 1001).length
const moved = streams.filter((s) => s.opens === 2 && s.failures.length === 0).length
// Every id from 1 to the last, once and in order, across the move.
const lostOrRepeated = streams.reduce(
  (sum, s) => sum + s.ids.reduce((bad, id, i) => bad + (id === i + 1 ? 0 : 1), 0),
  0
)
const streamed = streams.reduce((sum, s) => sum + s.ids.length, 0)
const echoes = sockets.reduce((sum, s) => sum + s.echoes, 0)

const check = (ok: boolean) => ok ? green("✓") : red("✗")
const checks = {
  failed: counts.failed === 0,
  ws: closed1001 === WEBSOCKETS,
  lines: workLines === counts.completed,
  rows: rows === counts.completed,
  exit: exit.code === 0,
  started: counts.started === counts.completed + counts.failed,
  moved: moved === EVENT_STREAMS,
  events: lostOrRepeated === 0 && streamed > 0,
  successor: successorCode === 0
}
const row = (label: string, value: string | number, note = "") =>
  console.log(`    ${pad(label, 30)} ${String(value).padStart(6)}  ${note}`)

console.log(`\n  ${bold("report")}`)
row("requests started", counts.started, check(checks.started))
row("requests completed (200)", counts.completed)
row("requests failed", counts.failed, check(checks.failed))
row("  of which Connection: close", counts.connectionClose, dim("(served while draining)"))
row(
  "WebSockets closed with 1001",
  `${closed1001}/${WEBSOCKETS}`,
  `${check(checks.ws)} ${dim(`(${echoes} echoes before)`)}`
)
row("JSONL lines for /work", workLines, `${check(checks.lines)} ${dim("= requests completed")}`)
row("database rows", rows, `${check(checks.rows)} ${dim("= requests completed")}`)
row(
  "event streams moved",
  `${moved}/${EVENT_STREAMS}`,
  `${check(checks.moved)} ${dim("(to the successor, resumed with Last-Event-ID, none broken)")}`
)
row("events lost or repeated", lostOrRepeated, `${check(checks.events)} ${dim(`(of ${streamed} streamed)`)}`)
row("exit code", String(exit.code), check(checks.exit))
row("successor exit code", String(successorCode), check(checks.successor))
for (const failure of failures.slice(0, 5)) console.log(red(`    failure: ${failure}`))

const allOk = Object.values(checks).every(Boolean)
console.log(
  `\n  ${allOk ? green(bold("no request dropped")) : red(bold("something was dropped"))}` +
    dim(` (demo took ${((Date.now() - demoStart) / 1000).toFixed(1)} s)`)
)
if (!allOk) console.log(dim("\nservice output:\n" + serviceOutput))
rmSync(dir, { recursive: true, force: true })
process.exit(allOk ? 0 : 1)
