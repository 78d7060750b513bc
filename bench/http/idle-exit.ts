/**
 * How long a shutdown takes when clients do nothing, written to
 * bench/results/idle-exit.json:
 *
 * 1. SIGTERM → exit with 1,000 idle keep-alive sockets, the guard
 *    (`node-graceful`, `effect-graceful`) against a bare `server.close()`
 *    (`node-bare`) in the same run, variants alternating; resets counted.
 * 2. SIGTERM → exit with one slow client (a request head trickling in, one
 *    byte every 500 ms) and with one half-open client (never closes its side
 *    after the server's FIN), default settings (drain deadline 15 s).
 *
 * BENCH_BEFORE_SERVER_FILE: another tree's bench/http/server.ts (say main's), run
 * beside ours as `before:<variant>` for before/after figures in one run.
 * Loopback only, bounded in count and time; stops by itself.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { mkdirSync, writeFileSync } from "node:fs"
import * as Net from "node:net"
import { join } from "node:path"
import { createInterface } from "node:readline"

const runs = Number(process.env.BENCH_IDLE_RUNS ?? 5)
const idleSockets = Number(process.env.BENCH_IDLE_SOCKETS ?? 1000)
const serverFile = process.env.BENCH_SERVER_FILE ?? join(import.meta.dirname, "server.ts")
const beforeFile = process.env.BENCH_BEFORE_SERVER_FILE

interface Server {
  readonly child: ChildProcess
  readonly port: number
  readonly exitedAtNs: Promise<bigint | undefined>
  readonly exited: Promise<void>
}

const startServer = (variant: string): Promise<Server> => {
  const [file, name] = variant.startsWith("before:") ? [beforeFile!, variant.slice(7)] : [serverFile, variant]
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [file], {
      env: { ...process.env, BENCH_VARIANT: name, SHUTDOWN_DELAY: "0 seconds" },
      stdio: ["ignore", "pipe", "ignore"]
    })
    const exited = new Promise<void>((done) => child.once("exit", () => done()))
    let exitLine: bigint | undefined
    const lines = createInterface({ input: child.stdout! })
    const exitedAtNs = new Promise<bigint | undefined>((done) => lines.once("close", () => done(exitLine)))
    lines.on("line", (line) => {
      const port = /^PORT (\d+)$/.exec(line)
      if (port) resolve({ child, port: Number(port[1]), exitedAtNs, exited })
      const exit = /^EXIT (\d+)$/.exec(line)
      if (exit) exitLine = BigInt(exit[1]!)
    })
    child.once("exit", (code) => reject(new Error(`${variant} exited early with ${code}`)))
  })
}

/** SIGTERM → the moment the server says it exits (monotonic clock), in ms. */
const timeExit = async (server: Server): Promise<number> => {
  const sentNs = process.hrtime.bigint()
  server.child.kill("SIGTERM")
  const timeout = setTimeout(() => server.child.kill("SIGKILL"), 40_000)
  await server.exited
  const exitedAtNs = await server.exitedAtNs
  clearTimeout(timeout)
  return exitedAtNs === undefined ? Number.NaN : Number(exitedAtNs - sentNs) / 1e6
}

const median = (values: ReadonlyArray<number>) => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

const openIdleSockets = async (port: number, count: number) => {
  const sockets: Array<Net.Socket> = []
  let resets = 0
  for (let i = 0; i < count; i += 100) {
    await Promise.all(Array.from({ length: Math.min(100, count - i) }, () =>
      new Promise<void>((resolve, reject) => {
        const socket = Net.connect({ port, host: "127.0.0.1" }, () => socket.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
        socket.once("data", () => resolve())
        socket.on("error", (error: NodeJS.ErrnoException) => {
          if (error.code === "ECONNRESET" || error.code === "EPIPE") resets++
          else reject(error)
        })
        sockets.push(socket)
      })))
  }
  return { sockets, resets: () => resets }
}

const idle = async (variants: ReadonlyArray<string>) => {
  const times: Record<string, Array<number>> = {}
  const resets: Record<string, number> = {}
  for (let run = 0; run < runs; run++) {
    for (const variant of run % 2 === 0 ? variants : [...variants].reverse()) {
      const server = await startServer(variant)
      const open = await openIdleSockets(server.port, idleSockets)
      await new Promise((resolve) => setTimeout(resolve, 300))
      ;(times[variant] ??= []).push(await timeExit(server))
      await new Promise((resolve) => setTimeout(resolve, 50))
      resets[variant] = (resets[variant] ?? 0) + open.resets()
      for (const socket of open.sockets) socket.destroy()
    }
  }
  const bare = median(times["node-bare"]!)
  return variants.map((variant) => {
    const row = {
      variant,
      idleSockets,
      runsMs: times[variant]!.map((t) => Math.round(t)),
      medianMs: Math.round(median(times[variant]!)),
      ratioToBareClose: Number((median(times[variant]!) / bare).toFixed(2)),
      resets: resets[variant]!
    }
    console.log(
      `  ${variant.padEnd(24)} ${idleSockets} idle sockets: median ${row.medianMs} ms (${
        row.runsMs.join(", ")
      }), ${row.ratioToBareClose}× bare server.close(), ${row.resets} resets`
    )
    return row
  })
}

/** One client that holds the drain: a head trickling in, or a socket left half-open. */
const oneClient = async (variant: string, kind: "slow head" | "half-open") => {
  const server = await startServer(variant)
  const socket = Net.connect({ port: server.port, host: "127.0.0.1", allowHalfOpen: kind === "half-open" })
  socket.on("error", () => {})
  await new Promise<void>((resolve) => socket.once("connect", () => resolve()))
  let trickle: NodeJS.Timeout | undefined
  if (kind === "slow head") {
    const head = "GET / HTTP/1.1\r\nHost: x\r\nX-Padding: " + "x".repeat(200) + "\r\n\r\n"
    let sent = 0
    socket.write(head[sent++]!)
    trickle = setInterval(() => {
      if (sent < head.length - 1) socket.write(head[sent++]!)
    }, 500)
  } else {
    socket.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await new Promise<void>((resolve) => socket.once("data", () => resolve()))
  }
  await new Promise((resolve) => setTimeout(resolve, 600))
  const ms = await timeExit(server)
  clearInterval(trickle)
  socket.destroy()
  const row = { variant, client: kind, exitMs: Math.round(ms) }
  console.log(`  ${variant.padEnd(24)} one ${kind} client: SIGTERM → exit ${row.exitMs} ms`)
  return row
}

const main = async () => {
  const guarded = ["node-graceful", "effect-graceful"]
  const before = beforeFile === undefined ? [] : guarded.map((v) => `before:${v}`)
  console.log(`SIGTERM → exit, ${idleSockets} idle keep-alive sockets (${runs} runs):`)
  const idleRows = await idle(["node-bare", ...guarded, ...before])
  console.log("SIGTERM → exit with one client holding the drain (default settings):")
  const clientRows = []
  for (const variant of ["node-graceful", ...before.filter((v) => v.endsWith("node-graceful"))]) {
    for (const kind of ["slow head", "half-open"] as const) clientRows.push(await oneClient(variant, kind))
  }
  const results = join(import.meta.dirname, "..", "results")
  mkdirSync(results, { recursive: true })
  writeFileSync(
    join(results, "idle-exit.json"),
    JSON.stringify(
      { node: process.version, at: new Date().toISOString(), idle: idleRows, oneClient: clientRows },
      null,
      2
    ) + "\n"
  )
}

await main()
