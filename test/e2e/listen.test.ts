/**
 * Where the server listens, end to end with the real tools: socket
 * activation through Debian's `systemd-socket-activate` (one socket, named
 * sockets, a `LISTEN_PID` meant for another process), a restart that hands
 * the socket over while a storm of new connections goes on, and
 * `SO_REUSEPORT` (`REUSE_PORT=true`) letting a replacement bind the port
 * while the old instance drains.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import * as Http from "node:http"
import * as Net from "node:net"
import { join } from "node:path"
import { createInterface } from "node:readline"
import { afterEach, describe, expect, it } from "vitest"

const root = join(import.meta.dirname, "..", "..")
const fixture = join(import.meta.dirname, "fixtures", "listen.ts")
const holder = join(root, "test", "support", "socket-holder.ts")
const hasActivate = spawnSync("systemd-socket-activate", ["--version"]).status === 0

interface Proc {
  readonly child: ChildProcess
  readonly output: () => string
  /** The value printed with `MARK <name>`, once it appears. */
  readonly mark: (name: string, timeoutMs?: number) => Promise<string>
  /** The `nth` line (stdout or stderr, 1 = first) matching `pattern`. */
  readonly line: (pattern: RegExp, nth?: number, timeoutMs?: number) => Promise<RegExpExecArray>
  readonly exited: Promise<{ readonly code: number | null; readonly signal: NodeJS.Signals | null }>
}

let procs: Array<Proc> = []
afterEach(() => {
  for (const proc of procs) {
    if (proc.child.exitCode === null && proc.child.signalCode === null) proc.child.kill("SIGKILL")
  }
  procs = []
})

const run = (command: string, args: ReadonlyArray<string>, env: Record<string, string> = {}): Proc => {
  const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ["pipe", "pipe", "pipe"] })
  let output = ""
  const lines: Array<string> = []
  const waiters: Array<() => void> = []
  createInterface({ input: child.stdout! }).on("line", (line) => {
    output += line + "\n"
    lines.push(line)
    for (const wake of waiters.splice(0)) wake()
  })
  createInterface({ input: child.stderr! }).on("line", (line) => {
    output += line + "\n"
    lines.push(line)
    for (const wake of waiters.splice(0)) wake()
  })
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on("close", (code, signal) => resolve({ code, signal }))
  )
  let closed = false
  void exited.then(() => {
    closed = true
    for (const wake of waiters.splice(0)) wake()
  })
  const line = (pattern: RegExp, nth = 1, timeoutMs = 20_000) =>
    new Promise<RegExpExecArray>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`no line ${pattern} within ${timeoutMs} ms:\n${output}`)),
        timeoutMs
      )
      let from = 0
      let seen = 0
      const check = () => {
        for (; from < lines.length; from++) {
          const match = pattern.exec(lines[from]!)
          if (match && ++seen === nth) {
            clearTimeout(timer)
            return resolve(match)
          }
        }
        if (closed) {
          clearTimeout(timer)
          return reject(new Error(`exited before ${pattern}:\n${output}`))
        }
        waiters.push(check)
      }
      check()
    })
  const proc: Proc = {
    child,
    output: () => output,
    mark: (name, timeoutMs) => line(new RegExp(`^MARK ${name} (\\S+)$`), 1, timeoutMs).then((match) => match[1]!),
    line,
    exited
  }
  procs.push(proc)
  return proc
}

/** A port free right now (bound to 0 and released). */
const freePort = () =>
  new Promise<number>((resolve) => {
    const server = Net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address() as Net.AddressInfo
      server.close(() => resolve(port))
    })
  })

interface Outcome {
  readonly status: number | undefined
  readonly body: string
  readonly error: string | undefined
}

/** One GET on a new connection; never rejects. */
const get = (port: number, path: string, timeoutMs = 15_000) =>
  new Promise<Outcome>((resolve) => {
    const request = Http.get({ host: "127.0.0.1", port, path, agent: false, timeout: timeoutMs }, (response) => {
      let body = ""
      response.setEncoding("utf8")
      response.on("data", (chunk: string) => (body += chunk))
      response.on("end", () => resolve({ status: response.statusCode, body, error: undefined }))
      response.on("error", (error: NodeJS.ErrnoException) =>
        resolve({ status: response.statusCode, body, error: error.code ?? error.message }))
    })
    request.on("timeout", () =>
      request.destroy(new Error("timeout")))
    request.on("error", (error: NodeJS.ErrnoException) =>
      resolve({ status: undefined, body: "", error: error.code ?? error.message }))
  })

/**
 * New connections back to back from `concurrency` clients until `stop`
 * resolves: the accept queue is never empty for long, so a listener that
 * closes with connections queued (or a port nobody holds) shows up as
 * ECONNRESET or ECONNREFUSED.
 */
const storm = async (port: number, concurrency: number, stop: Promise<unknown>) => {
  let stopped = false
  void stop.then(() => (stopped = true))
  const outcomes: Array<Outcome> = []
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (!stopped) outcomes.push(await get(port, "/work?ms=5"))
  }))
  return outcomes
}

const failures = (outcomes: ReadonlyArray<Outcome>) =>
  outcomes.filter((outcome) => outcome.status !== 200 || outcome.error !== undefined || !outcome.body.startsWith("ok "))

const pidsOf = (outcomes: ReadonlyArray<Outcome>) => new Set(outcomes.map((outcome) => outcome.body.slice(3)))

/**
 * `systemd-socket-activate` binds, then starts the program on the first
 * connection (as systemd does for a `.socket` unit): wait
 * for its socket, then connect; the first request waits in the queue.
 */
const activate = async (args: ReadonlyArray<string>, env: Record<string, string>, port: number) => {
  // It gives the program only LISTEN_* and what -E names, not its own environment.
  const setenv = Object.entries(env).map(([name, value]) => `-E${name}=${value}`)
  const proc = run("systemd-socket-activate", [...setenv, ...args])
  await proc.line(new RegExp(`^Listening on 127\\.0\\.0\\.1:${port} `))
  return { proc, first: get(port, "/work") }
}

describe.skipIf(!hasActivate)("socket activation (systemd-socket-activate)", () => {
  it.each(["effect", "node"])(
    "Http on the %s server listens on the only inherited socket, not on PORT",
    async (server) => {
      const port = await freePort()
      const { first, proc } = await activate(
        ["-l", `127.0.0.1:${port}`, "--", process.execPath, fixture],
        { FIXTURE_SERVER: server, PORT: "0" },
        port
      )
      expect(Number(await proc.mark("port"))).toBe(port)
      // The connection that woke it was queued in the kernel, then answered.
      expect(await first).toEqual({ status: 200, body: `ok ${proc.child.pid}`, error: undefined })
      expect(await get(port, "/work")).toEqual({ status: 200, body: `ok ${proc.child.pid}`, error: undefined })
      proc.child.kill("SIGTERM")
      expect((await proc.exited).code).toBe(0)
    }
  )

  it("named sockets: the HTTP server takes `http`, Health.serve takes `health`", async () => {
    const healthPort = await freePort()
    const httpPort = await freePort()
    const { first, proc } = await activate(
      [
        "-l",
        `127.0.0.1:${healthPort}`,
        "-l",
        `127.0.0.1:${httpPort}`,
        "--fdname=health:http",
        "--",
        process.execPath,
        fixture
      ],
      { PORT: "0", FIXTURE_HEALTH_PORT: "0" },
      httpPort
    )
    expect((await first).status).toBe(200)
    expect(Number(await proc.mark("port"))).toBe(httpPort)
    expect(Number(await proc.mark("health-port"))).toBe(healthPort)
    await proc.mark("ready")
    expect((await get(httpPort, "/work")).status).toBe(200)
    // The health server answers only its routes: /work there is a 404.
    expect((await get(healthPort, "/health/live")).status).toBe(200)
    expect((await get(healthPort, "/work")).status).toBe(404)
    proc.child.kill("SIGTERM")
    expect((await proc.exited).code).toBe(0)
  })

  it("Health.serve never takes a socket that is not named for it", async () => {
    const httpPort = await freePort()
    const { first, proc } = await activate(
      ["-l", `127.0.0.1:${httpPort}`, "--fdname=web", "--", process.execPath, fixture],
      { PORT: "0", FIXTURE_HEALTH_PORT: "0" },
      httpPort
    )
    expect((await first).status).toBe(200)
    // The only socket goes to the HTTP server (whatever its name); health binds its own port.
    expect(Number(await proc.mark("port"))).toBe(httpPort)
    const healthPort = Number(await proc.mark("health-port"))
    expect(healthPort).not.toBe(httpPort)
    expect((await get(healthPort, "/health/live")).status).toBe(200)
    proc.child.kill("SIGTERM")
    expect((await proc.exited).code).toBe(0)
  })

  it("LISTEN_PID naming another process is ignored: the server binds PORT", async () => {
    const activated = await freePort()
    // Node inherits the descriptor and the variables, but LISTEN_PID is not its pid.
    const { first, proc } = await activate(
      ["-l", `127.0.0.1:${activated}`, "--", "/bin/sh", "-c", `LISTEN_PID=1 exec "$0" "$@"`, process.execPath, fixture],
      { PORT: "0" },
      activated
    )
    const port = Number(await proc.mark("port"))
    expect(port).not.toBe(activated)
    await proc.mark("ready")
    expect((await get(port, "/work")).status).toBe(200)
    proc.child.kill("SIGTERM")
    expect((await proc.exited).code).toBe(0)
    // Nobody ever accepted on the activated socket; its connection closed with the process.
    expect((await first).status).toBeUndefined()
  })

  it("a restart hands the socket over: a storm of new connections across it gets no refusal and no reset", async () => {
    const port = await freePort()
    const { first: wake, proc } = await activate(
      ["-l", `127.0.0.1:${port}`, "--fdname=http", "--", process.execPath, holder, process.execPath, fixture],
      { PORT: "0" },
      port
    )
    const first = (await proc.line(/^HOLDER started (\d+)/))[1]!
    expect((await wake).status).toBe(200)
    let restarted!: () => void
    const done = new Promise<void>((resolve) => (restarted = resolve))
    const load = storm(port, 8, done)
    await new Promise((resolve) => setTimeout(resolve, 300)) // the behaviour under test: the load runs a while before the restart
    proc.child.stdin!.write("restart\n")
    const exit = await proc.line(new RegExp(`^HOLDER exited ${first} (\\S+)`))
    const second = (await proc.line(/^HOLDER started (\d+)/, 2))[1]!
    expect(second).not.toBe(first)
    // Let the new instance serve for a while, then stop the storm.
    await proc.line(/^MARK ready/, 2)
    await new Promise((resolve) => setTimeout(resolve, 300)) // the behaviour under test: the load runs a while after it
    restarted()
    const outcomes = await load
    expect(exit[1]).toBe("0")
    expect(failures(outcomes)).toEqual([])
    // Both instances answered: the storm really crossed the handover.
    expect(pidsOf(outcomes)).toEqual(new Set([first, second]))
    expect(outcomes.length).toBeGreaterThan(100)
    proc.child.stdin!.write("stop\n")
    expect((await proc.exited).code).toBe(0)
  })
})

/** Root and `ip netns`: the handover runs in a network namespace of its own, with its own tcp_migrate_req. */
const canNetns = process.getuid?.() === 0 && spawnSync("ip", ["netns", "list"]).status === 0

describe("SO_REUSEPORT (REUSE_PORT=true)", () => {
  it.skipIf(!canNetns)(
    "with tcp_migrate_req=1, a storm of new connections across the old instance's exit loses nothing",
    async () => {
      const namespace = `eg-test-${process.pid}`
      const ip = (...args: Array<string>) => expect(spawnSync("ip", args).status).toBe(0)
      ip("netns", "add", namespace)
      try {
        ip("netns", "exec", namespace, "ip", "link", "set", "lo", "up")
        ip("netns", "exec", namespace, "sysctl", "-q", "-w", "net.ipv4.tcp_migrate_req=1")
        const driver = run("ip", [
          "netns",
          "exec",
          namespace,
          process.execPath,
          join(import.meta.dirname, "fixtures", "reuseport-handover.ts")
        ])
        const result = JSON.parse((await driver.line(/^RESULT (.*)$/, 1, 60_000))[1]!) as {
          oldExit: number
          requests: number
          failures: Array<string>
          pids: Array<string>
          expectedPids: Array<string>
        }
        expect(result.oldExit).toBe(0)
        expect(result.failures).toEqual([])
        // The storm crossed the handover: both instances answered it.
        expect(result.pids).toEqual(result.expectedPids)
        expect(result.requests).toBeGreaterThan(50)
      } finally {
        spawnSync("ip", ["netns", "del", namespace])
      }
    },
    90_000
  )

  it("a replacement binds the port while the old instance drains; the old one's exit refuses nothing", async () => {
    const old = run(process.execPath, [fixture], { PORT: "0", REUSE_PORT: "true" })
    const port = Number(await old.mark("port"))
    await old.mark("ready")
    // Without SO_REUSEPORT the port is taken: the start-up fails.
    const refused = run(process.execPath, [fixture], { PORT: String(port), REUSE_PORT: "false" })
    expect((await refused.exited).code).toBe(1)
    expect(refused.output()).toContain("EADDRINUSE")
    const next = run(process.execPath, [fixture], { PORT: String(port), REUSE_PORT: "true" })
    expect(Number(await next.mark("port"))).toBe(port)
    await next.mark("ready")
    old.child.kill("SIGTERM")
    expect((await old.exited).code).toBe(0)
    // Only the replacement holds the port now, and it serves.
    const answers = await Promise.all(Array.from({ length: 20 }, () => get(port, "/work")))
    expect(failures(answers)).toEqual([])
    expect(pidsOf(answers)).toEqual(new Set([String(next.child.pid)]))
    next.child.kill("SIGTERM")
    expect((await next.exited).code).toBe(0)
  })
})
