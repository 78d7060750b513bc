/**
 * The Bun HTTP overhead, measured side by side in one run and written to
 * bench/results/bun-http.json: requests/s, p99 latency and server CPU time per
 * request of a trivial route on `BunHttp.layer` (the guard) vs the same app
 * on stock `BunHttpServer.layer`, both run by Bun. Variants alternate within
 * each round; ratios are taken within a round, then the median over rounds.
 *
 * Bun's binary: BUN_BIN, or the one the e2e suite installs
 * (node_modules/.cache/bun-<version>, test/e2e/bun-binary.ts).
 * Loopback only, bounded in count and time; stops by itself.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import { existsSync, mkdirSync, writeFileSync } from "node:fs"
import { cpus } from "node:os"
import { join } from "node:path"
import { createInterface } from "node:readline"
import installBun from "../../test/e2e/bun-binary.ts"
import { get, load, median } from "../support/http.ts"

const rounds = Number(process.env.BENCH_ROUNDS ?? 5)
const seconds = Number(process.env.BENCH_SECONDS ?? 3)
const variants = ["bun-bare", "bun-graceful"] as const

installBun()
const bun = process.env.BUN_BIN!
const serverFile = join(import.meta.dirname, "server.ts")

// With two or more cores, the server gets core 0 to itself.
const pin = cpus().length >= 2 && existsSync("/usr/bin/taskset")
if (pin) spawnSync("taskset", ["-pc", `1-${cpus().length - 1}`, String(process.pid)])

const startServer = (variant: string): Promise<{ readonly child: ChildProcess; readonly port: number }> =>
  new Promise((resolve, reject) => {
    const command = pin ? "taskset" : bun
    const args = pin ? ["-c", "0", bun, serverFile] : [serverFile]
    const child = spawn(command, args, {
      env: { ...process.env, BENCH_VARIANT: variant, SHUTDOWN_DELAY: "0 seconds" },
      stdio: ["ignore", "pipe", "inherit"]
    })
    createInterface({ input: child.stdout! }).on("line", (line) => {
      const match = /^PORT (\d+)$/.exec(line)
      if (match) resolve({ child, port: Number(match[1]) })
    })
    child.once("exit", (code) => reject(new Error(`${variant} exited early with ${code}`)))
  })

const version = spawnSync(bun, ["--version"], { encoding: "utf8" }).stdout.trim()
console.log(`Bun ${version}: ${rounds} rounds of ${seconds} s per variant`)
const samples: Record<string, Array<{ rps: number; p99: number; cpuUs: number }>> = {}
for (let round = 0; round < rounds; round++) {
  for (const variant of round % 2 === 0 ? variants : [...variants].reverse()) {
    const server = await startServer(variant)
    await load(server.port, 1)
    const cpuBefore = Number(await get(server.port, "/cpu"))
    const result = await load(server.port, seconds)
    const cpuAfter = Number(await get(server.port, "/cpu"))
    server.child.kill("SIGKILL")
    const cpuUs = (cpuAfter - cpuBefore) / Math.max(1, result.requests.total)
    ;(samples[variant] ??= []).push({ rps: result.requests.average, p99: result.latency.p99, cpuUs })
    console.log(
      `  round ${round + 1} ${variant.padEnd(13)} ${
        Math.round(result.requests.average)
      } req/s, p99 ${result.latency.p99} ms, ${cpuUs.toFixed(1)} µs CPU/request`
    )
  }
}
const ratio = (key: "rps" | "p99" | "cpuUs") =>
  median(samples["bun-graceful"]!.map((s, i) => s[key] / Math.max(1e-9, samples["bun-bare"]![i]![key])))
const summary = {
  bun: version,
  rounds,
  seconds,
  variants: Object.fromEntries(
    variants.map((v) => [v, {
      rps: Math.round(median(samples[v]!.map((s) => s.rps))),
      p99Ms: median(samples[v]!.map((s) => s.p99)),
      cpuUsPerRequest: Number(median(samples[v]!.map((s) => s.cpuUs)).toFixed(2))
    }])
  ),
  ratios: {
    rps: Number(ratio("rps").toFixed(3)),
    p99: Number(ratio("p99").toFixed(3)),
    cpuUsPerRequest: Number(ratio("cpuUs").toFixed(3))
  },
  samples
}
console.log(JSON.stringify({ variants: summary.variants, ratios: summary.ratios }, null, 2))
mkdirSync(join(import.meta.dirname, "..", "results"), { recursive: true })
writeFileSync(join(import.meta.dirname, "..", "results", "bun-http.json"), JSON.stringify(summary, null, 2) + "\n")
