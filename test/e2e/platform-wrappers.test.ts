/**
 * The example service under a package manager, signalled as a naive
 * supervisor does: SIGTERM to the wrapper's PID only (not the process
 * group). Measured with the npm on the PATH:
 *
 * - `npm start` as shipped (`"start": "exec node ..."`): npm forwards the
 *   SIGTERM to node, node drains, and npm exits with node's code (0, 1), or
 *   dies by the signal node re-raised;
 * - a script without `exec`, and `npm exec -- node ...`: npm runs the command
 *   through `sh -c`, forwards the SIGTERM to the shell, which dies; npm dies
 *   too, and node is left running, orphaned, never signalled, never drained.
 *
 * The start-up check names both cases in node's log.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import { untilOutput } from "../support/listening.ts"
import {
  commandLine,
  exampleMain,
  get,
  nodeBin,
  root,
  running,
  sleep,
  type Started,
  startService,
  treeOf,
  unavailable
} from "./platform.ts"

const noNpm = unavailable(["npm", "--version"])
if (noNpm !== undefined) console.warn(`[skipped] wrapper tests: npm cannot run here (${noNpm})`)

let started: Array<Started> = []
let leftovers: Array<number> = []
let dirs: Array<string> = []
afterEach(() => {
  for (const pid of leftovers) if (running(pid)) process.kill(pid, "SIGKILL")
  for (const service of started) service.cleanup()
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
  started = []
  leftovers = []
  dirs = []
})

const boot = async (argv: ReadonlyArray<string>, options: { cwd?: string; env?: Record<string, string> } = {}) => {
  const service = await startService(argv, options)
  started.push(service)
  // The node process running the example, wherever it sits under the wrapper.
  const node = treeOf(service.child.pid!).find((pid) => {
    const argv = commandLine(pid)?.split(" ") ?? []
    return argv[0]?.endsWith("node") === true && argv.some((arg) => arg.endsWith("examples/service/main.ts"))
  })
  expect(node, `the example's node process under ${argv.join(" ")}`).toBeDefined()
  leftovers.push(node!)
  return { service, node: node! }
}

/** A package whose `start` script runs the example service, with or without `exec`. */
const packageWithStart = (script: string) => {
  const dir = mkdtempSync(join(tmpdir(), "effect-graceful-npm-"))
  dirs.push(dir)
  writeFileSync(
    join(dir, "package.json"),
    JSON.stringify({ name: "wrapped", private: true, scripts: { start: script } })
  )
  return dir
}

const note = (line: string) => console.log(`[measured] ${line}`)

describe.skipIf(noNpm !== undefined)("npm start as shipped (exec node ...), SIGTERM to npm's PID only", {
  timeout: 240_000
}, () => {
  it("npm forwards it: the in-flight request is answered, node drains, npm exits 0", async () => {
    const { service, node } = await boot(["npm", "start"], { cwd: root })
    // `exec` replaced the shell: node is npm's own child.
    expect(treeOf(service.child.pid!)).toEqual([service.child.pid!, node])
    const slow = get(service.port, "/work?ms=1500")
    await untilOutput(service, /work started ms=1500/)
    const sent = Date.now()
    process.kill(service.child.pid!, "SIGTERM")
    const answer = await slow
    const exit = await service.exited
    expect(answer, service.output()).toMatchObject({ status: 200, connection: "close" })
    expect({ code: exit.code, signal: exit.signal }, service.output()).toEqual({ code: 0, signal: null })
    expect(service.report()).toMatchObject({ outcome: "clean", inFlight: { atDrainStart: 1, atDrainEnd: 0 } })
    expect(running(node)).toBe(false)
    // The start-up check named the wrapper.
    expect(service.output()).toContain("was started by npm")
    note(`npm start: SIGTERM to npm → npm exits 0 after ${exit.at - sent} ms (node drained a 1.5 s request)`)
  })

  it("npm passes node's exit code on: 1 when the drain cut a request", async () => {
    const { service } = await boot(["npm", "start"], {
      cwd: root,
      env: { SHUTDOWN_TIMEOUT: "2 seconds", SHUTDOWN_DRAIN_TIMEOUT: "500 millis" }
    })
    const hanging = get(service.port, "/work?ms=20000")
    await untilOutput(service, /work started ms=20000/)
    process.kill(service.child.pid!, "SIGTERM")
    const exit = await service.exited
    await hanging
    expect(service.report()).toMatchObject({ outcome: "degraded", exitCode: 1 })
    expect(exit.code, service.output()).toBe(1)
  })

  it("SHUTDOWN_RERAISE_SIGNAL: node dies by SIGTERM, and so does npm", async () => {
    const { service } = await boot(["npm", "start"], { cwd: root, env: { SHUTDOWN_RERAISE_SIGNAL: "true" } })
    process.kill(service.child.pid!, "SIGTERM")
    const exit = await service.exited
    expect({ code: exit.code, signal: exit.signal }, service.output()).toEqual({ code: null, signal: "SIGTERM" })
    expect(service.report()?.outcome).toBe("clean")
  })
})

describe.skipIf(noNpm !== undefined)(
  "npm through a shell, SIGTERM to npm's PID only: node is orphaned, never drained",
  { timeout: 240_000 },
  () => {
    const orphaned = async (argv: ReadonlyArray<string>, cwd: string, label: string) => {
      const { service, node } = await boot(argv, { cwd })
      const [npm, shell] = treeOf(service.child.pid!)
      expect(commandLine(shell!), "npm runs the command through sh -c").toMatch(/^sh -c /)
      // The start-up check said so at start.
      expect(service.output()).toContain("forwards SIGTERM to the shell only")
      process.kill(npm!, "SIGTERM")
      const exit = await service.exited
      // Give node every chance to have been signalled.
      await sleep(2_000) // the behaviour under test: proving a signal never arrives takes a wait
      expect({ npm: exit.signal, shell: running(shell!), node: running(node) }).toEqual({
        npm: "SIGTERM",
        shell: false,
        node: true
      })
      expect(service.report(), "node never started its shutdown").toBeUndefined()
      // Still serving, with no one left to stop it but SIGKILL.
      expect(await get(service.port, "/health/ready")).toMatchObject({ status: 200 })
      note(`${label}: SIGTERM to npm → npm and sh die, node ${node} keeps running undrained`)
    }

    it("a start script without exec", async () => {
      await orphaned(["npm", "start"], packageWithStart(`${nodeBin} ${exampleMain}`), "npm start (no exec)")
    })

    it("npm exec -- node ...", async () => {
      await orphaned(["npm", "exec", "--", "node", "examples/service/main.ts"], root, "npm exec")
    })
  }
)
