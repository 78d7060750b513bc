/**
 * HTTP benchmarks, measured side by side in one run and written to
 * bench/results/http.json:
 *
 * 1. Overhead: requests/s and p99 latency of a trivial route, our guard vs
 *    the same app without it (Effect NodeHttpServer; plain http.Server, with
 *    http-terminator and terminus beside it). Variants alternate within each
 *    round; the figures are medians over rounds, compared as ratios.
 * 2. Shutdown latency: 1,000 idle keep-alive sockets, no delay, SIGTERM →
 *    process exit (the moment the server exits, on the monotonic clock),
 *    against a bare `server.close()`, counting resets.
 * 3. Memory: heap per in-flight request with 10,000 concurrent slow requests,
 *    ours minus the bare server's.
 * 4. Instructions per request: each variant under `valgrind --tool=callgrind`
 *    (instrumentation switched on after a warm-up), over a fixed number of
 *    requests. Unlike time, the count barely moves when other processes
 *    share the machine, so a 1 % difference shows. Skipped without valgrind.
 *
 * Loopback only, bounded in count and time; stops by itself.
 */
// @ts-expect-error autocannon ships no types
import autocannon from "autocannon"
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import * as Net from "node:net"
import { cpus, tmpdir } from "node:os"
import { join } from "node:path"
import { createInterface } from "node:readline"
import { get, load, median } from "../support/http.ts"

const rounds = Number(process.env.BENCH_ROUNDS ?? 5)
const seconds = Number(process.env.BENCH_SECONDS ?? 2)
const shutdownRuns = Number(process.env.BENCH_SHUTDOWN_RUNS ?? 5)
const idleSockets = Number(process.env.BENCH_IDLE_SOCKETS ?? 1000)
const slowRequests = Number(process.env.BENCH_SLOW_REQUESTS ?? 10_000)
const callgrindRequests = Number(process.env.BENCH_CALLGRIND_REQUESTS ?? 10_000)
const callgrindWarmup = Number(process.env.BENCH_CALLGRIND_WARMUP ?? 20_000)
const callgrindRuns = Number(process.env.BENCH_CALLGRIND_RUNS ?? 1)
// BENCH_SERVER_FILE points at another tree's bench/http/server.ts (before/after runs).
const serverFile = process.env.BENCH_SERVER_FILE ?? join(import.meta.dirname, "server.ts")

interface Server {
  readonly child: ChildProcess
  readonly port: number
  readonly exited: Promise<number>
  /** When the server says it exits, on the monotonic clock (`process.hrtime`), if it said so. */
  readonly exitedAtNs: Promise<bigint | undefined>
}

// With two or more cores, the server gets core 0 to itself (this process,
// the load generator, runs elsewhere), so the two do not fight for a core.
const pin = cpus().length >= 2 && existsSync("/usr/bin/taskset")
if (pin) spawnSync("taskset", ["-pc", `1-${cpus().length - 1}`, String(process.pid)])

const startServer = (
  variant: string,
  wrapper: ReadonlyArray<string> = [],
  nodeFlags: ReadonlyArray<string> = []
): Promise<Server> =>
  new Promise((resolve, reject) => {
    const node = [...wrapper, process.execPath, "--expose-gc", ...nodeFlags, serverFile]
    const command = pin ? "taskset" : node[0]!
    const args = pin ? ["-c", "0", ...node] : node.slice(1)
    const child = spawn(command, args, {
      env: { ...process.env, BENCH_VARIANT: variant, SHUTDOWN_DELAY: "0 seconds" },
      stdio: ["ignore", "pipe", "inherit"]
    })
    const exited = new Promise<number>((done) => child.once("exit", () => done(performance.now())))
    let exitLine: bigint | undefined
    const lines = createInterface({ input: child.stdout! })
    const exitedAtNs = new Promise<bigint | undefined>((done) => lines.once("close", () => done(exitLine)))
    lines.on("line", (line) => {
      const match = /^PORT (\d+)$/.exec(line)
      if (match) resolve({ child, port: Number(match[1]), exited, exitedAtNs })
      const exit = /^EXIT (\d+)$/.exec(line)
      if (exit) exitLine = BigInt(exit[1]!)
    })
    child.once("exit", (code) => reject(new Error(`${variant} exited early with ${code}`)))
  })

const stop = async (server: Server) => {
  server.child.kill("SIGKILL")
  await server.exited
}

// ---------------------------------------------------------------------------

const overhead = async () => {
  const groups = [
    { baseline: "effect-bare", variants: ["effect-bare", "effect-graceful"] },
    { baseline: "node-bare", variants: ["node-bare", "node-graceful", "node-terminator", "node-terminus"] }
  ]
  // BENCH_GROUPS=effect or =node measures one group only (for quick A/B runs).
  const selected = process.env.BENCH_GROUPS
  const chosen = selected === undefined ? groups : groups.filter((g) => g.baseline.startsWith(selected))
  const samples: Record<string, Array<{ rps: number; p99: number; cpuUs: number }>> = {}
  for (let round = 0; round < rounds; round++) {
    for (const group of chosen) {
      const order = round % 2 === 0 ? group.variants : [...group.variants].reverse()
      for (const variant of order) {
        const server = await startServer(variant)
        await load(server.port, 1)
        const cpuBefore = Number(await get(server.port, "/cpu"))
        const result = await load(server.port, seconds)
        const cpuAfter = Number(await get(server.port, "/cpu"))
        await stop(server)
        // CPU time per request is steadier than throughput on a shared
        // machine: the server is not always the bottleneck.
        const cpuUs = (cpuAfter - cpuBefore) / Math.max(1, result.requests.total)
        ;(samples[variant] ??= []).push({ rps: result.requests.average, p99: result.latency.p99, cpuUs })
        console.log(
          `  round ${round + 1} ${variant.padEnd(16)} ${
            Math.round(result.requests.average)
          } req/s, p99 ${result.latency.p99} ms, ${cpuUs.toFixed(1)} µs CPU/request`
        )
      }
    }
  }
  // Ratios are taken within a round (the variants ran back to back, under
  // the same machine conditions), then the median over rounds is reported.
  const rows = chosen.flatMap((group) => {
    const base = samples[group.baseline]!
    return group.variants.map((variant) => {
      const own = samples[variant]!
      const throughputRatios = own.map((s, i) => s.rps / base[i]!.rps)
      const p99Ratios = own.map((s, i) => s.p99 / Math.max(base[i]!.p99, 1))
      const cpuRatios = own.map((s, i) => s.cpuUs / base[i]!.cpuUs)
      return {
        variant,
        baseline: group.baseline,
        requestsPerSecond: Math.round(median(own.map((s) => s.rps))),
        p99Ms: median(own.map((s) => s.p99)),
        cpuMicrosPerRequest: Number(median(own.map((s) => s.cpuUs)).toFixed(2)),
        throughputRatio: Number(median(throughputRatios).toFixed(3)),
        p99Ratio: Number(median(p99Ratios).toFixed(3)),
        cpuPerRequestRatio: Number(median(cpuRatios).toFixed(3))
      }
    })
  })
  return { rounds, secondsPerSample: seconds, connections: 32, samples, rows }
}

const openIdleSockets = async (port: number, count: number) => {
  const sockets: Array<Net.Socket> = []
  for (let i = 0; i < count; i += 100) {
    await Promise.all(Array.from({ length: Math.min(100, count - i) }, () =>
      new Promise<void>((resolve, reject) => {
        const socket = Net.connect({ port, host: "127.0.0.1" }, () => {
          socket.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        })
        socket.once("data", () => resolve())
        socket.on("error", (e) => (sockets.includes(socket) ? undefined : reject(e)))
        sockets.push(socket)
      })))
  }
  return sockets
}

const shutdownLatency = async () => {
  const variants = ["effect-graceful", "node-graceful", "node-bare", "node-terminator", "node-terminus"]
  const times: Record<string, Array<number>> = {}
  const resets: Record<string, number> = {}
  // Variants alternate within each run, so each ratio compares runs made
  // under the same machine conditions.
  for (let run = 0; run < shutdownRuns; run++) {
    for (const variant of run % 2 === 0 ? variants : [...variants].reverse()) {
      const server = await startServer(variant)
      const sockets = await openIdleSockets(server.port, idleSockets)
      let reset = 0
      for (const socket of sockets) {
        socket.on("error", (error: NodeJS.ErrnoException) => {
          if (error.code === "ECONNRESET" || error.code === "EPIPE") reset++
        })
      }
      await new Promise((resolve) => setTimeout(resolve, 300))
      const sent = performance.now()
      const sentNs = process.hrtime.bigint()
      server.child.kill("SIGTERM")
      const timeout = setTimeout(() => server.child.kill("SIGKILL"), 30_000)
      const exitedAt = await server.exited
      const exitedAtNs = await server.exitedAtNs
      clearTimeout(timeout)
      ;(times[variant] ??= []).push(exitedAtNs === undefined ? exitedAt - sent : Number(exitedAtNs - sentNs) / 1e6)
      await new Promise((resolve) => setTimeout(resolve, 50))
      resets[variant] = (resets[variant] ?? 0) + reset
      for (const socket of sockets) socket.destroy()
    }
  }
  const bare = median(times["node-bare"]!)
  const rows = variants.map((variant) => {
    const own = median(times[variant]!)
    const row = {
      variant,
      idleSockets,
      runs: times[variant]!.map((t) => Math.round(t)),
      medianMs: Math.round(own),
      ratioToBareClose: Number((own / bare).toFixed(2)),
      resets: resets[variant]!
    }
    console.log(
      `  ${variant.padEnd(16)} SIGTERM → exit with ${idleSockets} idle keep-alive sockets: median ${row.medianMs} ms (${
        row.runs.join(", ")
      }), ${row.ratioToBareClose}× a bare server.close(), ${row.resets} resets`
    )
    return row
  })
  return { rows }
}

const heapPerRequest = async (variant: string) => {
  const server = await startServer(variant)
  const sockets: Array<Net.Socket> = []
  // Warm the code paths, then measure with nothing in flight.
  await openIdleSockets(server.port, 100).then((s) => s.forEach((socket) => socket.destroy()))
  await new Promise((resolve) => setTimeout(resolve, 200))
  const before = Number(await get(server.port, "/heap"))
  for (let i = 0; i < slowRequests; i += 500) {
    await Promise.all(
      Array.from({ length: Math.min(500, slowRequests - i) }, () =>
        new Promise<void>((resolve, reject) => {
          const socket = Net.connect({ port: server.port, host: "127.0.0.1" }, () => {
            socket.write("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            resolve()
          })
          socket.on("error", reject)
          sockets.push(socket)
        }))
    )
  }
  while (Number(await get(server.port, "/parked")) < slowRequests) {
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  const during = Number(await get(server.port, "/heap"))
  for (const socket of sockets) socket.destroy()
  await stop(server)
  return (during - before) / slowRequests
}

const memory = async () => {
  const pairs = [["effect-bare", "effect-graceful"], ["node-bare", "node-graceful"]] as const
  const rows = []
  for (const [bare, ours] of pairs) {
    const bareBytes: Array<number> = []
    const oursBytes: Array<number> = []
    for (let round = 0; round < 2; round++) {
      bareBytes.push(await heapPerRequest(bare))
      oursBytes.push(await heapPerRequest(ours))
    }
    const row = {
      variant: ours,
      baseline: bare,
      concurrentRequests: slowRequests,
      bareBytesPerRequest: Math.round(median(bareBytes)),
      oursBytesPerRequest: Math.round(median(oursBytes)),
      overheadBytesPerRequest: Math.round(median(oursBytes) - median(bareBytes))
    }
    console.log(
      `  ${
        ours.padEnd(16)
      } heap per in-flight request: ${row.oursBytesPerRequest} B vs ${row.bareBytesPerRequest} B bare → +${row.overheadBytesPerRequest} B`
    )
    rows.push(row)
  }
  return { rows }
}

const hasValgrind = spawnSync("valgrind", ["--version"]).status === 0

const callgrindControl = (pid: number, ...args: Array<string>) => {
  const result = spawnSync("callgrind_control", [...args, String(pid)], { encoding: "utf8" })
  if (result.status !== 0) throw new Error(`callgrind_control ${args.join(" ")}: ${result.stderr}`)
}

/** Guest instructions per request of one variant, from one callgrind run. */
const instructionsPerRequest = async (variant: string) => {
  const out = join(tmpdir(), `effect-graceful-callgrind-${process.pid}-${variant}.out`)
  // --single-threaded: V8 compiles and collects on the main thread, so the
  // count does not depend on how background threads were scheduled.
  const server = await startServer(variant, [
    "valgrind",
    "-q",
    "--tool=callgrind",
    "--instr-atstart=no",
    `--callgrind-out-file=${out}`,
    "--dump-instr=no"
  ], ["--single-threaded"])
  try {
    // One connection: each turn of the loop serves exactly one request, so
    // the count does not depend on how the load generator was scheduled.
    const url = `http://127.0.0.1:${server.port}/`
    await autocannon({ url, connections: 1, amount: callgrindWarmup })
    await get(server.port, "/heap") // a full GC, so none is half done when counting starts
    callgrindControl(server.child.pid!, "--instr=on")
    const result = await autocannon({ url, connections: 1, amount: callgrindRequests })
    callgrindControl(server.child.pid!, "--dump")
    // A dump on request goes to `<file>.1`.
    const text = readFileSync(`${out}.1`, "utf8")
    const totals = /^(?:totals|summary): (\d+)/m.exec(text)
    if (totals === null) throw new Error(`no totals in ${out}`)
    return Number(totals[1]) / result.requests.total
  } finally {
    await stop(server)
    rmSync(out, { force: true })
    rmSync(`${out}.1`, { force: true })
  }
}

const instructions = async () => {
  if (!hasValgrind) {
    console.log("  valgrind not found: skipped")
    return undefined
  }
  const groups = [
    { baseline: "effect-bare", variants: ["effect-bare", "effect-graceful"] },
    { baseline: "node-bare", variants: ["node-bare", "node-graceful", "node-terminator", "node-terminus"] }
  ]
  const selected = process.env.BENCH_GROUPS
  const chosen = selected === undefined ? groups : groups.filter((g) => g.baseline.startsWith(selected))
  const counts: Record<string, Array<number>> = {}
  for (let run = 0; run < callgrindRuns; run++) {
    for (const group of chosen) {
      for (const variant of group.variants) {
        const count = await instructionsPerRequest(variant)
        ;(counts[variant] ??= []).push(count)
        console.log(`  run ${run + 1} ${variant.padEnd(16)} ${Math.round(count)} instructions/request`)
      }
    }
  }
  const rows = chosen.flatMap((group) =>
    group.variants.map((variant) => {
      const own = median(counts[variant]!)
      const base = median(counts[group.baseline]!)
      return {
        variant,
        baseline: group.baseline,
        instructionsPerRequest: Math.round(own),
        runs: counts[variant]!.map(Math.round),
        instructionsRatio: Number((own / base).toFixed(3))
      }
    })
  )
  return { requests: callgrindRequests, warmupRequests: callgrindWarmup, connections: 1, runs: callgrindRuns, rows }
}

const only = process.env.BENCH_ONLY
const section = async <A>(name: string, title: string, run: () => Promise<A>): Promise<A | undefined> => {
  if (only !== undefined && only !== name) return undefined
  console.log(title)
  return run()
}

const main = async () => {
  const started = Date.now()
  const overheadResult = await section(
    "overhead",
    `HTTP overhead (${rounds} rounds × ${seconds} s, 32 connections)`,
    overhead
  )
  const shutdownResult = await section("shutdown", `Shutdown latency (${shutdownRuns} runs)`, shutdownLatency)
  const memoryResult = await section("memory", `Memory (${slowRequests} concurrent slow requests)`, memory)
  const instructionsResult = await section(
    "instructions",
    `Instructions per request (callgrind, ${callgrindRequests} requests after ${callgrindWarmup} to warm up, ${callgrindRuns} run(s))`,
    instructions
  )

  console.log("\nSummary")
  for (const row of overheadResult?.rows ?? []) {
    if (row.variant === row.baseline) continue
    console.log(
      `  ${
        row.variant.padEnd(16)
      } throughput ${row.throughputRatio}× ${row.baseline}, p99 ${row.p99Ratio}×, CPU per request ${row.cpuPerRequestRatio}×`
    )
  }
  for (const row of instructionsResult?.rows ?? []) {
    if (row.variant === row.baseline) continue
    console.log(`  ${row.variant.padEnd(16)} instructions per request ${row.instructionsRatio}× ${row.baseline}`)
  }
  for (const row of shutdownResult?.rows ?? []) {
    if (row.variant === "node-bare") continue
    console.log(
      `  ${
        row.variant.padEnd(16)
      } shutdown with ${row.idleSockets} idle sockets ${row.ratioToBareClose}× node-bare's server.close(), ${row.resets} resets`
    )
  }
  const results = {
    date: new Date().toISOString(),
    node: process.version,
    cpus: cpus().length,
    pinned: pin,
    durationSeconds: Math.round((Date.now() - started) / 1000),
    targets: {
      cpuPerRequestRatio: "<= 1.03, and no higher than node-terminator or node-terminus",
      instructionsRatio: "<= 1.03",
      shutdownRatioToBareClose: "<= 2, with 0 resets",
      overheadBytesPerRequest: "<= 1024"
    },
    overhead: overheadResult,
    shutdown: shutdownResult,
    memory: memoryResult,
    instructions: instructionsResult
  }
  mkdirSync(join(import.meta.dirname, "..", "results"), { recursive: true })
  const file = only === undefined ? "http.json" : `http-${only}.json`
  writeFileSync(join(import.meta.dirname, "..", "results", file), JSON.stringify(results, null, 2) + "\n")
  console.log(`written to bench/results/${file}`)
}

await main()
