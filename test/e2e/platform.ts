/**
 * Helpers for the platform tests (test/e2e/platform-*.test.ts): the example
 * service started through the command line a platform would use (a PID
 * namespace, tini, a Dockerfile's ENTRYPOINT and CMD, npm), the process tree
 * read from /proc, and the one request the tests keep in flight across the
 * stop signal.
 *
 * Every check here reads what the kernel reports (/proc, exit statuses):
 * nothing is inferred from the command line we asked for.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import * as Http from "node:http"
import { tmpdir } from "node:os"
import { join } from "node:path"
import type { Report } from "../../src/index.ts"

export const root = join(import.meta.dirname, "..", "..")
export const exampleMain = join(root, "examples", "service", "main.ts")
/** The Node that runs the tests (the project's Node 24): the image's `node`. */
export const nodeBin = process.execPath

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

export interface Exit {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  /** Epoch ms at which the exit was seen. */
  readonly at: number
}

export interface Started {
  readonly child: ChildProcess
  readonly port: number
  readonly dir: string
  readonly output: () => string
  readonly exited: Promise<Exit>
  /** The shutdown report, or undefined when none was written (the process never drained). */
  readonly report: () => Report.ShutdownReport | undefined
  readonly cleanup: () => void
}

/** The environment the example service gets in every platform test: hermetic, loopback, port 0. */
export const serviceEnv = (dir: string): Record<string, string> => ({
  PORT: "0",
  HOST: "127.0.0.1",
  LOG_FILE: join(dir, "requests.jsonl"),
  SHUTDOWN_REPORT_FILE: join(dir, "report.json"),
  DATABASE_URL: "",
  REDIS_URL: "",
  KUBERNETES_SERVICE_HOST: "",
  // Each request's start is logged (`work started ms=N`): tests wait for it.
  LOG_LEVEL: "Debug"
})

/**
 * Spawns `argv` (the first element is the program) and resolves once the
 * example service prints `listening on http://127.0.0.1:<port>`. `env` goes
 * on top of this process's environment and {@link serviceEnv}. The start-up
 * wait is long (120 s): PGlite compiles its WebAssembly at start, which takes
 * seconds on an idle machine and a minute on a loaded one.
 */
export const startService = async (
  argv: ReadonlyArray<string>,
  options: {
    readonly env?: Record<string, string | undefined> | undefined
    readonly cwd?: string | undefined
    /** Replaces this process's environment as the base (a Dockerfile's ENV starts from the image's). */
    readonly baseEnv?: Record<string, string | undefined> | undefined
    readonly timeoutMs?: number | undefined
  } = {}
): Promise<Started> => {
  const dir = mkdtempSync(join(tmpdir(), "effect-graceful-platform-"))
  const [program, ...args] = argv
  const child = spawn(program!, args, {
    cwd: options.cwd ?? root,
    env: { ...(options.baseEnv ?? process.env), ...serviceEnv(dir), ...options.env },
    stdio: ["ignore", "pipe", "pipe"]
  })
  let output = ""
  const exited = new Promise<Exit>((resolve) =>
    child.on("exit", (code, signal) => resolve({ code, signal, at: Date.now() }))
  )
  const reportFile = join(dir, "report.json")
  const cleanup = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
    rmSync(dir, { recursive: true, force: true })
  }
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`${argv.join(" ")}: not listening after ${options.timeoutMs ?? 120_000} ms:\n${output}`)),
      options.timeoutMs ?? 120_000
    )
    const onData = (chunk: Buffer) => {
      output += String(chunk)
      const match = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(output)
      if (match) {
        clearTimeout(timer)
        resolve(Number(match[1]))
      }
    }
    child.stdout!.on("data", onData)
    child.stderr!.on("data", onData)
    void exited.then(() => {
      clearTimeout(timer)
      reject(new Error(`${argv.join(" ")} exited before listening:\n${output}`))
    })
  }).catch((error: unknown) => {
    cleanup()
    throw error
  })
  return {
    child,
    port,
    dir,
    output: () => output,
    exited,
    report: () =>
      existsSync(reportFile) ? JSON.parse(readFileSync(reportFile, "utf8")) as Report.ShutdownReport : undefined,
    cleanup
  }
}

/** The direct children of `pid`, from /proc. */
export const childrenOf = (pid: number): ReadonlyArray<number> => {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter((s) => s !== "").map(
      Number
    )
  } catch {
    return []
  }
}

/** `pid` and all its descendants, parents first. */
export const treeOf = (pid: number): ReadonlyArray<number> => [pid, ...childrenOf(pid).flatMap(treeOf)]

/** The command line of `pid`, or undefined once it is gone. */
export const commandLine = (pid: number): string | undefined => {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter((s) => s !== "").join(" ")
  } catch {
    return undefined
  }
}

/** The one-letter state of `pid` (R, S, Z, ...), or undefined once it is gone. */
export const stateOf = (pid: number): string | undefined => {
  try {
    return /^\d+ \(.*\) (\S)/s.exec(readFileSync(`/proc/${pid}/stat`, "utf8"))?.[1]
  } catch {
    return undefined
  }
}

/** Whether `pid` exists and has not exited (a zombie has exited). */
export const running = (pid: number): boolean => {
  const state = stateOf(pid)
  return state !== undefined && state !== "Z" && state !== "X"
}

/** Polls until `predicate` holds; fails after `timeoutMs`. */
export const waitUntil = async (what: string, predicate: () => boolean, timeoutMs = 10_000): Promise<void> => {
  const deadline = Date.now() + timeoutMs
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`)
    await sleep(20) // polling interval of a bounded wait on a fact
  }
}

/**
 * The host PID of the namespace's PID 1: the only child of the `unshare
 * --fork` process.
 */
export const namespaceInit = async (unsharePid: number): Promise<number> => {
  await waitUntil("unshare forked its child", () => childrenOf(unsharePid).length > 0)
  return childrenOf(unsharePid)[0]!
}

export interface Answer {
  readonly status: number
  readonly body: string
  readonly connection: string | undefined
}

/** A GET on a fresh connection: the answer, or the error that ended it. */
export const get = (port: number, path: string): Promise<Answer | Error> =>
  new Promise((resolve) => {
    const request = Http.get({ host: "127.0.0.1", port, path, agent: false }, (response) => {
      let body = ""
      response.setEncoding("utf8")
      response.on("data", (chunk: string) => (body += chunk))
      response.on("end", () =>
        resolve({ status: response.statusCode ?? 0, body, connection: response.headers.connection }))
      response.on("error", resolve)
    })
    request.on("error", resolve)
    request.setTimeout(60_000, () =>
      request.destroy(new Error("no answer within 60 s")))
  })

/**
 * Why a tool the test needs cannot run here, or undefined when it can: the
 * test then skips and says why (a skipped test is not a pass).
 */
export const unavailable = (argv: ReadonlyArray<string>): string | undefined => {
  const result = spawnSync(argv[0]!, argv.slice(1), { encoding: "utf8", timeout: 10_000 })
  if (result.error !== undefined) return `${argv.join(" ")}: ${result.error.message}`
  if (result.status !== 0) return `${argv.join(" ")} exited ${result.status ?? result.signal}: ${result.stderr.trim()}`
  return undefined
}

/**
 * `unshare --fork --pid --mount-proc`: a new PID namespace (root, or a user
 * namespace). `--kill-child`: the namespace dies with unshare, so a test that
 * SIGKILLs unshare on cleanup leaves nothing behind.
 */
export const unshareArgv = ["unshare", "--fork", "--pid", "--mount-proc", "--kill-child"] as const

/** Why a PID namespace cannot be made here, if it cannot. */
export const namespaceUnavailable = (): string | undefined => unavailable([...unshareArgv, "true"])

/** The path of tini, or undefined (Debian: `apt-get install tini`; `.ci/run` installs it). */
export const tiniPath = (): string | undefined =>
  ["/usr/bin/tini", "/sbin/tini", "/usr/local/bin/tini"].find((path) => existsSync(path))
