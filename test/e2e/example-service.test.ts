/**
 * The example service (examples/service) as a real child process, against
 * the contract in docs/design.md#example-service-contract: the routes, the
 * variables, one JSONL line and one database row per `/work` request, a WebSocket echo that gets 1001 at
 * shutdown, and exit 0 after a SIGTERM that drains what is in flight.
 *
 * The database is PGlite kept in a temporary directory, so that the test can
 * open it after the service has exited and count the rows it left.
 */
import { PGlite } from "@electric-sql/pglite"
import { type ChildProcess, spawn } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import * as Http from "node:http"
import * as Net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import WebSocket from "ws"
import type { Report } from "../../src/index.ts"
import { sourceCondition, spawnListening, untilOutput } from "../support/listening.ts"
import { bunBin } from "./harness.ts"
import { connectError, RawConnection, sleep } from "./wire.ts"

const main = join(import.meta.dirname, "..", "..", "examples", "service", "main.ts")

/** The example service's entries: main.ts on this Node, bun.ts on Bun (BunHttp on Bun.serve). */
const runtimes = [
  { name: "Node", file: main, command: process.execPath, args: [sourceCondition] },
  {
    name: "Bun",
    file: join(import.meta.dirname, "..", "..", "examples", "service", "bun.ts"),
    command: bunBin,
    args: []
  }
] as const
type Runtime = (typeof runtimes)[number]

interface Service {
  readonly child: ChildProcess
  readonly port: number
  readonly dir: string
  readonly logFile: string
  readonly pgliteDir: string
  readonly output: () => string
  readonly exited: Promise<{ readonly code: number | null; readonly signal: NodeJS.Signals | null }>
  readonly report: () => Report.ShutdownReport
}

let running: Array<Service> = []
let clients: Array<{ destroy: () => void }> = []

afterEach(() => {
  for (const client of clients) client.destroy()
  for (const service of running) {
    if (service.child.exitCode === null && service.child.signalCode === null) service.child.kill("SIGKILL")
    rmSync(service.dir, { recursive: true, force: true })
  }
  clients = []
  running = []
})

const bootOn = async (env: Record<string, string>, runtime: Runtime): Promise<Service> => {
  const dir = mkdtempSync(join(tmpdir(), "effect-graceful-example-"))
  const logFile = join(dir, "requests.jsonl")
  const pgliteDir = join(dir, "pglite")
  const { child, port, exited, output } = await spawnListening(
    runtime.file,
    {
      PORT: "0",
      HOST: "127.0.0.1",
      LOG_FILE: logFile,
      PGLITE_DIR: pgliteDir,
      SHUTDOWN_REPORT_FILE: join(dir, "report.json"),
      DATABASE_URL: "",
      REDIS_URL: "",
      KUBERNETES_SERVICE_HOST: "",
      // Each request's start is logged (`work started ms=N`): tests wait for it.
      LOG_LEVEL: "Debug",
      ...env
    },
    runtime.args,
    runtime.command
  ).catch((error: unknown) => {
    rmSync(dir, { recursive: true, force: true })
    throw error
  })
  const service: Service = {
    child,
    port,
    dir,
    logFile,
    pgliteDir,
    output,
    exited,
    report: () => JSON.parse(readFileSync(join(dir, "report.json"), "utf8")) as Report.ShutdownReport
  }
  running.push(service)
  return service
}

const agent = () => {
  const keepAlive = new Http.Agent({ keepAlive: true, maxSockets: 4 })
  clients.push(keepAlive)
  return keepAlive
}

interface Answer {
  readonly status: number
  readonly headers: Http.IncomingHttpHeaders
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- the service's JSON, checked by the assertions
  readonly body: any
}

const get = (port: number, path: string, via?: Http.Agent): Promise<Answer> =>
  new Promise((resolve, reject) => {
    Http.get({ host: "127.0.0.1", port, path, agent: via ?? false }, (response) => {
      let text = ""
      response.setEncoding("utf8")
      response.on("data", (chunk: string) => (text += chunk))
      response.on("end", () => {
        let body: unknown = text
        try {
          body = JSON.parse(text)
        } catch {
          // not JSON
        }
        resolve({ status: response.statusCode ?? 0, headers: response.headers, body })
      })
      response.on("error", reject)
    }).on("error", reject)
  })

const readLines = (file: string): Array<Record<string, unknown>> =>
  readFileSync(file, "utf8").split("\n").filter((line) => line !== "").map((line) => JSON.parse(line))

const rowsIn = async (dir: string): Promise<Array<{ id: string; ms: number }>> => {
  const db = await PGlite.create(dir)
  try {
    return (await db.query<{ id: string; ms: number }>("SELECT id, ms FROM work ORDER BY id")).rows
  } finally {
    await db.close()
  }
}

const openSocket = (port: number) =>
  new Promise<{ readonly ws: WebSocket; readonly closed: Promise<{ code: number; reason: string }> }>(
    (resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`)
      clients.push({ destroy: () => ws.terminate() })
      const closed = new Promise<{ code: number; reason: string }>((done) =>
        ws.on("close", (code, reason) => done({ code, reason: String(reason) }))
      )
      ws.once("open", () => resolve({ ws, closed }))
      ws.once("error", reject)
    }
  )

const echo = (ws: WebSocket, text: string) =>
  new Promise<string>((resolve) => {
    ws.once("message", (data) => resolve(String(data)))
    ws.send(text)
  })

describe.each(runtimes)("example service on $name ($file)", (runtime) => {
  const boot = (env: Record<string, string> = {}) => bootOn(env, runtime)

  it(
    "serves the contract routes, writes one JSONL line and one row per /work, drains on SIGTERM and exits 0",
    async () => {
      const service = await boot()
      const { port } = service
      const keepAlive = agent()

      const live = await get(port, "/health/live")
      expect(live.status).toBe(200)
      expect(live.body).toMatchObject({ status: "ok", phase: "Ready" })

      const ready = await get(port, "/health/ready")
      expect(ready.status).toBe(200)
      expect(ready.body).toMatchObject({
        status: "ready",
        phase: "Ready",
        checks: [{ name: "database", status: "pass" }]
      })

      const ids: Array<string> = []
      for (const ms of [0, 30, 60]) {
        const work = await get(port, `/work?ms=${ms}`, keepAlive)
        expect(work.status).toBe(200)
        expect(work.headers["content-type"]).toContain("application/json")
        expect(work.body).toMatchObject({ ok: true, ms })
        expect(work.body.durationMs).toBeGreaterThanOrEqual(ms)
        ids.push(work.body.id)
      }
      expect((await get(port, "/work?ms=nope")).status).toBe(400)
      expect((await get(port, "/work?ms=-5")).status).toBe(400)
      expect((await get(port, "/nowhere")).status).toBe(404)

      const { ws, closed } = await openSocket(port)
      expect(await echo(ws, "hello")).toBe("hello")
      expect(await echo(ws, "again")).toBe("again")

      // In flight at SIGTERM: it completes, with its line and its row.
      const slow = get(port, "/work?ms=700", keepAlive)
      // In flight: the service logs its start at Debug (LOG_LEVEL=Debug).
      await untilOutput(service, /work started ms=700/)
      service.child.kill("SIGTERM")
      const slowAnswer = await slow
      expect(slowAnswer.status).toBe(200)
      expect(slowAnswer.headers.connection).toBe("close")
      ids.push(slowAnswer.body.id)

      expect(await closed).toEqual({ code: 1001, reason: "server shutting down" })
      expect(await service.exited, service.output()).toEqual({ code: 0, signal: null })

      const report = service.report()
      expect(report.outcome).toBe("clean")
      expect(report.cut).toEqual([])
      expect(report.inFlight.atDrainStart).toBeGreaterThanOrEqual(1)
      // Released in reverse order of acquisition: API first, request log last.
      const releases = report.releases.map((r) => r.name)
      expect(releases).toEqual(["sse streams", "http server", "subscription", "database (pglite)", "request log"])
      expect(report.releases.every((r) => r.outcome === "released")).toBe(true)

      const lines = readLines(service.logFile)
      const workLines = lines.filter((line) => line.path === "/work")
      expect(workLines.map((line) => line.id).sort()).toEqual([...ids].sort())
      expect(lines.filter((line) => line.path === "/ws")).toMatchObject([{ status: 101, messages: 2 }])

      const rows = await rowsIn(service.pgliteDir)
      expect(rows.map((row) => row.id)).toEqual([...ids].sort())
      expect(rows.find((row) => row.id === slowAnswer.body.id)?.ms).toBe(700)
    },
    60_000
  )

  it(
    "during SHUTDOWN_DELAY: readiness 503, liveness 200, /work 200 with Connection: close; then connection refused",
    async () => {
      const service = await boot({ SHUTDOWN_DELAY: "1 second" })
      const { port } = service
      const connection = await RawConnection.open(port)
      clients.push(connection)
      // HTTP/1.1: keep-alive unless the response says close (Node says so, Bun leaves it implied)
      expect((await connection.request("/work?ms=0")).headers.connection ?? "keep-alive").toBe("keep-alive")

      service.child.kill("SIGTERM")
      await untilOutput(service, /phase: Draining/)
      const ready = await get(port, "/health/ready")
      expect(ready.status).toBe(503)
      expect(ready.body).toMatchObject({ status: "not ready", phase: "Draining" })
      expect((await get(port, "/health/live")).status).toBe(200)
      const during = await connection.request("/work?ms=20")
      expect(during.status).toBe(200)
      expect(during.headers.connection).toBe("close")
      expect(JSON.parse(during.body)).toMatchObject({ ok: true, ms: 20 })

      await sleep(1_100) // the behaviour under test: past the 1 s lame-duck delay the listener is closed
      expect(await connectError(port)).toBe("ECONNREFUSED")
      expect(await service.exited, service.output()).toEqual({ code: 0, signal: null })
      const lines = readLines(service.logFile).filter((line) => line.path === "/work")
      expect(lines).toHaveLength(2)
      expect(await rowsIn(service.pgliteDir)).toHaveLength(2)
    },
    60_000
  )

  it(
    "a /work still running at the drain deadline is answered 503 and named in the report; no row, exit 1",
    async () => {
      const service = await boot({ SHUTDOWN_DRAIN_TIMEOUT: "500 millis" })
      const hanging = get(service.port, "/work?ms=10000")
      await untilOutput(service, /work started ms=10000/)
      service.child.kill("SIGTERM")
      const answer = await hanging
      expect(answer.status).toBe(503)
      expect(answer.headers.connection).toBe("close")
      expect(answer.headers["retry-after"]).toBe("1")
      expect(await service.exited, service.output()).toEqual({ code: 1, signal: null })
      const report = service.report()
      expect(report.outcome).toBe("degraded")
      expect(report.cut).toEqual([{ kind: "request", label: "GET /work", ageMs: expect.any(Number) }])
      // Interrupted before its commit point: nothing was done, a retry is safe.
      expect(await rowsIn(service.pgliteDir)).toEqual([])
    },
    60_000
  )

  it(
    "a second signal: the request in flight is cut (503) and the service exits 1 within the emergency budget",
    async () => {
      const service = await boot({ SHUTDOWN_EMERGENCY_TIMEOUT: "1 second" })
      const hanging = get(service.port, "/work?ms=10000")
      await untilOutput(service, /work started ms=10000/)
      service.child.kill("SIGTERM")
      await untilOutput(service, /shutdown: SIGTERM/)
      // SIGINT: a signal of another name counts at once (a repeated SIGTERM
      // within 50 ms would count once, and waiting that out needs a sleep).
      const second = Date.now()
      service.child.kill("SIGINT")
      expect((await hanging).status).toBe(503)
      expect(await service.exited, service.output()).toEqual({ code: 1, signal: null })
      expect(Date.now() - second).toBeLessThan(1_000 + 500)
      const report = service.report()
      expect(report.signals).toBe(2)
      expect(report.cut.map((item) => item.label)).toEqual(["GET /work"])
      expect(await rowsIn(service.pgliteDir)).toEqual([])
    },
    60_000
  )

  it("fails at start-up with exit 1, naming the variable, when a SHUTDOWN_* value is invalid", async () => {
    const dir = mkdtempSync(join(tmpdir(), "effect-graceful-example-"))
    try {
      const child = spawn(runtime.command, [...runtime.args, runtime.file], {
        env: { ...process.env, PORT: "0", LOG_FILE: join(dir, "x.jsonl"), SHUTDOWN_TIMEOUT: "5 parsecs" },
        stdio: ["ignore", "pipe", "pipe"]
      })
      let output = ""
      child.stdout.on("data", (chunk) => (output += String(chunk)))
      child.stderr.on("data", (chunk) => (output += String(chunk)))
      const code = await new Promise<number | null>((resolve) => child.on("exit", (c) => resolve(c)))
      expect(code, output).toBe(1)
      expect(output).toContain("SHUTDOWN_TIMEOUT")
      expect(output).not.toContain("listening on")
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})

describe("examples/express: before.ts drops the request in flight at SIGTERM, main.ts serves it", () => {
  // before.ts prints the port it was given: give it a free one.
  const freePort = () =>
    new Promise<number>((resolve) => {
      const probe = Net.createServer().listen(0, "127.0.0.1", () => {
        const address = probe.address() as Net.AddressInfo
        probe.close(() => resolve(address.port))
      })
    })

  const startExpress = async (file: "before.ts" | "main.ts") => {
    const app = await spawnListening(join(import.meta.dirname, "..", "..", "examples", "express", file), {
      PORT: String(await freePort()),
      HOST: "127.0.0.1",
      KUBERNETES_SERVICE_HOST: "",
      // Each request's start is logged (`work started ms=N`): the tests wait for it.
      LOG_LEVEL: "Debug"
    })
    clients.push({ destroy: () => app.child.kill("SIGKILL") })
    return app
  }

  it("main.ts (graceful): the request completes, health routes answer, exit 0", async () => {
    const app = await startExpress("main.ts")
    expect((await get(app.port, "/health/ready")).status).toBe(200)
    const inFlight = get(app.port, "/work?ms=500")
    await untilOutput(app, /work started ms=500/)
    app.child.kill("SIGTERM")
    const answer = await inFlight
    expect(answer.status).toBe(200)
    expect(answer.body).toEqual({ ok: true, ms: 500 })
    expect(await app.exited, app.output()).toEqual({ code: 0, signal: null })
  })

  it("before.ts (as it was): the request in flight is dropped", async () => {
    const app = await startExpress("before.ts")
    const inFlight = get(app.port, "/work?ms=500").then(() => "answered", (error: NodeJS.ErrnoException) => error.code)
    await untilOutput(app, /work started ms=500/)
    app.child.kill("SIGTERM")
    expect(await inFlight).toBe("ECONNRESET")
    expect(await app.exited).toEqual({ code: null, signal: "SIGTERM" })
  })
})
