import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Fiber } from "effect"
import { TestClock } from "effect/testing"
import { WebSocket as Client, WebSocketServer } from "ws"
import * as WebSocket from "../../src/adapters/WebSocket.ts"
import { Graceful, Lifecycle, type Report } from "../../src/index.ts"
import * as GracefulTest from "../../src/testing.ts"

const opened = (client: Client) =>
  Effect.promise(() =>
    new Promise<void>((resolve, reject) => {
      client.once("open", () => resolve())
      client.once("error", reject)
    })
  )

describe("WebSocket.guard (a ws server on its own port)", () => {
  it.effect("close 1001 at Closing, upgrades refused with 503 while draining, the drain awaits the handshake", () =>
    Effect.gen(function*() {
      const ready = yield* Deferred.make<{ port: number; lifecycle: Lifecycle.LifecycleService }>()
      const fiber: Fiber.Fiber<Report.ShutdownReport, unknown> = yield* Effect.gen(function*() {
        const wss = yield* Effect.callback<WebSocketServer>((resume) => {
          const server: WebSocketServer = new WebSocketServer(
            { port: 0, host: "127.0.0.1" },
            () => resume(Effect.succeed(server))
          )
        })
        wss.on("connection", (ws) => ws.on("message", (data) => ws.send(data)))
        yield* WebSocket.guard(wss)
        const address = wss.address()
        yield* Deferred.succeed(ready, {
          port: typeof address === "object" && address !== null ? address.port : 0,
          lifecycle: yield* Lifecycle.Lifecycle
        })
        return yield* Effect.never
      }).pipe(Graceful.run({ timeout: "20 seconds", delay: "2 seconds" }), Effect.forkChild)
      const { port, lifecycle } = yield* Deferred.await(ready)

      const client = new Client(`ws://127.0.0.1:${port}`)
      yield* opened(client)
      const closed = new Promise<{ code: number; reason: string }>((resolve) =>
        client.once("close", (code, reason) => resolve({ code, reason: String(reason) }))
      )
      yield* GracefulTest.send("SIGTERM")
      yield* lifecycle.awaitPhase("Draining")
      const refused = yield* Effect.promise(() =>
        new Promise<number | string>((resolve) => {
          const late = new Client(`ws://127.0.0.1:${port}`)
          late.once("unexpected-response", (_req, res) => resolve(res.statusCode ?? 0))
          late.once("open", () => resolve("opened"))
          late.once("error", (e) => resolve(String(e)))
        })
      )
      expect(refused).toBe(503)
      yield* TestClock.adjust("2 seconds")
      expect(yield* Effect.promise(() => closed)).toEqual({ code: 1001, reason: "server shutting down" })
      const report = yield* Fiber.join(fiber)
      expect(report.inFlight.atDrainStart).toBe(1)
      expect(report.cut).toEqual([])
      expect(report.exitCode).toBe(0)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("a client that never answers the close handshake is terminated at the drain deadline and reported", () =>
    Effect.gen(function*() {
      const ready = yield* Deferred.make<number>()
      const fiber: Fiber.Fiber<Report.ShutdownReport, unknown> = yield* Effect.gen(function*() {
        const wss = yield* Effect.callback<WebSocketServer>((resume) => {
          const server: WebSocketServer = new WebSocketServer(
            { port: 0, host: "127.0.0.1" },
            () => resume(Effect.succeed(server))
          )
        })
        yield* WebSocket.guard(wss)
        const address = wss.address()
        yield* Deferred.succeed(ready, typeof address === "object" && address !== null ? address.port : 0)
        return yield* Effect.never
      }).pipe(Graceful.run({ timeout: "20 seconds", drainTimeout: "3 seconds" }), Effect.forkChild)
      const port = yield* Deferred.await(ready)
      const client = new Client(`ws://127.0.0.1:${port}/chat`)
      yield* opened(client)
      // A peer that ignores the close frame: pause reading so no close is sent back.
      client.pause()
      yield* GracefulTest.send("SIGTERM")
      yield* TestClock.adjust("3 seconds")
      const report = yield* Fiber.join(fiber)
      expect(report.cut.map((c) => `${c.kind} ${c.label}`)).toEqual(["websocket GET /chat"])
      expect(report.exitCode).toBe(1)
      client.terminate()
    }).pipe(Effect.provide(GracefulTest.layer)))
})
