/**
 * Faults between the example service and its real Postgres and Redis: a
 * fault-injecting TCP proxy (test/support/faultProxy.ts) sits in front of the
 * real server and resets or freezes the connections, or the service is
 * pointed at an endpoint that never becomes a database. The service is the
 * example (`examples/service/main.ts`: Database.ts, Events.ts), a real child
 * process sent real signals over real sockets.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import * as Http from "node:http"
import * as Net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import type { Report } from "../../src/index.ts"
import { type FaultProxy, startFaultProxy } from "../support/faultProxy.ts"
import { start, uniqueName } from "./harness.ts"

const main = join(import.meta.dirname, "..", "..", "examples", "service", "main.ts")
const pgUrl = (port: number) => `postgres://postgres@127.0.0.1:${port}/test`

interface Service {
  readonly child: ChildProcess
  readonly output: () => string
  readonly exited: Promise<
    { readonly code: number | null; readonly signal: NodeJS.Signals | null; readonly at: number }
  >
  /** Resolves with the port once the service prints `listening on`. */
  readonly listening: Promise<number>
  readonly report: () => Report.ShutdownReport
  readonly dir: string
}

const cleanups: Array<() => void | Promise<void>> = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

const startService = (env: Record<string, string>): Service => {
  const dir = mkdtempSync(join(tmpdir(), "effect-graceful-faults-"))
  const child = spawn(process.execPath, [main], {
    env: {
      ...process.env,
      PORT: "0",
      LOG_FILE: join(dir, "requests.jsonl"),
      SHUTDOWN_REPORT_FILE: join(dir, "report.json"),
      ...env
    },
    stdio: ["ignore", "pipe", "pipe"]
  })
  let output = ""
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((resolve) => {
    child.on("close", (code, signal) => resolve({ code, signal, at: Date.now() }))
  })
  const listening = new Promise<number>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      output += String(chunk)
      const match = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(output)
      if (match) resolve(Number(match[1]))
    }
    child.stdout!.on("data", onData)
    child.stderr!.on("data", onData)
    void exited.then(() => reject(new Error(`exited before listening:\n${output}`)))
  })
  listening.catch(() => undefined)
  cleanups.push(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
    rmSync(dir, { recursive: true, force: true })
  })
  return {
    child,
    dir,
    output: () => output,
    exited,
    listening,
    report: () => JSON.parse(readFileSync(join(dir, "report.json"), "utf8")) as Report.ShutdownReport
  }
}

const proxyTo = async (port: number): Promise<FaultProxy> => {
  const proxy = await startFaultProxy({ port })
  cleanups.push(() => proxy.close())
  return proxy
}

/** GET on a fresh connection; resolves with the status, or with the socket error's code. */
const get = (port: number, path: string): Promise<number | string> =>
  new Promise((resolve) => {
    const request = Http.get({ host: "127.0.0.1", port, path, agent: false }, (response) => {
      response.resume()
      response.on("end", () => resolve(response.statusCode ?? 0))
      response.on("error", (error: NodeJS.ErrnoException) => resolve(error.code ?? "error"))
    })
    request.on("error", (error: NodeJS.ErrnoException) => resolve(error.code ?? "error"))
  })

const countOf = (values: ReadonlyArray<number | string>) => {
  const counts: Record<string, number> = {}
  for (const value of values) counts[String(value)] = (counts[String(value)] ?? 0) + 1
  return counts
}

/** A loopback port nothing listens on. */
const closedPort = async (): Promise<number> => {
  const server = Net.createServer()
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const { port } = server.address() as Net.AddressInfo
  await new Promise((resolve) => server.close(resolve))
  return port
}

/** A real server on loopback that is not Postgres: an HTTP server. */
const notPostgres = async (): Promise<number> => {
  const server = Http.createServer((_request, response) => response.end("not postgres"))
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())))
  server.on("connection", (socket) => cleanups.push(() => void socket.destroy()))
  return (server.address() as Net.AddressInfo).port
}

const note = (line: string) => console.log(`[measured] ${line}`)

/** Waits until `pattern` appears in the output (or the service exits); resolves with when, or undefined. */
const waitForLine = async (service: Service, pattern: RegExp, timeoutMs: number): Promise<number | undefined> => {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline && service.child.exitCode === null) {
    if (pattern.test(service.output())) return Date.now()
    await sleep(25)
  }
  return pattern.test(service.output()) ? Date.now() : undefined
}

/** A real Postgres for the tests that fault Redis (PGlite is slow to start on a busy machine). */
const realDatabase = { DATABASE_URL: pgUrl(5432) }

describe("Postgres faults under the example service", () => {
  it("a connection reset during queries fails those requests only; the service keeps serving and exits 0", async () => {
    const proxy = await proxyTo(5432)
    const service = startService({ DATABASE_URL: pgUrl(proxy.port), SHUTDOWN_TIMEOUT: "10 seconds" })
    const port = await service.listening
    // Several pooled connections, idle: the next queries run on connections
    // that are already open (lent clients), not on new ones.
    expect(await Promise.all(Array.from({ length: 6 }, () => get(port, "/work?ms=50")))).toEqual(Array(6).fill(200))

    // Queries on the wire when the server goes away: frozen first, so that
    // each of them is sent and waiting for its answer at the reset.
    proxy.freeze()
    const hit = Array.from({ length: 6 }, () => get(port, "/work?ms=0"))
    // Requests in flight that are not in a query at the reset: they write
    // their row after it.
    const bystanders = Array.from({ length: 6 }, () => get(port, "/work?ms=3000"))
    await sleep(1500)
    expect(await get(port, "/health/live")).toBe(200)
    proxy.reset()

    const hitStatuses = await Promise.all(hit)
    const bystanderStatuses = await Promise.all(bystanders)
    const after = await Promise.all(Array.from({ length: 6 }, () => get(port, "/work?ms=0")))
    const alive = service.child.exitCode === null
    note(
      `reset mid-query: hit ${JSON.stringify(countOf(hitStatuses))}, bystanders ${
        JSON.stringify(countOf(bystanderStatuses))
      }, after ${JSON.stringify(countOf(after))}, alive ${alive}`
    )
    expect(alive, service.output()).toBe(true)
    expect(service.output()).not.toMatch(/uncaughtException|defect/i)
    // The hit requests get an answer (their error), never a reset socket.
    for (const status of hitStatuses) expect([200, 500]).toContain(status)
    expect(hitStatuses.filter((status) => status === 500).length).toBeGreaterThan(0)
    expect(bystanderStatuses).toEqual(Array(6).fill(200))
    expect(after).toEqual(Array(6).fill(200))

    const sentAt = Date.now()
    service.child.kill("SIGTERM")
    const exit = await service.exited
    note(`reset mid-query: SIGTERM -> exit ${exit.code} in ${exit.at - sentAt} ms`)
    expect(exit.code, service.output()).toBe(0)
    expect(service.report().outcome).toBe("clean")
  })

  it("a frozen Postgres with requests waiting for it: SIGTERM exits within the budget, every release runs, the report names the database", async () => {
    const proxy = await proxyTo(5432)
    const service = startService({
      DATABASE_URL: pgUrl(proxy.port),
      REDIS_URL: "redis://127.0.0.1:6379",
      SHUTDOWN_TIMEOUT: "12 seconds",
      SHUTDOWN_DRAIN_TIMEOUT: "2 seconds"
    })
    const port = await service.listening
    expect(await get(port, "/work?ms=0")).toBe(200)

    proxy.freeze()
    // More than the pool's 10 connections: some wait in a query on the
    // frozen server, some for a new connection, the rest for a free one.
    const stuck = Array.from({ length: 14 }, () => get(port, "/work?ms=0"))
    await sleep(1000)
    const sentAt = Date.now()
    service.child.kill("SIGTERM")
    const exit = await service.exited
    const exitMs = exit.at - sentAt
    const statuses = await Promise.all(stuck)
    const report = service.report()
    const releases = report.releases.map((r) => `${r.name}:${r.outcome}`)
    note(
      `frozen postgres: exit ${exit.code} in ${exitMs} ms (budget 12000), outcome ${report.outcome}, releases ${
        JSON.stringify(releases)
      }, requests ${JSON.stringify(countOf(statuses))}`
    )
    const database = report.releases.find((r) => r.name.startsWith("database"))
    note(`frozen postgres: database release: ${JSON.stringify(database)}`)

    expect(report.outcome, service.output()).not.toBe("watchdog")
    expect(exitMs).toBeLessThan(11_000)
    expect(exit.code).toBe(1)
    for (const name of ["redis publisher", "subscription", "request log"]) {
      expect(report.releases.find((r) => r.name.startsWith(name))?.outcome, `${name} in ${JSON.stringify(releases)}`)
        .toBe("released")
    }
    // The database is what was stuck, and the report says so.
    expect(database?.outcome).toMatch(/failed|timedOut/)
    expect(database?.error ?? "").toMatch(/database \(postgres\)/)
  })
})

describe("Postgres faults under a small app on the library (test/integration/fixtures/pg-service.ts)", () => {
  it("an untracked pool.query on a Postgres that froze: the cancel cannot reach it, the connection is closed by force, no crash", async () => {
    // The force path with a client lent by pool.query: pg's own query
    // callback releases it when the destroyed socket fails the query; the
    // release must not have released it first (pg would throw "Release
    // called on client which has already been released", an uncaught
    // exception that turned a degraded shutdown into a defect).
    const proxy = await proxyTo(5432)
    const fixture = start("pg-service.ts", {
      PG_MODE: "stuck",
      PG_PORT: String(proxy.port),
      PG_APP: uniqueName("it_frozen_stuck"),
      PG_TABLE: "unused",
      PG_RELEASE_TIMEOUT: "2 seconds",
      PG_CANCEL_GRACE: "500 millis",
      SHUTDOWN_TIMEOUT: "6 seconds"
    })
    cleanups.push(() => fixture.cleanup())
    await fixture.waitFor("query-started", 30_000)
    proxy.freeze()
    fixture.kill("SIGTERM")
    const exit = await fixture.exited
    const report = fixture.report()
    expect(exit.code, fixture.output()).toBe(1)
    expect(fixture.output()).not.toContain("uncaughtException")
    expect(report.outcome, fixture.output()).toBe("degraded")
    const release = report.releases.find((r) => r.name === "postgres")
    expect(release?.outcome).toBe("failed")
    expect(release?.error).toContain("closed 1 checked-out connection(s) by force")
    // the query failed on the client's side (the socket closed under it)
    expect(fixture.output()).toMatch(/MARK query-failed-/)
  })

  it("tracked work waiting for a connection of a full pool is cut at the drain deadline; the releases run; exit before the budget", async () => {
    const fixture = start("pg-service.ts", {
      PG_MODE: "waiting",
      PG_APP: uniqueName("it_waiting"),
      PG_TABLE: "unused",
      PG_MAX: "1",
      PG_RELEASE_TIMEOUT: "2 seconds",
      SHUTDOWN_TIMEOUT: "8 seconds",
      SHUTDOWN_DRAIN_TIMEOUT: "1 second"
    })
    cleanups.push(() => fixture.cleanup())
    await fixture.waitFor("query-waiting", 30_000)
    const sentAt = fixture.kill("SIGTERM")
    const exit = await fixture.exited
    const report = fixture.report()
    const exitMs = exit.at - sentAt
    note(
      `pg-service waiting for a connection: exit ${exit.code} in ${exitMs} ms (budget 8000), outcome ${report.outcome}, cut ${
        JSON.stringify(report.cut.map((c) => c.label))
      }, releases ${JSON.stringify(report.releases.map((r) => `${r.name}:${r.outcome}`))}`
    )
    expect(fixture.has("query-interrupted"), fixture.output()).toBe(true)
    expect(report.outcome).not.toBe("watchdog")
    expect(report.cut.map((c) => c.label)).toEqual(["waits for a connection"])
    expect(report.releases.map((r) => r.name)).toEqual(["postgres", "events"])
    expect(report.releases.find((r) => r.name === "events")?.outcome).toBe("released")
    // The held connection is closed by force at the end of the pool's slice, and said so.
    expect(report.releases.find((r) => r.name === "postgres")?.error ?? "").toContain(
      "closed 1 checked-out connection(s) by force"
    )
    expect(exitMs).toBeLessThan(6_000)
  })
})

describe("start-up against an endpoint that never becomes the database", () => {
  const redisRetry = /redis publisher: cannot connect to Redis \(attempt \d+\): .*retrying/
  const postgresRetry =
    /database \(postgres\): cannot connect to Postgres at 127\.0\.0\.1:\d+ \(attempt \d+\): .*retrying/

  /**
   * Starts the service, waits for its first retry line (or 30 s of
   * silence), then for its exit (at most 20 s more). Times are from the
   * first retry line, so a slow start-up of the rest does not count.
   */
  const startFailing = async (env: Record<string, string>, retryLine: RegExp) => {
    const service = startService(env)
    const firstRetryAt = await waitForLine(service, retryLine, 30_000)
    const exit = await Promise.race([service.exited, sleep(20_000).then(() => undefined)])
    const output = service.output()
    const retries = output.split("\n").filter((line) => retryLine.test(line)).length
    return { output, retries, exit, firstRetryAt }
  }

  /**
   * {@link startFailing}, then what must hold: at least two retry lines, and
   * exit 1 with `reason` in the output within the 3 s connect timeout (plus
   * 3 s) of the first retry. `label` names the measurement.
   */
  const expectStartFails = async (
    label: string,
    env: Record<string, string>,
    retryLine: RegExp,
    reason: RegExp
  ) => {
    const { exit, firstRetryAt, output, retries } = await startFailing(env, retryLine)
    const failMs = exit === undefined || firstRetryAt === undefined ? undefined : exit.at - firstRetryAt
    note(
      `${label}: ${retries} retry lines, exit ${exit?.code ?? "none (still starting after 20 s)"}, ${
        failMs ?? "-"
      } ms after the first retry`
    )
    expect(retries, output).toBeGreaterThanOrEqual(2)
    expect(exit, output).toBeDefined()
    expect(exit!.code).toBe(1)
    expect(output).toMatch(reason)
    expect(failMs).toBeLessThan(3_000 + 3_000)
  }

  it("REDIS_URL at a closed port: each retry is logged, start-up fails after the connect timeout with the reason", async () => {
    await expectStartFails(
      "closed redis port",
      { ...realDatabase, REDIS_URL: `redis://127.0.0.1:${await closedPort()}`, REDIS_CONNECT_TIMEOUT: "3 seconds" },
      redisRetry,
      /redis publisher: cannot connect to Redis: no connection within 3000 ms \(\d+ failed attempts; last error: connect ECONNREFUSED/
    )
  })

  it("DATABASE_URL at a port that is not Postgres: each retry is logged, start-up fails after the connect timeout", async () => {
    await expectStartFails(
      "not-postgres port",
      { DATABASE_URL: pgUrl(await notPostgres()), DATABASE_CONNECT_TIMEOUT: "3 seconds" },
      postgresRetry,
      /database \(postgres\): cannot connect to Postgres at 127\.0\.0\.1:\d+ within 3000 ms \(\d+ attempts; last error: /
    )
  })

  it("DATABASE_URL at a server that accepts and never answers: start-up fails after the connect timeout", async () => {
    const proxy = await proxyTo(5432)
    proxy.freeze()
    const startedAt = Date.now()
    const service = startService({ DATABASE_URL: pgUrl(proxy.port), DATABASE_CONNECT_TIMEOUT: "3 seconds" })
    const exit = await Promise.race([service.exited, sleep(30_000).then(() => undefined)])
    const output = service.output()
    note(
      `frozen postgres at start-up: exit ${exit?.code ?? "none (still starting after 30 s)"} after ${
        exit === undefined ? "-" : exit.at - startedAt
      } ms from spawn, ${proxy.accepted()} connection attempts`
    )
    expect(exit, output).toBeDefined()
    expect(exit!.code).toBe(1)
    expect(output).toMatch(/database \(postgres\): cannot connect to Postgres at 127\.0\.0\.1:\d+ within 3000 ms/)
  })

  it.each(
    [
      ["REDIS_URL at a closed port", "redis"],
      ["DATABASE_URL at a port that is not Postgres", "not-postgres"],
      ["DATABASE_URL at a server that accepts and never answers", "frozen-postgres"]
    ] as const
  )("%s: SIGTERM during the start-up stops it at once", async (_title, kind) => {
    let service: Service
    let waiting: boolean
    if (kind === "frozen-postgres") {
      const proxy = await proxyTo(5432)
      proxy.freeze()
      service = startService({ DATABASE_URL: pgUrl(proxy.port), DATABASE_CONNECT_TIMEOUT: "60 seconds" })
      // Waiting on its first connection: accepted by the proxy, never answered.
      const deadline = Date.now() + 30_000
      while (proxy.accepted() === 0 && Date.now() < deadline) await sleep(25)
      await sleep(500)
      waiting = proxy.accepted() > 0
    } else {
      const env = kind === "redis"
        ? { ...realDatabase, REDIS_URL: `redis://127.0.0.1:${await closedPort()}`, REDIS_CONNECT_TIMEOUT: "60 seconds" }
        : { DATABASE_URL: pgUrl(await notPostgres()), DATABASE_CONNECT_TIMEOUT: "60 seconds" }
      service = startService(env)
      // Before the fix there is no retry line: the signal comes after 30 s of silence.
      waiting = (await waitForLine(service, kind === "redis" ? redisRetry : postgresRetry, 30_000)) !== undefined
    }
    const sentAt = Date.now()
    service.child.kill("SIGTERM")
    const exit = await Promise.race([service.exited, sleep(40_000).then(() => undefined)])
    note(
      `${kind}: SIGTERM during start-up (retrying or connecting: ${waiting}): exit ${exit?.code ?? "none"} in ${
        exit === undefined ? ">40000" : exit.at - sentAt
      } ms`
    )
    expect(waiting, service.output()).toBe(true)
    expect(exit, service.output()).toBeDefined()
    expect(exit!.at - sentAt).toBeLessThan(2_000)
  })
})
