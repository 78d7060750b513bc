/**
 * gRPC across rolling restarts, under load, with a real grpc-js client: do
 * unary calls all succeed, and does every streaming call end with a status a
 * client can act on (UNAVAILABLE), never a reset, and resume elsewhere?
 *
 * Two instances of the demo gRPC server (test/e2e/fixtures/grpc-server.ts:
 * `Echo` answers after `delay_ms`, `Count` sends tick n every 50 ms after
 * `after`), both on `effect-graceful/Grpc`, behind one grpc-js channel with
 * round-robin balancing over their two addresses. UNARY_LOOPS loops call
 * `Echo` back to back (delay 0–100 ms, so calls are in flight at every
 * SIGTERM); STREAMS clients hold a `Count` stream each and reopen it after
 * the last tick they saw whenever it ends with UNAVAILABLE. Then ROUNDS
 * rounds of rolling restarts: SIGTERM one server, wait for its exit, start
 * its replacement on the same address, wait until the channel sends it
 * calls again, then the other.
 *
 * Counted: unary calls by status code; stream endings by status code (and
 * any error that is not UNAVAILABLE); ticks lost, repeated or out of order
 * per stream; each server's shutdown report (outcome, cut). Results in
 * bench/results/grpc.json. Loopback only, bounded, kills its children on the
 * way out. Environment (optional): GRPC_UNARY_LOOPS (32), GRPC_STREAMS (16),
 * GRPC_ROUNDS (5: 10 restarts), GRPC_SECONDS (time cap, 300).
 */
import * as grpc from "@grpc/grpc-js"
import { type ChildProcess, spawn } from "node:child_process"
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { cpus, tmpdir } from "node:os"
import { join } from "node:path"
import { createInterface } from "node:readline"
import { DemoClient, type Tick } from "../../test/e2e/fixtures/grpc/demo.ts"
import { freePort } from "../support/ports.ts"

const num = (name: string, fallback: number) => {
  const value = process.env[name]
  return value === undefined || value === "" ? fallback : Number(value)
}

const root = join(import.meta.dirname, "..", "..")
const settings = {
  unaryLoops: num("GRPC_UNARY_LOOPS", 32),
  streams: num("GRPC_STREAMS", 16),
  rounds: num("GRPC_ROUNDS", 5),
  seconds: num("GRPC_SECONDS", 300),
  maxUnaryDelayMs: 100,
  shutdownDelay: "200 millis",
  warmupMs: 2_000,
  tailMs: 2_000
}

const children = new Set<ChildProcess>()
const killAll = () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
}
process.on("exit", killAll)
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(signal, () => {
    console.error(`\n${signal}: stopping the gRPC benchmark`)
    killAll()
    process.exit(130)
  })
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

interface Server {
  readonly name: string
  readonly child: ChildProcess
  readonly bound: Promise<void>
  readonly exited: Promise<{ readonly at: number; readonly code: number | null }>
  readonly reportFile: string
}

const startServer = (dir: string, slot: string, generation: number, port: number): Server => {
  const name = `${slot}${generation}`
  const reportFile = join(dir, `${name}.report.json`)
  const child = spawn(process.execPath, [join(root, "test", "e2e", "fixtures", "grpc-server.ts")], {
    env: {
      ...process.env,
      GRPC_ADDRESS: `127.0.0.1:${port}`,
      SERVER_NAME: name,
      SHUTDOWN_DELAY: settings.shutdownDelay,
      SHUTDOWN_REPORT_FILE: reportFile,
      KUBERNETES_SERVICE_HOST: ""
    },
    stdio: ["ignore", "pipe", "pipe"]
  })
  children.add(child)
  let output = ""
  child.stderr!.on("data", (chunk) => (output += String(chunk)))
  const exited = new Promise<{ at: number; code: number | null }>((resolve) =>
    child.once("exit", (code) => {
      children.delete(child)
      resolve({ at: performance.now(), code })
    })
  )
  const bound = new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on("line", (line) => {
      output += line + "\n"
      if (line.startsWith("MARK port ")) resolve()
    })
    void exited.then(() => reject(new Error(`${name} exited before binding:\n${output}`)))
  })
  return { name, child, bound, exited, reportFile }
}

const readReport = (file: string) => {
  if (!existsSync(file)) return undefined
  const report = JSON.parse(readFileSync(file, "utf8")) as {
    outcome: string
    exitCode: number
    cut: ReadonlyArray<{ kind: string; label: string; ageMs: number }>
    inFlight: { atDrainStart: number; atDrainEnd: number }
    phases: ReadonlyArray<{ phase: string; durationMs: number }>
  }
  return {
    outcome: report.outcome,
    exitCode: report.exitCode,
    cut: report.cut,
    inFlightAtDrainStart: report.inFlight.atDrainStart,
    closingMs: report.phases.find((phase) => phase.phase === "closing")?.durationMs
  }
}

/** A Count stream that resumes after its last tick whenever it ends with UNAVAILABLE. */
class ResumingStream {
  readonly ticks: Array<number> = []
  readonly endings: Record<string, number> = {}
  readonly otherErrors: Array<string> = []
  private call: grpc.ClientReadableStream<Tick> | undefined
  private stopped = false
  private readonly client: DemoClient
  constructor(client: DemoClient) {
    this.client = client
    this.open()
  }
  private open() {
    const call = this.client.count({ after: this.ticks.at(-1) ?? 0 })
    this.call = call
    call.on("data", (tick: Tick) => this.ticks.push(tick.n))
    call.on("error", (error: grpc.ServiceError) => {
      if (error.code !== grpc.status.UNAVAILABLE && !this.stopped) {
        this.otherErrors.push(`${grpc.status[error.code]}: ${error.details}`)
      }
    })
    call.on("status", (status: grpc.StatusObject) => {
      if (this.stopped) return
      const key = `${grpc.status[status.code]}: ${status.details}`
      this.endings[key] = (this.endings[key] ?? 0) + 1
      // UNAVAILABLE: retry (the channel picks a server that is up).
      if (status.code === grpc.status.UNAVAILABLE) setTimeout(() => this.open(), 0)
    })
  }
  stop() {
    this.stopped = true
    this.call?.cancel()
  }
  verdict() {
    let lost = 0
    let repeated = 0
    let expected = 1
    for (const n of this.ticks) {
      if (n < expected) repeated++
      else lost += n - expected
      expected = Math.max(expected, n + 1)
    }
    return { ticks: this.ticks.length, lost, repeated }
  }
}

const main = async () => {
  const started = performance.now()
  console.log(
    `gRPC across rolling restarts: ${settings.unaryLoops} unary loops, ${settings.streams} streams, ${settings.rounds} rounds`
  )
  const dir = mkdtempSync(join(tmpdir(), "effect-graceful-bench-grpc-"))
  const slots = [{ slot: "a", port: await freePort() }, { slot: "b", port: await freePort() }]
  const servers = new Map<string, Server>()
  for (const { slot, port } of slots) servers.set(slot, startServer(dir, slot, 0, port))
  await Promise.all([...servers.values()].map((server) => server.bound))

  const client = new DemoClient(
    `ipv4:${slots.map(({ port }) => `127.0.0.1:${port}`).join(",")}`,
    grpc.credentials.createInsecure(),
    {
      "grpc.service_config": JSON.stringify({ loadBalancingConfig: [{ round_robin: {} }] }),
      // Reconnect to a restarted server quickly.
      "grpc.initial_reconnect_backoff_ms": 100,
      "grpc.max_reconnect_backoff_ms": 1_000
    }
  )

  const unary = {
    ok: 0,
    failed: {} as Record<string, number>,
    byServer: {} as Record<string, number>,
    firstFailures: [] as Array<string>
  }
  let stop = false
  const loop = async () => {
    while (!stop) {
      await new Promise<void>((resolve) => {
        const delayMs = Math.floor(Math.random() * settings.maxUnaryDelayMs)
        client.echo({ text: "x", delayMs }, { deadline: Date.now() + 10_000 }, (error, reply) => {
          if (error) {
            const key = `${grpc.status[error.code]}: ${error.details}`
            unary.failed[key] = (unary.failed[key] ?? 0) + 1
            if (unary.firstFailures.length < 10) unary.firstFailures.push(key)
          } else {
            unary.ok++
            unary.byServer[reply!.server] = (unary.byServer[reply!.server] ?? 0) + 1
          }
          resolve()
        })
      })
    }
  }
  const loops = Array.from({ length: settings.unaryLoops }, loop)
  const served = (name: string) => unary.byServer[name] ?? 0
  const until = async (condition: () => boolean, timeoutMs: number, what: string) => {
    const deadline = performance.now() + timeoutMs
    while (!condition()) {
      if (performance.now() > deadline) throw new Error(`timed out: ${what}`)
      await sleep(20)
    }
  }
  await until(() => served("a0") > 50 && served("b0") > 50, 30_000, "both servers serving")
  const streams = Array.from({ length: settings.streams }, () => new ResumingStream(client))
  await sleep(settings.warmupMs)

  const restarts: Array<Record<string, unknown>> = []
  let round = 0
  try {
    while (round < settings.rounds) {
      if (performance.now() - started > settings.seconds * 1000) {
        console.log(`  stopping after ${round} rounds: ${settings.seconds} s cap`)
        break
      }
      round++
      for (const { slot, port } of slots) {
        const old = servers.get(slot)!
        const sigtermAt = performance.now()
        old.child.kill("SIGTERM")
        const exit = await old.exited
        const next = startServer(dir, slot, round, port)
        servers.set(slot, next)
        await next.bound
        // The channel has found the replacement: it serves calls again.
        await until(() => served(next.name) > 20, 30_000, `${next.name} serving`)
        restarts.push({
          round,
          server: old.name,
          exitCode: exit.code,
          sigtermToExitMs: Math.round(exit.at - sigtermAt),
          report: readReport(old.reportFile)
        })
      }
      const failed = Object.values(unary.failed).reduce((a, b) => a + b, 0)
      console.log(`  round ${round}: ${restarts.length} restarts, ${unary.ok} unary ok, ${failed} failed so far`)
    }
    await sleep(settings.tailMs)
  } finally {
    stop = true
    await Promise.all(loops)
    for (const stream of streams) stream.stop()
    client.close()
  }
  for (const server of servers.values()) server.child.kill("SIGTERM")
  await Promise.all([...servers.values()].map((server) => server.exited))
  const finals = [...servers.values()].map((server) => ({ server: server.name, report: readReport(server.reportFile) }))

  const verdicts = streams.map((stream) => stream.verdict())
  const endings: Record<string, number> = {}
  for (const stream of streams) {
    for (const [key, count] of Object.entries(stream.endings)) endings[key] = (endings[key] ?? 0) + count
  }
  const unaryFailed = Object.values(unary.failed).reduce((a, b) => a + b, 0)
  const streamEndings = Object.values(endings).reduce((a, b) => a + b, 0)
  const notUnavailable = Object.entries(endings).filter(([key]) => !key.startsWith("UNAVAILABLE")).reduce(
    (a, [, b]) => a + b,
    0
  )
  const otherErrors = streams.flatMap((stream) => stream.otherErrors)
  const reports = [...restarts.map((r) => r.report), ...finals.map((f) => f.report)] as Array<
    ReturnType<typeof readReport>
  >
  const result = {
    date: new Date().toISOString(),
    machine: {
      cpus: cpus().length,
      node: process.version,
      grpcJs: JSON.parse(readFileSync(join(root, "node_modules", "@grpc", "grpc-js", "package.json"), "utf8")).version
    },
    settings,
    rounds: round,
    restarts: restarts.length,
    unary: { ok: unary.ok, failed: unaryFailed, failures: unary.failed, firstFailures: unary.firstFailures },
    streams: {
      count: settings.streams,
      endings,
      endedNotUnavailable: notUnavailable,
      otherErrors,
      ticks: verdicts.reduce((a, v) => a + v.ticks, 0),
      ticksLost: verdicts.reduce((a, v) => a + v.lost, 0),
      ticksRepeated: verdicts.reduce((a, v) => a + v.repeated, 0)
    },
    shutdowns: {
      clean: reports.filter((r) => r?.outcome === "clean").length,
      total: reports.length,
      cut: reports.flatMap((r) => r?.cut ?? [])
    },
    restartEvents: restarts,
    durationSeconds: Math.round((performance.now() - started) / 1000)
  }
  const resultsDir = join(root, "bench", "results")
  mkdirSync(resultsDir, { recursive: true })
  writeFileSync(join(resultsDir, "grpc.json"), JSON.stringify(result, null, 2) + "\n")
  console.log(`
  restarts                ${restarts.length} (${round} rounds)
  unary calls ok          ${unary.ok}
  unary calls failed      ${unaryFailed}
  stream endings          ${streamEndings} (${Object.entries(endings).map(([k, v]) => `${v} ${k}`).join(", ")})
  ended otherwise         ${notUnavailable} (+ ${otherErrors.length} other errors)
  ticks                   ${result.streams.ticks}, lost ${result.streams.ticksLost}, repeated ${result.streams.ticksRepeated}
  shutdowns               ${result.shutdowns.clean}/${result.shutdowns.total} clean, ${result.shutdowns.cut.length} calls cut
  results                 bench/results/grpc.json (${result.durationSeconds} s)`)
  const ok = unaryFailed === 0 && notUnavailable === 0 && otherErrors.length === 0 &&
    result.streams.ticksLost === 0 && result.streams.ticksRepeated === 0
  if (!ok) process.exitCode = 1
}

main().catch((error: unknown) => {
  console.error(error)
  killAll()
  process.exit(1)
})
