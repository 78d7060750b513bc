/**
 * Wire edges found by trying to break the guard (docs/guide/wire-behaviour.md,
 * behaviours 13, 14, 17, 18): pipelined requests while draining, slow and
 * half-open clients, HTTPS connections accepted just after SIGTERM, handlers
 * that fight the guard's `Connection: close`, and what readiness tells the
 * world. Real child processes, real signals, raw sockets; "ran" is read from
 * the service's own record (its JSONL request log), not from the client.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import * as Net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import { type Fixture, spawnFixture } from "../support/fixture.ts"
import { RawConnection, type RawResponse } from "./wire.ts"
import { wireFixtures } from "./wire-suite.ts"

let running: Array<Fixture> = []
let sockets: Array<RawConnection | Net.Socket> = []
let cleanups: Array<() => void> = []
afterEach(() => {
  for (const cleanup of cleanups) cleanup()
  cleanups = []
  for (const socket of sockets) socket.destroy()
  for (const service of running) service.cleanup()
  running = []
  sockets = []
})

const { boot, open } = wireFixtures("http-edges.ts")

/** Reads responses until the connection closes; returns them and whether it ended with a reset. */
const readAll = async (connection: RawConnection) => {
  const responses: Array<RawResponse> = []
  while (true) {
    const response = await connection.read().catch(() => undefined)
    if (response === undefined) break
    responses.push(response)
  }
  return { responses, reset: (await connection.closed).reset }
}

const get = (path: string) => `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`
const post = (path: string) => `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n`

const jsonLines = (file: string): Array<Record<string, unknown>> =>
  existsSync(file)
    ? readFileSync(file, "utf8").split("\n").filter((line) => line !== "").map((line) => JSON.parse(line))
    : []

/** Resolves once `predicate` holds on the service's output (a log line is a fact, not a guess). */
const waitForOutput = async (service: Fixture, predicate: (output: string) => boolean, what: string) => {
  const deadline = Date.now() + 60_000
  while (!predicate(service.output())) {
    if (Date.now() > deadline) throw new Error(`no ${what} in:\n${service.output()}`)
    await new Promise((resolve) => setTimeout(resolve, 10)) // polling interval of a bounded wait on a fact
  }
}

/** The example service (examples/service) with its JSONL request log. */
const bootExample = async (env: Record<string, string>) => {
  const logDir = mkdtempSync(join(tmpdir(), "wire-edges-"))
  const logFile = join(logDir, "requests.jsonl")
  const service = spawnFixture(join(import.meta.dirname, "..", "..", "examples", "service", "main.ts"), {
    NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ""} --conditions=@effect-graceful/source`,
    PORT: "0",
    LOG_FILE: logFile,
    ...env
  })
  running.push(service)
  cleanups.push(() => rmSync(logDir, { recursive: true, force: true }))
  let port = 0
  await waitForOutput(service, (output) => {
    const match = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(output)
    if (match) port = Number(match[1])
    return match !== null
  }, "listening line")
  return { service, port, logFile }
}

describe("13. pipelined requests while draining", { timeout: 120_000 }, () => {
  // Before: the last request ran (its JSONL line and row exist) and its
  // response went nowhere; the report said clean.
  const cases = [
    {
      name: "[GET /work?ms=300, GET /work?ms=0], then POST 100 ms later",
      first: get("/work?ms=300") + get("/work?ms=0")
    },
    { name: "[GET /work?ms=300, GET /health/live, POST /work]", first: get("/work?ms=300") + get("/health/live") }
  ]
  for (const testCase of cases) {
    it(`example service: ${testCase.name}: every request that ran is answered, in order, the last says close`, async () => {
      const { logFile, port, service } = await bootExample({ SHUTDOWN_DELAY: "3 seconds" })
      service.kill("SIGTERM")
      await waitForOutput(service, (output) => output.includes("phase: Draining"), "Draining phase")
      const connection = await open(port)
      connection.write(testCase.first)
      if (testCase.first.includes("health")) connection.write(post("/work?ms=0"))
      else {
        await new Promise((resolve) => setTimeout(resolve, 100)) // the behaviour under test: the POST 100 ms behind the pipelined pair
        connection.write(post("/work?ms=0"))
      }
      const { reset, responses } = await readAll(connection)
      const exit = await service.exited
      const ran = jsonLines(logFile).filter((line) => line.path === "/work")
      const answeredWork = responses.filter((r) => r.status === 200 && "id" in JSON.parse(r.body))
      expect(reset).toBe(false)
      // The earlier heads are still queued behind the 300 ms one when the POST
      // arrives, so the guard moves the close to the POST: all three answered.
      expect(responses.length, service.output()).toBe(3)
      // What ran is what was answered: no /work ran without its answer reaching the client.
      expect(answeredWork.length, JSON.stringify({ ran, responses })).toBe(ran.length)
      expect(responses.map((r) => r.status).every((status) => status === 200)).toBe(true)
      expect(responses.at(-1)!.headers.connection).toBe("close")
      expect(responses.slice(0, -1).map((r) => r.headers.connection)).not.toContain("close")
      expect(exit.code, service.output()).toBe(0)
    })
  }

  it("plain Node app: 4 pipelined requests while draining are each answered or not run", async () => {
    const { port, service } = await boot({ SHUTDOWN_DELAY: "3 seconds" })
    service.kill("SIGTERM")
    await service.waitFor("draining")
    const connection = await open(port)
    connection.write(get("/work?ms=200") + get("/work?ms=0") + get("/work?ms=0"))
    await new Promise((resolve) => setTimeout(resolve, 100)) // the behaviour under test: the POST 100 ms behind the pipelined three
    connection.write(post("/work?ms=0"))
    const { reset, responses } = await readAll(connection)
    const exit = await service.exited
    const ran = jsonLines(join(service.dir, "ran.jsonl"))
    expect(reset).toBe(false)
    expect(ran.length).toBe(4)
    expect(responses.map((r) => JSON.parse(r.body).n)).toEqual(ran.map((line) => line.n))
    expect(responses.at(-1)!.headers.connection).toBe("close")
    expect(exit.code, service.output()).toBe(0)
  })
})

describe("17. no client holds the drain", () => {
  it("a request head trickling in gets 408 and close after the new-connection grace; the report says degraded", async () => {
    // Before: one byte every 500 ms held Closing to the drain deadline (15.1 s), then FIN, no response, "clean".
    const { port, service } = await boot({ FIXTURE_NEW_CONNECTION_GRACE: "1 second" })
    const slow = await open(port)
    const head = get("/work?ms=0")
    let sent = 0
    slow.write(head[sent++]!)
    const trickle = setInterval(() => {
      if (sent < head.length - 1 && !slow.socket.destroyed) slow.write(head[sent++]!)
    }, 300)
    try {
      await new Promise((resolve) => setTimeout(resolve, 300))
      const signalled = service.kill("SIGTERM")
      const answer = await slow.drain()
      const exit = await service.exited
      expect(answer).toMatch(/^HTTP\/1\.1 408 /)
      expect(answer).toMatch(/\r\nConnection: close\r\n/)
      expect(exit.at - signalled, service.output()).toBeLessThan(5_000)
      expect(exit.code).toBe(1)
      const report = service.report()
      expect(report.outcome).toBe("degraded")
      expect(JSON.stringify(report.releases)).toContain("request head incomplete (408)")
    } finally {
      clearInterval(trickle)
    }
  })

  it("a half-open client (never closes its side) is destroyed after a short linger; the shutdown stays clean", async () => {
    // Before: 15.1 s (the drain deadline), "0 cut".
    const { port, service } = await boot()
    const idle = await open(port, { halfOpen: true })
    expect((await idle.request("/work?ms=0")).status).toBe(200)
    await new Promise((resolve) => setTimeout(resolve, 200))
    const signalled = service.kill("SIGTERM")
    const exit = await service.exited
    expect(exit.code, service.output()).toBe(0)
    expect(exit.at - signalled, service.output()).toBeLessThan(3_000)
    // The client saw a FIN (it keeps its own side open, so its socket never closes by itself).
    expect(await idle.drain()).toBe("")
  })
})

describe("14. HTTPS", () => {
  it("a TLS connection made right after SIGTERM is within the new-connection grace: served 200, exit 0", async () => {
    // Before: 503 with Connection: close and exit 1, 4 runs of 4.
    let served = 0
    for (let run = 0; run < 4; run++) {
      const { port, service } = await boot({ FIXTURE_TLS: "true" })
      service.kill("SIGTERM")
      const connection = await RawConnection.open(port, { tls: true }).catch((error: NodeJS.ErrnoException) => error)
      if (connection instanceof RawConnection) {
        sockets.push(connection)
        const response = await connection.request("/work?ms=0")
        expect(response.status, service.output()).toBe(200)
        expect(response.headers.connection).toBe("close")
        served++
      } else {
        // Refused once the listener is closed; or reset: the kernel's last
        // window (a handshake completed into the accept queue after the
        // guard's last accept), one connection per shutdown at most, as the
        // wire suite allows for plain TCP. Never a 503, never exit 1.
        expect(["ECONNREFUSED", "ECONNRESET"]).toContain(connection.code)
      }
      expect((await service.exited).code, service.output()).toBe(0)
    }
    expect(served).toBeGreaterThan(0)
  })
})

describe("13. every response written after the trigger carries exactly one Connection: close", () => {
  /** The raw head of one response on a fresh connection. */
  const rawHead = (port: number, path: string) =>
    new Promise<string>((resolve, reject) => {
      const socket = Net.connect({ port, host: "127.0.0.1" })
      sockets.push(socket)
      let data = ""
      socket.on("connect", () => socket.write(get(path)))
      socket.on("data", (chunk) => {
        data += chunk
        const end = data.indexOf("\r\n\r\n")
        if (end !== -1) resolve(data.slice(0, end + 2))
      })
      socket.on("error", reject)
    })
  const connectionHeaders = (head: string) =>
    head.split("\r\n").filter((line) => /^connection:/i.test(line)).map((line) => line.slice(11).trim().toLowerCase())

  it("whatever the handler set: keep-alive, appendHeader, a raw header array, a 426 with Connection: Upgrade", async () => {
    // Before: the handler's keep-alive won ("keep-alive, timeout=30"), and appendHeader gave both values.
    const { port, service } = await boot({ SHUTDOWN_DELAY: "3 seconds" })
    const ready = await rawHead(port, "/keep-alive")
    expect(connectionHeaders(ready)).toEqual(["keep-alive"])
    service.kill("SIGTERM")
    await service.waitFor("draining")
    for (
      const path of ["/keep-alive", "/append", "/raw-keep-alive", "/upgrade-required", "/work?ms=0", "/health/live"]
    ) {
      expect(connectionHeaders(await rawHead(port, path)), path).toEqual(["close"])
    }
    expect((await service.exited).code, service.output()).toBe(0)
  })
})

describe("18. readiness answers states, not internals", () => {
  const deadPort = async () => {
    const server = Net.createServer()
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
    const port = (server.address() as Net.AddressInfo).port
    await new Promise((resolve) => server.close(resolve))
    return port
  }

  it("a Postgres at a dead port: the app's port names the check and its state only; the log and the opt-in keep the detail", async () => {
    // Before: "error":"Cause([Fail(...connect ECONNREFUSED 127.0.0.1:41790)])" on the public port.
    const pgPort = await deadPort()
    const { port, service } = await boot({ FIXTURE_DEAD_PG_PORT: String(pgPort) })
    const ready = await (await open(port)).request("/health/ready")
    expect(ready.status).toBe(503)
    const body = JSON.parse(ready.body)
    expect(body.checks).toEqual([{ name: "database", status: "fail", durationMs: expect.any(Number) }])
    expect(ready.body).not.toContain(String(pgPort))
    expect(ready.body).not.toContain("ECONNREFUSED")
    await waitForOutput(service, (output) => output.includes(`127.0.0.1:${pgPort}`), "the check's error in the log")

    const detailed = await boot({ FIXTURE_DEAD_PG_PORT: String(pgPort), FIXTURE_READINESS_DETAIL: "true" })
    const withDetail = await (await open(detailed.port)).request("/health/ready")
    expect(withDetail.status).toBe(503)
    expect(withDetail.body).toContain("ECONNREFUSED")
  })
})
