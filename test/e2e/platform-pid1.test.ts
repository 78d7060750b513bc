/**
 * The example service as PID 1 of a new PID namespace (`unshare --fork
 * --pid --mount-proc`): what a container runtime gives the image's command,
 * without a Docker daemon. The stop signal comes from outside the namespace,
 * as `docker stop` sends it (to the namespace's PID 1, by its host PID).
 *
 * Two facts of PID 1 decide what happens, and both are shown here:
 *
 * - the kernel ignores a signal whose action is the default for a
 *   namespace's PID 1, from inside or outside, so a re-raised SIGTERM
 *   (SHUTDOWN_RERAISE_SIGNAL) does not end the process: the teardown falls
 *   back to exit 128 + n (143);
 * - orphans in the namespace are reparented to PID 1, and only an init
 *   reaps them: node leaves their zombies, tini does not.
 */
import { spawnSync } from "node:child_process"
import { readFileSync } from "node:fs"
import { afterEach, describe, expect, it } from "vitest"
import { untilOutput } from "../support/listening.ts"
import {
  childrenOf,
  commandLine,
  exampleMain,
  get,
  namespaceInit,
  namespaceUnavailable,
  nodeBin,
  running,
  sleep,
  type Started,
  startService,
  stateOf,
  tiniPath,
  unshareArgv,
  waitUntil
} from "./platform.ts"

const noNamespace = namespaceUnavailable()
const tini = tiniPath()
if (noNamespace !== undefined) console.warn(`[skipped] PID 1 tests: cannot make a PID namespace here (${noNamespace})`)
if (tini === undefined) console.warn("[skipped] PID 1 tests under tini: tini is not installed (apt-get install tini)")

let started: Array<Started> = []
afterEach(() => {
  for (const service of started) service.cleanup()
  started = []
})

/** The example service as the namespace's PID 1, or as tini's child when `init` is set. */
const boot = async (options: { readonly init?: string; readonly env?: Record<string, string> } = {}) => {
  const command = options.init !== undefined ? [options.init, "--", nodeBin, exampleMain] : [nodeBin, exampleMain]
  const service = await startService([...unshareArgv, ...command], { env: options.env })
  started.push(service)
  const init = await namespaceInit(service.child.pid!)
  return { service, init }
}

/** The PIDs of `pid` in each namespace it is in, outermost first (`NSpid` in /proc/<pid>/status). */
const nsPids = (pid: number): ReadonlyArray<number> =>
  (/^NSpid:\s+(.*)$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? "").trim().split(/\s+/).map(Number)

/** Makes an orphan in the namespace (a shell that starts `sleep` and exits), as `docker exec` can. */
const orphanIn = async (init: number) => {
  const result = spawnSync("nsenter", [
    "-t",
    String(init),
    "-p",
    "-m",
    "--",
    "/bin/sh",
    "-c",
    "sleep 2 </dev/null >/dev/null 2>&1 & exit 0"
  ], {
    encoding: "utf8",
    timeout: 10_000
  })
  expect(result.status, result.stderr).toBe(0)
  // The shell has exited: its `sleep` now belongs to PID 1.
  await waitUntil(
    "the orphan reparented to PID 1",
    () => childrenOf(init).some((child) => commandLine(child)?.startsWith("sleep") === true),
    5_000
  )
}

const zombiesUnder = (pid: number) => childrenOf(pid).filter((child) => stateOf(child) === "Z")

const timings: Array<string> = []
const note = (line: string) => {
  timings.push(line)
  console.log(`[measured] ${line}`)
}

describe.skipIf(noNamespace !== undefined)("node as PID 1 of a PID namespace, no init", { timeout: 240_000 }, () => {
  it("SIGTERM from outside: the in-flight request is answered, exit 0, the report says clean", async () => {
    const { service, init } = await boot()
    expect(nsPids(init).at(-1), "node is PID 1 in its namespace").toBe(1)
    const slow = get(service.port, "/work?ms=1500")
    await untilOutput(service, /work started ms=1500/)
    const sent = Date.now()
    process.kill(init, "SIGTERM")
    const answer = await slow
    const exit = await service.exited
    expect(answer, service.output()).toMatchObject({ status: 200, connection: "close" })
    expect({ code: exit.code, signal: exit.signal }, service.output()).toEqual({ code: 0, signal: null })
    expect(service.report()).toMatchObject({ outcome: "clean", inFlight: { atDrainStart: 1, atDrainEnd: 0 } })
    // The start-up check named the missing init.
    expect(service.output()).toContain("is PID 1")
    note(`node as PID 1: SIGTERM → exit 0 in ${exit.at - sent} ms (a 1.5 s request in flight)`)
  })

  it("SHUTDOWN_RERAISE_SIGNAL: the kernel ignores the re-raised SIGTERM for PID 1, so the process exits 143", async () => {
    const { service, init } = await boot({ env: { SHUTDOWN_RERAISE_SIGNAL: "true" } })
    process.kill(init, "SIGTERM")
    const exit = await service.exited
    // Outside a namespace the same setting dies by the signal (exit-codes.test.ts);
    // here, without the fallback, the process would exit 0.
    expect({ code: exit.code, signal: exit.signal }, service.output()).toEqual({ code: 143, signal: null })
    expect(service.report()?.outcome).toBe("clean")
  })

  it("an orphan's zombie stays: node does not reap children it did not start", async () => {
    const { service, init } = await boot()
    await orphanIn(init)
    await waitUntil("the orphan exited", () => zombiesUnder(init).length > 0)
    await sleep(1_500) // the behaviour under test: the zombie is still there 1.5 s later
    expect(zombiesUnder(init).length, "zombies under node as PID 1").toBeGreaterThan(0)
    note(`node as PID 1: ${zombiesUnder(init).length} zombie(s) left by one orphan, still there 1.5 s after it exited`)
    process.kill(init, "SIGTERM")
    expect((await service.exited).code).toBe(0)
  })
})

describe.skipIf(noNamespace !== undefined || tini === undefined)("tini as PID 1, node as its child", {
  timeout: 240_000
}, () => {
  it("SIGTERM to tini reaches node: drained, exit 0; the check stays quiet about PID 1", async () => {
    const { service, init } = await boot({ init: tini! })
    const node = childrenOf(init)[0]!
    expect(nsPids(node).at(-1), "node is PID 2 in its namespace").toBe(2)
    const slow = get(service.port, "/work?ms=1500")
    await untilOutput(service, /work started ms=1500/)
    process.kill(init, "SIGTERM")
    const answer = await slow
    const exit = await service.exited
    expect(answer, service.output()).toMatchObject({ status: 200 })
    expect({ code: exit.code, signal: exit.signal }, service.output()).toEqual({ code: 0, signal: null })
    expect(service.report()).toMatchObject({ outcome: "clean", inFlight: { atDrainStart: 1, atDrainEnd: 0 } })
    expect(service.output()).not.toContain("is PID 1")
  })

  it("SHUTDOWN_RERAISE_SIGNAL: node dies by SIGTERM, tini exits 143", async () => {
    const { service, init } = await boot({ init: tini!, env: { SHUTDOWN_RERAISE_SIGNAL: "true" } })
    process.kill(init, "SIGTERM")
    const exit = await service.exited
    expect({ code: exit.code, signal: exit.signal }, service.output()).toEqual({ code: 143, signal: null })
    expect(service.report()?.outcome).toBe("clean")
  })

  it("tini reaps the orphan's zombie", async () => {
    const { service, init } = await boot({ init: tini! })
    await orphanIn(init)
    // The orphan lives 2 s (a zombie's command line is empty); tini reaps on
    // SIGCHLD, or within its 1 s wait loop.
    await waitUntil(
      "the orphan exited",
      () => !childrenOf(init).some((child) => commandLine(child)?.startsWith("sleep") === true)
    )
    await sleep(1_500) // the behaviour under test: no zombie left 1.5 s after the orphan exited
    expect(zombiesUnder(init)).toEqual([])
    expect(running(init)).toBe(true)
    process.kill(init, "SIGTERM")
    expect((await service.exited).code).toBe(0)
  })
})
