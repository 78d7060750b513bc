/**
 * HTTP/2, cleartext (h2c) and over TLS: at Closing every session gets GOAWAY,
 * the stream in flight finishes, and no new stream is accepted.
 */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Fiber } from "effect"
import { TestClock } from "effect/testing"
import { readFileSync } from "node:fs"
import * as NodeHttp2 from "node:http2"
import { join } from "node:path"
import { Graceful, Http, type Report } from "../src/index.ts"
import * as GracefulTest from "../src/testing.ts"

const tls = {
  key: readFileSync(join(import.meta.dirname, "fixtures", "localhost-key.pem")),
  cert: readFileSync(join(import.meta.dirname, "fixtures", "localhost-cert.pem"))
}

const cases = [
  ["h2c", () => NodeHttp2.createServer(), "http"],
  ["TLS", () => NodeHttp2.createSecureServer(tls), "https"]
] as const

describe("Http.guard on HTTP/2", () => {
  for (const [name, makeServer, scheme] of cases) {
    it.effect(`${name}: GOAWAY at Closing, the stream in flight finishes`, () =>
      Effect.gen(function*() {
        const listening = yield* Deferred.make<number>()
        const arrived = yield* Deferred.make<NodeHttp2.Http2ServerResponse>()
        const fiber: Fiber.Fiber<Report.ShutdownReport, unknown> = yield* Effect.gen(function*() {
          const { port } = yield* Http.serveNode(() => {
            const server = makeServer()
            server.on("request", (_req, res) => Deferred.doneUnsafe(arrived, Effect.succeed(res)))
            return server
          }, { port: 0, host: "127.0.0.1", idleGrace: 0 })
          yield* Deferred.succeed(listening, port)
          return yield* Effect.never
        }).pipe(Graceful.run({ timeout: "20 seconds", drainTimeout: "10 seconds" }), Effect.forkChild)
        const port = yield* Deferred.await(listening)

        const session = NodeHttp2.connect(`${scheme}://127.0.0.1:${port}`, { ca: tls.cert })
        session.on("error", () => {})
        const goaway = new Promise<void>((resolve) => session.once("goaway", () => resolve()))
        const stream = session.request({ ":path": "/slow" })
        const body = new Promise<{ status: number; body: string }>((resolve, reject) => {
          let status = 0
          let text = ""
          stream.on("response", (headers) => {
            status = Number(headers[":status"])
          })
          stream.setEncoding("utf8")
          stream.on("data", (chunk: string) => {
            text += chunk
          })
          stream.on("end", () => resolve({ status, body: text }))
          stream.on("error", reject)
        })
        const response = yield* Deferred.await(arrived)

        yield* GracefulTest.send("SIGTERM")
        yield* Effect.promise(() => goaway)
        yield* TestClock.adjust("1 second")
        expect(fiber.pollUnsafe()).toBeUndefined()
        response.end("finished")
        expect(yield* Effect.promise(() => body)).toEqual({ status: 200, body: "finished" })
        const report = yield* Fiber.join(fiber)
        expect(report.inFlight).toEqual({ atDrainStart: 1, atDrainEnd: 0 })
        expect(report.exitCode).toBe(0)
        session.destroy()
      }).pipe(Effect.provide(GracefulTest.layer)))
  }
})
