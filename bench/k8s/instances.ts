/**
 * Instances of a service for the platform benches (bench/k8s, bench/nginx):
 * started as child processes on fixed loopback ports, probed for readiness
 * on a fresh connection, and killed, all of them, however the bench ends.
 * The load itself is bench/rolling/load.ts.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import { closeSync, existsSync, openSync, readFileSync } from "node:fs"
import * as Http from "node:http"
export { freePort } from "../support/ports.ts"
import { join } from "node:path"
import Pg from "pg"

export const root = join(import.meta.dirname, "..", "..")
export const exampleMain = join(root, "examples", "service", "main.ts")
export const naiveMain = join(root, "bench", "rolling", "naive-service.ts")

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

export const num = (name: string, fallback: number): number => {
  const value = process.env[name]
  return value === undefined || value === "" ? fallback : Number(value)
}

// -----------------------------------------------------------------------------
// Every child is killed when the bench leaves, however it leaves.
// -----------------------------------------------------------------------------

const children = new Set<ChildProcess>()

export const track = (child: ChildProcess): ChildProcess => {
  children.add(child)
  child.once("exit", () => children.delete(child))
  return child
}

export const killAll = (): void => {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
  }
}

process.on("exit", killAll)
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(signal, () => {
    console.error(`\n${signal}: stopping the benchmark`)
    killAll()
    process.exit(130)
  })
}

/** Installs a Debian package when `binary` is not found (`apt-get update` first on a fresh machine). */
export const ensureDebianPackage = (binary: string, pkg: string, versionArgs: ReadonlyArray<string>): string => {
  const version = () => {
    const result = spawnSync(binary, versionArgs, { encoding: "utf8" })
    if (result.error !== undefined || result.status !== 0) return undefined
    return `${result.stdout}${result.stderr}`.trim().split("\n")[0]
  }
  const found = version()
  if (found !== undefined) return found
  console.log(`  ${binary} not found: apt-get update && apt-get install -y ${pkg}`)
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" }
  spawnSync("apt-get", ["update"], { env, stdio: "ignore", timeout: 300_000 })
  const install = spawnSync("apt-get", ["install", "-y", "--no-install-recommends", pkg], {
    encoding: "utf8",
    env,
    timeout: 300_000
  })
  const installed = version()
  if (installed === undefined) throw new Error(`could not install ${pkg}:\n${install.stderr ?? ""}`)
  return installed
}

/** The benches' own database: no other test's locks on the `work` table can stall them. */
const BENCH_DATABASE = "effect_graceful_platform_bench"

/**
 * The database the example service's instances use: `BENCH_DATABASE_URL`;
 * else a database of their own on the local Postgres (127.0.0.1:5432, user
 * postgres), created when missing; else none, and each instance opens PGlite
 * in process. On a busy machine PGlite's start-up (compiling its
 * WebAssembly) takes a CPU for seconds to a minute per instance, and a
 * restart waits for it; the benches measure the shutdown, not that.
 */
export const databaseUrl = async (): Promise<string | undefined> => {
  const explicit = process.env.BENCH_DATABASE_URL
  if (explicit !== undefined) return explicit === "" ? undefined : explicit
  const client = new Pg.Client({
    host: "127.0.0.1",
    port: 5432,
    user: "postgres",
    database: "postgres",
    connectionTimeoutMillis: 2_000
  })
  try {
    await client.connect()
    const found = await client.query("SELECT 1 FROM pg_database WHERE datname = $1", [BENCH_DATABASE])
    if (found.rowCount === 0) await client.query(`CREATE DATABASE ${BENCH_DATABASE}`)
    return `postgres://postgres@127.0.0.1:5432/${BENCH_DATABASE}`
  } catch {
    return undefined
  } finally {
    await client.end().catch(() => undefined)
  }
}

// -----------------------------------------------------------------------------
// Instances
// -----------------------------------------------------------------------------

export interface Exited {
  readonly at: number
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
}

export interface Instance {
  readonly name: string
  readonly port: number
  readonly child: ChildProcess
  readonly exited: Promise<Exited>
  readonly reportFile: string
  readonly logFile: string
}

/**
 * Starts `file` on 127.0.0.1:`port` with the example's settings for a bench
 * (no database or Redis URL, no Kubernetes variables) plus `env` (which may
 * set `DATABASE_URL`, see {@link databaseUrl}); its output goes to
 * `<dir>/<name>.log`.
 */
export const startInstance = (
  file: string,
  name: string,
  port: number,
  dir: string,
  env: Readonly<Record<string, string>>,
  clock: () => number
): Instance => {
  const base = join(dir, name)
  const log = openSync(`${base}.log`, "a")
  const child = track(spawn(process.execPath, [file], {
    env: {
      ...process.env,
      PORT: String(port),
      HOST: "127.0.0.1",
      LOG_FILE: `${base}.jsonl`,
      SHUTDOWN_REPORT_FILE: `${base}.report.json`,
      DATABASE_URL: undefined,
      REDIS_URL: undefined,
      KUBERNETES_SERVICE_HOST: undefined,
      ...env
    },
    stdio: ["ignore", log, log]
  }))
  closeSync(log)
  const exited = new Promise<Exited>((resolve) =>
    child.once("exit", (code, signal) => resolve({ at: clock(), code, signal }))
  )
  return { name, port, child, exited, reportFile: `${base}.report.json`, logFile: `${base}.log` }
}

/** A GET on a fresh connection (no agent): a probe must not hold a keep-alive socket open on the service. */
export const probe = (port: number, path: string): Promise<{ status: number; body: string }> =>
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

/** Polls /health/ready directly until 200 (a readiness probe); fails if the process exits or time runs out. */
export const waitReady = async (instance: Instance, timeoutMs: number): Promise<void> => {
  let exited = false
  void instance.exited.then(() => (exited = true))
  const deadline = performance.now() + timeoutMs
  while (performance.now() < deadline) {
    if (exited) throw new Error(`${instance.name} exited before it was ready; see ${instance.logFile}`)
    const ok = await probe(instance.port, "/health/ready").then((r) => r.status === 200, () => false)
    if (ok) return
    await sleep(20)
  }
  throw new Error(`${instance.name} not ready after ${timeoutMs} ms; see ${instance.logFile}`)
}

/** The outcome line of an instance's shutdown report, when it wrote one. */
export const readReport = (file: string) => {
  if (!existsSync(file)) return undefined
  try {
    const report = JSON.parse(readFileSync(file, "utf8")) as {
      outcome?: string
      exitCode?: number
      inFlight?: { atDrainStart: number; atDrainEnd: number }
      cut?: ReadonlyArray<unknown>
      durationMs?: number
    }
    return {
      outcome: report.outcome,
      exitCode: report.exitCode,
      inFlight: report.inFlight,
      cut: report.cut?.length,
      durationMs: report.durationMs
    }
  } catch {
    return undefined
  }
}

export const median = (values: ReadonlyArray<number>): number => {
  if (values.length === 0) return 0
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

/** A small seeded generator (mulberry32): the same seed draws the same delays. */
export const seeded = (seed: number) => {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
