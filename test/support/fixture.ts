/**
 * Spawns a fixture as a real child process (under the same Node that runs
 * the tests), reads its stdout line by line, and records how it exited.
 * Fixtures print `MARK <name> <value>` for events the test times (epoch ms)
 * or values it reads back (a port), and any other line the test wants
 * (`lines()`). Shared by the end-to-end and the integration suites.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { createInterface } from "node:readline"
import type { Report } from "../../src/index.ts"

export interface Exited {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  /** Epoch ms at which the parent saw the exit. */
  readonly at: number
}

export interface Fixture {
  readonly child: ChildProcess
  readonly dir: string
  /** stdout and stderr so far, for failure messages. */
  readonly output: () => string
  /** stdout lines so far. */
  readonly lines: () => ReadonlyArray<string>
  /** Resolves with the epoch ms printed with the marker, once it appears. */
  readonly waitFor: (marker: string, timeoutMs?: number) => Promise<number>
  readonly has: (marker: string) => boolean
  readonly exited: Promise<Exited>
  /** Sends a signal and returns the epoch ms at which it was sent. */
  readonly kill: (signal: NodeJS.Signals) => number
  readonly report: () => Report.ShutdownReport
  readonly cleanup: () => void
}

/**
 * Starts `file` with `env` on top of this process's environment, plus
 * SHUTDOWN_REPORT_FILE and FIXTURE_DIR pointing into a fresh temporary folder.
 * With `ipc`, the child gets an IPC channel (as under PM2); with `runtime`,
 * it runs under that binary (Bun's) instead of this Node.
 */
export const spawnFixture = (
  file: string,
  env: Record<string, string> = {},
  options: { readonly ipc?: boolean | undefined; readonly runtime?: string | undefined } = {}
): Fixture => {
  const dir = mkdtempSync(join(tmpdir(), "effect-graceful-test-"))
  const reportFile = join(dir, "report.json")
  const child = spawn(options.runtime ?? process.execPath, [file], {
    env: { ...process.env, SHUTDOWN_REPORT_FILE: reportFile, FIXTURE_DIR: dir, ...env },
    stdio: options.ipc === true ? ["ignore", "pipe", "pipe", "ipc"] : ["ignore", "pipe", "pipe"]
  })
  let output = ""
  const stdout: Array<string> = []
  const marks = new Map<string, number>()
  const waiters = new Map<string, Array<(at: number) => void>>()
  createInterface({ input: child.stdout! }).on("line", (line) => {
    output += line + "\n"
    stdout.push(line)
    const match = /^MARK (\S+) (\d+)$/.exec(line)
    if (match) {
      const name = match[1]!
      const at = Number(match[2])
      marks.set(name, at)
      for (const resolve of waiters.get(name) ?? []) resolve(at)
      waiters.delete(name)
    }
  })
  child.stderr!.on("data", (chunk) => {
    output += String(chunk)
  })
  const exited = new Promise<Exited>((resolve) => {
    // `close`, not `exit`: by then every stdout line has been read.
    child.on("close", (code, signal) => resolve({ code, signal, at: Date.now() }))
  })
  return {
    child,
    dir,
    output: () => output,
    lines: () => stdout,
    has: (marker) => marks.has(marker),
    waitFor: (marker, timeoutMs = 20_000) =>
      new Promise<number>((resolve, reject) => {
        const known = marks.get(marker)
        if (known !== undefined) return resolve(known)
        const timer = setTimeout(() => reject(new Error(`no ${marker} within ${timeoutMs} ms:\n${output}`)), timeoutMs)
        waiters.set(marker, [
          ...(waiters.get(marker) ?? []),
          (at) => {
            clearTimeout(timer)
            resolve(at)
          }
        ])
        void exited.then(() => {
          if (!marks.has(marker)) {
            clearTimeout(timer)
            reject(new Error(`exited before ${marker}:\n${output}`))
          }
        })
      }),
    exited,
    kill: (signal) => {
      const at = Date.now()
      child.kill(signal)
      return at
    },
    report: () => JSON.parse(readFileSync(reportFile, "utf8")) as Report.ShutdownReport,
    cleanup: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
      rmSync(dir, { recursive: true, force: true })
    }
  }
}

/** Sends SIGTERM and resolves with when it was sent and how the fixture exited. */
export const sigterm = async (fixture: Fixture): Promise<{ readonly sent: number; readonly exit: Exited }> => {
  const sent = fixture.kill("SIGTERM")
  const exit = await fixture.exited
  return { sent, exit }
}
