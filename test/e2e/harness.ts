/**
 * Spawns the fixture service as a real child process (under the same Node
 * that runs the tests), reads its markers, and records when and how it exited.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { createInterface } from "node:readline"
import type { Report } from "../../src/index.ts"

const fixtures = join(import.meta.dirname, "fixtures")

export interface Exited {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  /** Epoch ms at which the parent saw the exit. */
  readonly at: number
}

export interface Fixture {
  readonly child: ChildProcess
  readonly output: () => string
  /** Resolves with the epoch ms printed with the marker, once it appears. */
  readonly waitFor: (marker: string) => Promise<number>
  readonly has: (marker: string) => boolean
  readonly exited: Promise<Exited>
  /** Sends a signal and returns the epoch ms at which it was sent. */
  readonly kill: (signal: NodeJS.Signals) => number
  readonly report: () => Report.ShutdownReport
  readonly cleanup: () => void
}

export const start = (
  env: Record<string, string> = {},
  options: { readonly ipc?: boolean; readonly fixture?: string } = {}
): Fixture => {
  const fixture = join(fixtures, options.fixture ?? "service.ts")
  const dir = mkdtempSync(join(tmpdir(), "effect-graceful-e2e-"))
  const reportFile = join(dir, "report.json")
  const child = spawn(process.execPath, [fixture], {
    env: { ...process.env, SHUTDOWN_REPORT_FILE: reportFile, ...env },
    stdio: options.ipc === true ? ["ignore", "pipe", "pipe", "ipc"] : ["ignore", "pipe", "pipe"]
  })
  let output = ""
  const marks = new Map<string, number>()
  const waiters = new Map<string, Array<(at: number) => void>>()
  createInterface({ input: child.stdout! }).on("line", (line) => {
    output += line + "\n"
    const match = /^MARK (\S+) (\d+)$/.exec(line)
    if (match) {
      const [, name, at] = match as unknown as [string, string, string]
      marks.set(name, Number(at))
      for (const resolve of waiters.get(name) ?? []) resolve(Number(at))
      waiters.delete(name)
    }
  })
  child.stderr!.on("data", (chunk) => {
    output += String(chunk)
  })
  const exited = new Promise<Exited>((resolve) => {
    child.on("exit", (code, signal) => resolve({ code, signal, at: Date.now() }))
  })
  return {
    child,
    output: () => output,
    has: (marker) => marks.has(marker),
    waitFor: (marker) =>
      new Promise<number>((resolve, reject) => {
        const known = marks.get(marker)
        if (known !== undefined) return resolve(known)
        waiters.set(marker, [...(waiters.get(marker) ?? []), resolve])
        void exited.then(() => {
          if (!marks.has(marker)) reject(new Error(`exited before ${marker}:\n${output}`))
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
