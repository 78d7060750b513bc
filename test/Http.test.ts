/**
 * The HTTP drain logic, deterministically: an in-process guarded server on a
 * real loopback socket, a real raw client, and TestClock for every deadline.
 * Nothing here sleeps.
 */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, type Scope } from "effect"
import { TestClock } from "effect/testing"
import * as NodeHttp from "node:http"
import type { TLSSocket } from "node:tls"
import { Graceful, Health, Http, Lifecycle, type Report, Resource } from "../src/index.ts"
import * as GracefulTest from "../src/testing.ts"
import { RawConnection } from "./e2e/wire.ts"

interface Started {
  readonly port: number
  readonly lifecycle: Lifecycle.LifecycleService
  readonly fiber: Fiber.Fiber<Report.ShutdownReport, unknown>
}

/** Serves `handler` on a guarded server under Graceful.run; resolves once listening. */
const serve = (
  handler: NodeHttp.RequestListener,
  options: Graceful.RunOptions = {},
  setup: Effect.Effect<void, never, Health.Health | Scope.Scope> = Effect.void,
  onServer: (server: NodeHttp.Server) => void = () => {},
  guardOptions: Http.GuardOptions = { idleGrace: 0 }
) =>
  Effect.gen(function*() {
    const listening = yield* Deferred.make<number>()
    const lifecycle = yield* Deferred.make<Lifecycle.LifecycleService>()
    const fiber = yield* Effect.gen(function*() {
      yield* setup
      const { port } = yield* Http.serveNode(() => {
        const server = NodeHttp.createServer(handler)
        onServer(server)
        return server
      }, {
        port: 0,
        host: "127.0.0.1",
        ...guardOptions
      })
      yield* Deferred.succeed(lifecycle, yield* Lifecycle.Lifecycle)
      yield* Deferred.succeed(listening, port)
      return yield* Effect.never
    }).pipe(Graceful.run({ timeout: "20 seconds", drainTimeout: "10 seconds", ...options }), Effect.forkChild)
    const port = yield* Deferred.await(listening)
    return { port, fiber, lifecycle: yield* Deferred.await(lifecycle) } as Started
  })

const connect = (port: number) => Effect.promise(() => RawConnection.open(port))
/** A few turns of the event loop (no time passes on any clock). */
const turns = (n: number) =>
  Effect.promise(() =>
    new Promise<void>((resolve) => {
      const turn = (left: number) => (left === 0 ? resolve() : setImmediate(() => turn(left - 1)))
      turn(n)
    })
  )
const read = (connection: RawConnection) => Effect.promise(() => connection.read())

describe("Http.guard", () => {
  it.effect("the drain waits for a request in flight; its response says Connection: close", () =>
    Effect.gen(function*() {
      const arrived = yield* Deferred.make<NodeHttp.ServerResponse>()
      const { port, fiber } = yield* serve((_req, res) => Deferred.doneUnsafe(arrived, Effect.succeed(res)))
      const connection = yield* connect(port)
      connection.send("/slow")
      const response = yield* Deferred.await(arrived)
      yield* GracefulTest.send("SIGTERM")
      yield* TestClock.adjust("5 seconds")
      expect(fiber.pollUnsafe()).toBeUndefined()
      response.end("done")
      const answer = yield* read(connection)
      expect(answer.status).toBe(200)
      expect(answer.body).toBe("done")
      expect(answer.headers.connection).toBe("close")
      const closed = yield* Effect.promise(() => connection.closed)
      expect(closed.reset).toBe(false)
      const report = yield* Fiber.join(fiber)
      expect(report.inFlight).toEqual({ atDrainStart: 1, atDrainEnd: 0 })
      expect(report.cut).toEqual([])
      expect(report.exitCode).toBe(0)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("a request still in flight at the drain deadline is answered 503 and reported", () =>
    Effect.gen(function*() {
      const arrived = yield* Deferred.make<void>()
      const { port, fiber } = yield* serve(
        (_req, res) => {
          res.setHeader("x-app", "was here")
          Deferred.doneUnsafe(arrived, Effect.void)
        },
        { drainTimeout: "3 seconds" }
      )
      const connection = yield* connect(port)
      connection.send("/hang?id=1")
      yield* Deferred.await(arrived)
      yield* TestClock.adjust("1 second")
      yield* GracefulTest.send("SIGTERM")
      yield* TestClock.adjust("3 seconds")
      const answer = yield* read(connection)
      expect(answer.status).toBe(503)
      expect(answer.headers.connection).toBe("close")
      expect(answer.headers["x-app"]).toBeUndefined()
      const report = yield* Fiber.join(fiber)
      expect(report.cut).toEqual([{ kind: "request", label: "GET /hang", ageMs: 4000 }])
      expect(report.exitCode).toBe(1)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("readiness: 200 when Ready and checks pass, 503 naming a failing or hung check, 503 while draining", () =>
    Effect.gen(function*() {
      let healthy = true
      const cacheProbed = yield* Deferred.make<void>()
      const { port, fiber, lifecycle } = yield* serve(
        (_req, res) => res.end("app"),
        { delay: "2 seconds" },
        Effect.gen(function*() {
          yield* Health.addCheck(
            "database",
            Effect.suspend(() => healthy ? Effect.void : Effect.fail("connection refused"))
          )
          yield* Health.addCheck(
            "cache",
            Effect.suspend(() =>
              healthy ? Effect.void : Deferred.succeed(cacheProbed, undefined).pipe(Effect.andThen(Effect.never))
            ),
            { timeout: "300 millis" }
          )
        })
      )
      const probe = (path: string) => Effect.flatMap(connect(port), (c) => Effect.promise(() => c.request(path)))

      const ok = yield* probe("/health/ready")
      expect(ok.status).toBe(200)
      expect(JSON.parse(ok.body)).toMatchObject({
        status: "ready",
        checks: [{ name: "database", status: "pass" }, { name: "cache", status: "pass" }]
      })

      healthy = false
      const pending = yield* Effect.forkChild(probe("/health/ready"))
      yield* Deferred.await(cacheProbed)
      yield* TestClock.adjust("300 millis")
      const failing = yield* Fiber.join(pending)
      expect(failing.status).toBe(503)
      expect(JSON.parse(failing.body).checks).toMatchObject([
        { name: "database", status: "fail" },
        { name: "cache", status: "timeout" }
      ])

      healthy = true
      yield* GracefulTest.send("SIGTERM")
      yield* lifecycle.awaitPhase("Draining")
      const draining = yield* probe("/health/ready")
      expect(draining.status).toBe(503)
      expect(JSON.parse(draining.body)).toMatchObject({ status: "not ready", phase: "Draining" })
      const live = yield* probe("/health/live")
      expect(live.status).toBe(200)
      const app = yield* probe("/anything")
      expect(app.body).toBe("app")
      expect(app.headers.connection).toBe("close")
      yield* TestClock.adjust("2 seconds")
      expect((yield* Fiber.join(fiber)).exitCode).toBe(0)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("an upgrade request while draining is answered 503", () =>
    Effect.gen(function*() {
      let upgraded = 0
      const { port, fiber, lifecycle } = yield* serve(
        (_req, res) => res.end(),
        { delay: "1 second" },
        Effect.void,
        // As a WebSocket server would: Node only emits 'upgrade' when someone listens.
        (server) =>
          server.on("upgrade", (_req, socket) => {
            upgraded++
            socket.destroy()
          })
      )
      yield* GracefulTest.send("SIGTERM")
      yield* lifecycle.awaitPhase("Draining")
      const connection = yield* connect(port)
      connection.send("/ws", {
        Connection: "Upgrade",
        Upgrade: "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="
      })
      const answer = yield* read(connection)
      expect(answer.status).toBe(503)
      expect(answer.headers.connection).toBe("close")
      expect(upgraded).toBe(0)
      yield* TestClock.adjust("1 second")
      expect((yield* Fiber.join(fiber)).exitCode).toBe(0)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("pipelined requests: only the last one queued says Connection: close, and all are answered", () =>
    Effect.gen(function*() {
      const pending: Array<NodeHttp.ServerResponse> = []
      const two = yield* Deferred.make<void>()
      const { port, fiber, lifecycle } = yield* serve((_req, res) => {
        pending.push(res)
        if (pending.length === 2) Deferred.doneUnsafe(two, Effect.void)
      }, { delay: "1 second" })
      const connection = yield* connect(port)
      connection.send("/a")
      connection.send("/b")
      yield* Deferred.await(two)
      yield* GracefulTest.send("SIGTERM")
      yield* lifecycle.awaitPhase("Draining")
      for (const res of pending) res.end("ok")
      const first = yield* read(connection)
      const second = yield* read(connection)
      expect(first.headers.connection).toBe("keep-alive")
      expect(second.headers.connection).toBe("close")
      yield* TestClock.adjust("1 second")
      expect((yield* Fiber.join(fiber)).exitCode).toBe(0)
    }).pipe(Effect.provide(GracefulTest.layer)))
  it.effect("idle grace on the program's clock: a socket that just answered ends after idleGrace, a silent new one after newConnectionGrace", () =>
    Effect.gen(function*() {
      const { port, fiber, lifecycle } = yield* serve(
        (_req, res) => res.end("ok"),
        {},
        Effect.void,
        () => {},
        { idleGrace: "1 second", newConnectionGrace: "5 seconds" }
      )
      const answered = yield* connect(port)
      expect((yield* Effect.promise(() => answered.request("/"))).headers.connection).toBe("keep-alive")
      const silent = yield* connect(port)
      yield* GracefulTest.send("SIGTERM")
      yield* lifecycle.awaitPhase("Closing")
      yield* turns(10)
      expect(answered.socket.readableEnded).toBe(false)
      yield* TestClock.adjust("999 millis")
      yield* turns(10)
      expect(answered.socket.readableEnded).toBe(false)
      yield* TestClock.adjust("1 millis")
      expect((yield* Effect.promise(() => answered.closed)).reset).toBe(false)
      expect(silent.socket.readableEnded).toBe(false)
      yield* TestClock.adjust("3999 millis")
      yield* turns(10)
      expect(silent.socket.readableEnded).toBe(false)
      yield* TestClock.adjust("1 millis")
      expect((yield* Effect.promise(() => silent.closed)).reset).toBe(false)
      expect((yield* Fiber.join(fiber)).exitCode).toBe(0)
    }).pipe(Effect.provide(GracefulTest.layer)))
})

describe("Http.layer (Effect HttpServer)", () => {
  it.effect("a handler still running at the drain deadline gets 503 on the wire and its fiber interrupted", () =>
    Effect.gen(function*() {
      const { HttpRouter, HttpServer, HttpServerResponse } = yield* Effect.promise(() => import("effect/http"))
      const { Layer } = yield* Effect.promise(() => import("effect"))
      const events: Array<string> = []
      const started = yield* Deferred.make<void>()
      const interrupted = yield* Deferred.make<void>()
      const listening = yield* Deferred.make<number>()
      const Routes = HttpRouter.add(
        "GET",
        "/hang",
        Deferred.succeed(started, undefined).pipe(
          Effect.andThen(Effect.never),
          Effect.onInterrupt(() =>
            Effect.sync(() => events.push("handler interrupted")).pipe(
              Effect.andThen(Deferred.succeed(interrupted, undefined))
            )
          ),
          Effect.as(HttpServerResponse.text("never"))
        )
      )
      const App = HttpRouter.serve(Routes, { disableLogger: true, disableListenLog: true }).pipe(
        Layer.provideMerge(Http.layer(() => NodeHttp.createServer(), { port: 0, host: "127.0.0.1", idleGrace: 0 }))
      )
      const fiber: Fiber.Fiber<Report.ShutdownReport, unknown> = yield* Effect.gen(function*() {
        const context = yield* Layer.build(App)
        // Released first of all: the handler must have been interrupted by the cut before.
        yield* Resource.addFinalizer("marker", Effect.sync(() => events.push("releasing")))
        const server = yield* HttpServer.HttpServer.pipe(Effect.provideContext(context))
        if (server.address._tag !== "UnixPathAddress") yield* Deferred.succeed(listening, server.address.port)
        return yield* Effect.never
      }).pipe(Graceful.run({ timeout: "20 seconds", drainTimeout: "2 seconds" }), Effect.forkChild)
      const port = yield* Deferred.await(listening)
      const connection = yield* connect(port)
      connection.send("/hang")
      yield* Deferred.await(started)
      yield* GracefulTest.send("SIGTERM")
      yield* TestClock.adjust("2 seconds")
      expect((yield* read(connection)).status).toBe(503)
      yield* Deferred.await(interrupted)
      const report = yield* Fiber.join(fiber)
      expect(report.cut.map((c) => `${c.kind} ${c.label}`)).toEqual(["request GET /hang"])
      expect(events).toEqual(["handler interrupted", "releasing"])
    }).pipe(Effect.provide(GracefulTest.layer)))
})

describe("Http.layerConfig", () => {
  it.effect("reads its options through Config: the port from the environment, no Layer.unwrap", () =>
    Effect.gen(function*() {
      const { Config, ConfigProvider, Layer } = yield* Effect.promise(() => import("effect"))
      const { HttpServer } = yield* Effect.promise(() => import("effect/http"))
      const free = yield* Effect.promise(() =>
        new Promise<number>((resolve) => {
          const probe = NodeHttp.createServer().listen(0, "127.0.0.1", () => {
            const { port } = probe.address() as { port: number }
            probe.close(() => resolve(port))
          })
        })
      )
      const HttpLive = Http.layerConfig(() => NodeHttp.createServer(), {
        port: Config.Port("PORT"),
        host: Config.succeed("127.0.0.1")
      })
      const withEnv = (env: Record<string, string>) =>
        Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env })))
      const addressOf = Effect.gen(function*() {
        const context = yield* Layer.build(HttpLive)
        const server = yield* HttpServer.HttpServer.pipe(Effect.provideContext(context))
        return server.address
      })
      const addresses: Array<string> = []
      yield* Effect.tap(addressOf, (address) => Effect.sync(() => addresses.push(String(address)))).pipe(
        Graceful.run({ timeout: "5 seconds" }),
        withEnv({ PORT: String(free) })
      )
      expect(addresses).toEqual([`127.0.0.1:${free}`])

      const report = yield* addressOf.pipe(Graceful.run({ timeout: "5 seconds" }), withEnv({ PORT: "not-a-port" }))
      const failure = JSON.stringify(report)
      expect(String(failure)).toContain("PORT")
    }).pipe(Effect.provide(GracefulTest.layer)))
})

describe("Http.guard on HTTPS (HTTP/1.1 over TLS)", () => {
  it.effect("keep-alive over TLS: the response in flight says Connection: close, the idle socket is ended, no reset", () =>
    Effect.gen(function*() {
      const { readFileSync } = yield* Effect.promise(() => import("node:fs"))
      const { join } = yield* Effect.promise(() => import("node:path"))
      const Https = yield* Effect.promise(() => import("node:https"))
      const Tls = yield* Effect.promise(() => import("node:tls"))
      const tls = {
        key: readFileSync(join(import.meta.dirname, "fixtures", "localhost-key.pem")),
        cert: readFileSync(join(import.meta.dirname, "fixtures", "localhost-cert.pem"))
      }
      const arrived = yield* Deferred.make<NodeHttp.ServerResponse>()
      const listening = yield* Deferred.make<number>()
      const fiber: Fiber.Fiber<Report.ShutdownReport, unknown> = yield* Effect.gen(function*() {
        const { port } = yield* Http.serveNode(
          () =>
            Https.createServer(tls, (req, res) => {
              if (req.url === "/slow") Deferred.doneUnsafe(arrived, Effect.succeed(res))
              else res.end("fast")
            }),
          { port: 0, host: "127.0.0.1", idleGrace: 0 }
        )
        yield* Deferred.succeed(listening, port)
        return yield* Effect.never
      }).pipe(Graceful.run({ timeout: "20 seconds" }), Effect.forkChild)
      const port = yield* Deferred.await(listening)
      const open = () =>
        Effect.promise(() =>
          new Promise<TLSSocket>((resolve) => {
            const socket = Tls.connect(
              { port, host: "127.0.0.1", ca: tls.cert, servername: "localhost" },
              () => resolve(socket)
            )
          })
        )
      const collect = (socket: TLSSocket) =>
        new Promise<{ text: string; reset: boolean }>((resolve) => {
          let text = ""
          let reset = false
          socket.on("data", (chunk) => (text += chunk))
          socket.on("error", (e: NodeJS.ErrnoException) => (reset = e.code === "ECONNRESET"))
          socket.on("close", () => resolve({ text, reset }))
        })
      const idle = yield* open()
      const idleDone = collect(idle)
      idle.write("GET /fast HTTP/1.1\r\nHost: localhost\r\n\r\n")
      const busy = yield* open()
      const busyDone = collect(busy)
      busy.write("GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n")
      const response = yield* Deferred.await(arrived)
      yield* GracefulTest.send("SIGTERM")
      response.end("slow")
      const busyResult = yield* Effect.promise(() => busyDone)
      expect(busyResult.text.toLowerCase()).toContain("connection: close")
      expect(busyResult.text.endsWith("slow")).toBe(true)
      expect(busyResult.reset).toBe(false)
      const idleResult = yield* Effect.promise(() => idleDone)
      expect(idleResult.text.endsWith("fast")).toBe(true)
      expect(idleResult.reset).toBe(false)
      expect((yield* Fiber.join(fiber)).exitCode).toBe(0)
    }).pipe(Effect.provide(GracefulTest.layer)))
})
