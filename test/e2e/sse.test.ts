/**
 * Server-sent events across shutdown (docs/design.md#wire-behaviours, 15), against
 * real processes over real sockets:
 *
 * - the example service's `GET /events` (the Effect helper, `Sse.response`)
 *   and a plain Express server (`Sse.open`): a stream open at SIGTERM keeps
 *   flowing through the lame duck, then gets a last event with `retry:` and
 *   a complete chunked terminator, and the connection closes with a FIN, not
 *   a reset; a new stream while draining gets 503 with `Retry-After`;
 * - real `EventSource` clients (the `eventsource` package) behind a
 *   connection-level failover proxy, across two restarts: every event
 *   arrives exactly once and in order, each client resumes on the other
 *   instance with `Last-Event-ID`, and no stream breaks.
 */
import { EventSource } from "eventsource"
import type { ChildProcess } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import * as Http from "node:http"
import * as Net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import type { Report } from "../../src/index.ts"
import { spawnListening, untilOutput } from "../support/listening.ts"
import { bunBin, type Fixture, start } from "./harness.ts"
import { RawConnection, sleep } from "./wire.ts"

/** The example service's entries: main.ts on this Node, bun.ts under Bun's binary. */
const entries = {
  Node: { file: join(import.meta.dirname, "..", "..", "examples", "service", "main.ts"), command: process.execPath },
  Bun: { file: join(import.meta.dirname, "..", "..", "examples", "service", "bun.ts"), command: bunBin }
} as const

interface Service {
  readonly child: ChildProcess
  readonly port: number
  readonly exited: Promise<{ readonly code: number | null; readonly signal: NodeJS.Signals | null }>
  readonly output: () => string
  readonly report: () => Report.ShutdownReport
}

const cleanups: Array<() => void> = []
afterEach(() => {
  for (const cleanup of cleanups.splice(0)) cleanup()
})

/** The example service on `port` (0: any), resolved once it listens. */
const boot = async (
  env: Record<string, string> = {},
  port = 0,
  runtime: keyof typeof entries = "Node"
): Promise<Service> => {
  const dir = mkdtempSync(join(tmpdir(), "effect-graceful-sse-"))
  const started = spawnListening(
    entries[runtime].file,
    {
      PORT: String(port),
      HOST: "127.0.0.1",
      LOG_FILE: join(dir, "requests.jsonl"),
      SHUTDOWN_REPORT_FILE: join(dir, "report.json"),
      DATABASE_URL: "",
      REDIS_URL: "",
      PGLITE_DIR: "",
      KUBERNETES_SERVICE_HOST: "",
      ...env
    },
    [],
    entries[runtime].command
  )
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }))
  const { child, port: bound, exited, output } = await started
  cleanups.push(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
  })
  return {
    child,
    port: bound,
    exited,
    output,
    report: () => JSON.parse(readFileSync(join(dir, "report.json"), "utf8")) as Report.ShutdownReport
  }
}

interface Parsed {
  readonly ids: ReadonlyArray<number>
  readonly blocks: ReadonlyArray<string>
}

/** The event ids of an event-stream body, and its blocks (events, comments) in order. */
const parse = (body: string): Parsed => {
  const blocks = body.split("\n\n").filter((block) => block !== "")
  const ids = blocks.flatMap((block) => {
    const match = /^id: (\d+)$/m.exec(block)
    return match ? [Number(match[1])] : []
  })
  return { ids, blocks }
}

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i)

/** Opens `/events` on a raw connection; resolves with the whole response once the server ends it. */
const openRaw = async (port: number, headers: Record<string, string> = {}) => {
  const connection = await RawConnection.open(port)
  cleanups.push(() => connection.destroy())
  connection.send("/events", { accept: "text/event-stream", ...headers })
  return { connection, response: connection.read() }
}

/** The first `count` event ids of a stream (then the client goes away). */
const firstIds = (port: number, count: number, headers: Record<string, string>) =>
  new Promise<ReadonlyArray<number>>((resolve, reject) => {
    const request = Http.get({ host: "127.0.0.1", port, path: "/events", agent: false, headers }, (response) => {
      let text = ""
      response.setEncoding("utf8")
      response.on("data", (chunk: string) => {
        text += chunk
        const { ids } = parse(text)
        if (ids.length >= count) {
          request.destroy()
          resolve(ids.slice(0, count))
        }
      })
    })
    request.on("error", reject)
  })

/** Shared by the Effect service and the Express fixture: the stream open at SIGTERM, and one opened while draining. */
const acrossShutdown = async (options: {
  readonly port: number
  readonly sigterm: () => void
  /** Resolves once the service says it is Draining (a line it prints). */
  readonly draining: () => Promise<unknown>
  readonly retryMs: number
}) => {
  const open = await openRaw(options.port)
  // Not a request start: the stream is open (openRaw resolved on its
  // headers); 400 ms lets events flow before the signal (the behaviour under
  // test: events keep flowing through the lame duck).
  await sleep(400) // the behaviour under test: events flow for a while before the signal
  options.sigterm()
  await options.draining()

  // Draining: a new stream is refused, before any event.
  const late = await RawConnection.open(options.port)
  cleanups.push(() => late.destroy())
  const refused = await late.request("/events", { accept: "text/event-stream" })
  expect(refused.status).toBe(503)
  expect(refused.headers["retry-after"]).toBe("1")
  expect(refused.headers.connection).toBe("close")

  // The open stream flowed through the lame duck, then ended cleanly at Closing.
  const { status, headers, body } = await open.response
  expect(status).toBe(200)
  expect(headers["content-type"]).toContain("text/event-stream")
  expect(headers["transfer-encoding"]).toBe("chunked")
  const { ids, blocks } = parse(body)
  expect(blocks[0]).toBe(`retry: ${options.retryMs}`)
  expect(ids.length).toBeGreaterThanOrEqual(8)
  expect(ids).toEqual(range(1, ids.length))
  expect(blocks.at(-1)).toMatch(new RegExp(`^: server shutting down, reconnect\nretry: ${options.retryMs}$`))
  const closed = await open.connection.closed
  expect(closed.reset).toBe(false)
  return ids
}

describe("server-sent events at shutdown (wire behaviour 15)", () => {
  it.each(["Node", "Bun"] as const)(
    "Effect on %s (example service GET /events): last event with retry:, chunked terminator, FIN; 503 + Retry-After while draining",
    async (runtime) => {
      const service = await boot({ SHUTDOWN_DELAY: "1 second" }, 0, runtime)

      // Last-Event-ID is the resume point.
      expect(await firstIds(service.port, 3, { "last-event-id": "41" })).toEqual([42, 43, 44])
      expect(await firstIds(service.port, 2, { "last-event-id": "not a number" })).toEqual([1, 2])

      await acrossShutdown({
        port: service.port,
        sigterm: () => service.child.kill("SIGTERM"),
        draining: () => untilOutput(service, /phase: Draining/),
        retryMs: 500
      })
      expect(await service.exited, service.output()).toEqual({ code: 0, signal: null })
      const report = service.report()
      expect(report.outcome).toBe("clean")
      expect(report.cut).toEqual([])
      expect(report.hooks.map((hook) => hook.name)).toContain("sse streams: last event")
      // The stream did not hold the drain: Closing took far less than the drain timeout.
      const closing = report.phases.find((phase) => phase.phase === "closing")
      expect(closing?.durationMs).toBeLessThan(5_000)
    },
    60_000
  )

  it("plain Node (Express + Sse.open): the same on the wire", async () => {
    const fixture: Fixture = start({ SHUTDOWN_DELAY: "1 second" }, { fixture: "sse-plain.ts" })
    cleanups.push(() => fixture.cleanup())
    const port = await fixture.waitFor("port")
    await acrossShutdown({
      port,
      sigterm: () => fixture.kill("SIGTERM"),
      draining: () => fixture.waitFor("draining"),
      retryMs: 300
    })
    const exited = await fixture.exited
    expect(exited.code, fixture.output()).toBe(0)
    expect(fixture.report().outcome).toBe("clean")
    expect(fixture.report().cut).toEqual([])
  }, 60_000)
})

/**
 * A connection-level balancer: each client connection goes to the first
 * backend that accepts it (a refused connect moves on to the next, as
 * HAProxy's redispatch does). It counts backend connections that ended with
 * a reset rather than a FIN.
 */
const failoverProxy = async (backends: ReadonlyArray<number>) => {
  let resets = 0
  const server = Net.createServer({ allowHalfOpen: true }, (client) => {
    client.on("error", () => client.destroy())
    const attempt = (index: number) => {
      const port = backends[index]
      if (port === undefined) return client.destroy()
      const upstream = Net.connect({ port, host: "127.0.0.1", allowHalfOpen: true })
      let connected = false
      upstream.once("connect", () => {
        connected = true
        client.pipe(upstream)
        upstream.pipe(client)
      })
      upstream.on("error", (error: NodeJS.ErrnoException) => {
        if (!connected) return attempt(index + 1)
        if (error.code === "ECONNRESET" || error.code === "EPIPE") resets++
        client.destroy()
      })
    }
    attempt(0)
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  cleanups.push(() => server.close())
  return { port: (server.address() as Net.AddressInfo).port, resets: () => resets }
}

interface Client {
  readonly source: EventSource
  readonly ids: Array<number>
  opens: number
  /** Error events that carry a message: a failed connect or a broken stream (a clean end carries none). */
  readonly failures: Array<string>
}

const connectClient = (port: number): Client => {
  const source = new EventSource(`http://127.0.0.1:${port}/events`)
  const client: Client = { source, ids: [], opens: 0, failures: [] }
  source.onopen = () => client.opens++
  source.onmessage = (event) => client.ids.push(Number(event.lastEventId))
  source.onerror = (event) => {
    if (event.message !== undefined) client.failures.push(event.message)
  }
  cleanups.push(() => source.close())
  return client
}

const waitUntil = async (condition: () => boolean, timeoutMs: number, what: string) => {
  const deadline = Date.now() + timeoutMs
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(20) // polling interval of a bounded wait on a fact
  }
}

describe("EventSource clients across restarts", () => {
  it(
    "20 streams move A → B → A': every event exactly once and in order, resumed with Last-Event-ID, none broken",
    async () => {
      const env = { SHUTDOWN_DELAY: "200 millis" }
      const [a, b] = await Promise.all([boot(env), boot(env)])
      const proxy = await failoverProxy([a.port, b.port])
      const clients = Array.from({ length: 20 }, () => connectClient(proxy.port))
      await waitUntil(() => clients.every((client) => client.ids.length >= 5), 15_000, "first events")

      // Restart A: its streams move to B; its replacement takes A's port.
      a.child.kill("SIGTERM")
      expect(await a.exited, a.output()).toEqual({ code: 0, signal: null })
      await waitUntil(() => clients.every((client) => client.opens === 2), 10_000, "reconnection to B")
      const a2 = await boot(env, a.port)

      // Restart B: the streams move to A'.
      const beforeB = Math.max(...clients.map((client) => client.ids.length))
      await waitUntil(() => clients.every((client) => client.ids.length >= beforeB + 3), 10_000, "events from B")
      b.child.kill("SIGTERM")
      expect(await b.exited, b.output()).toEqual({ code: 0, signal: null })
      await waitUntil(() => clients.every((client) => client.opens === 3), 10_000, "reconnection to A'")
      const beforeEnd = Math.max(...clients.map((client) => client.ids.length))
      await waitUntil(() => clients.every((client) => client.ids.length >= beforeEnd + 3), 10_000, "events from A'")
      for (const client of clients) client.source.close()

      for (const client of clients) {
        expect(client.ids).toEqual(range(1, client.ids.length))
        expect(client.failures).toEqual([])
        expect(client.opens).toBe(3)
      }
      expect(proxy.resets()).toBe(0)
      for (const service of [a, b]) {
        expect(service.report().outcome).toBe("clean")
        expect(service.report().cut).toEqual([])
      }
      a2.child.kill("SIGTERM")
      expect((await a2.exited).code).toBe(0)
    },
    120_000
  )
})
