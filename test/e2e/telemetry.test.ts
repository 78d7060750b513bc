/**
 * Telemetry leaves the process before it exits: a real child process with
 * the OpenTelemetry SDK's batching span processor and periodic metric reader,
 * exporting OTLP/HTTP to a collector in this test process, sent a real
 * SIGTERM.
 */
import { createServer, type IncomingMessage, type Server } from "node:http"
import { afterEach, describe, expect, it } from "vitest"
import { expectShutdownSpans } from "../support/spans.ts"
import { type Fixture, start } from "./harness.ts"

interface Received {
  readonly path: string
  readonly at: number
  readonly body: unknown
}

interface Collector {
  readonly endpoint: string
  readonly received: Array<Received>
  readonly close: () => void
}

const readBody = (request: IncomingMessage) =>
  new Promise<string>((resolve) => {
    let text = ""
    request.setEncoding("utf8")
    request.on("data", (chunk: string) => (text += chunk))
    request.on("end", () => resolve(text))
  })

/** An OTLP/HTTP (JSON) collector on an ephemeral port; `answer: false` accepts and never answers. */
const collector = (answer = true): Promise<Collector> =>
  new Promise((resolve) => {
    const received: Array<Received> = []
    const server: Server = createServer((request, response) => {
      void readBody(request).then((text) => {
        received.push({ path: request.url ?? "", at: Date.now(), body: JSON.parse(text) })
        if (!answer) return
        response.writeHead(200, { "content-type": "application/json" })
        response.end("{}")
      })
    })
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number }
      resolve({
        endpoint: `http://127.0.0.1:${port}`,
        received,
        close: () => {
          server.closeAllConnections()
          server.close()
        }
      })
    })
  })

interface OtlpSpan {
  readonly name: string
  readonly spanId: string
  readonly parentSpanId?: string
}

const spansOf = (received: ReadonlyArray<Received>): Array<OtlpSpan> =>
  received.filter((r) => r.path === "/v1/traces").flatMap((r) =>
    (r.body as { resourceSpans: Array<{ scopeSpans: Array<{ spans: Array<OtlpSpan> }> }> }).resourceSpans
      .flatMap((rs) => rs.scopeSpans.flatMap((ss) => ss.spans))
  )

const metricNamesOf = (received: ReadonlyArray<Received>): Array<string> =>
  received.filter((r) => r.path === "/v1/metrics").flatMap((r) =>
    (r.body as { resourceMetrics: Array<{ scopeMetrics: Array<{ metrics: Array<{ name: string }> }> }> })
      .resourceMetrics.flatMap((rm) => rm.scopeMetrics.flatMap((sm) => sm.metrics.map((m) => m.name)))
  )

let running: Array<Fixture> = []
let collectors: Array<Collector> = []
afterEach(() => {
  for (const fixture of running) fixture.cleanup()
  for (const c of collectors) c.close()
  running = []
  collectors = []
})

describe("telemetry is exported before the process exits", () => {
  it("SIGTERM: the shutdown's spans and metrics reach an OTLP collector before exit", async () => {
    const otlp = await collector()
    collectors.push(otlp)
    const service = start({ OTLP_ENDPOINT: otlp.endpoint }, { fixture: "telemetry.ts" })
    running.push(service)
    await service.waitFor("ready")
    service.kill("SIGTERM")
    const exit = await service.exited
    expect(exit.code, service.output()).toBe(0)

    const spans = spansOf(otlp.received)
    const names = spans.map((s) => s.name)
    expectShutdownSpans(names)
    const shutdown = spans.find((s) => s.name === "graceful.shutdown")!
    expect(spans.find((s) => s.name === "graceful.releasing")?.parentSpanId).toBe(shutdown.spanId)
    const metrics = metricNamesOf(otlp.received)
    for (const name of ["graceful_shutdown_duration_ms", "graceful_drain_duration_ms", "graceful_in_flight"]) {
      expect(metrics, metrics.join(", ")).toContain(name)
    }
    // Everything arrived while the process was alive.
    for (const r of otlp.received) expect(r.at).toBeLessThanOrEqual(exit.at)
  })

  it("a collector that never answers holds the exit no longer than the budget", async () => {
    const otlp = await collector(false)
    collectors.push(otlp)
    const service = start({ OTLP_ENDPOINT: otlp.endpoint, SHUTDOWN_TIMEOUT: "2 seconds" }, { fixture: "telemetry.ts" })
    running.push(service)
    await service.waitFor("ready")
    const sent = service.kill("SIGTERM")
    const exit = await service.exited
    expect(exit.code, service.output()).toBe(0)
    // The SDK's own shutdown timeout is 30 s in the fixture: the budget is what ends the wait.
    expect(exit.at - sent).toBeGreaterThanOrEqual(1900)
    expect(exit.at - sent).toBeLessThan(3000)
    expect(service.output()).toContain("telemetry: the export did not finish")
    // The export was attempted: the collector saw the request it never answered.
    expect(otlp.received.map((r) => r.path)).toContain("/v1/traces")
  })
})
