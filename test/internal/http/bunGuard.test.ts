/**
 * The Bun server's guard (src/internal/http/bunGuard.ts), deterministically:
 * requests made from Web `Request`s go through `guard.wrap(app)` under
 * `Graceful.run`, the Bun server is a recorder of `stop` calls, and TestClock
 * moves every deadline. The same guard on the real `Bun.serve` is
 * test/e2e/wire-bun.test.ts.
 */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, Stream } from "effect"
import { HttpServerRequest, HttpServerResponse } from "effect/http"
import { TestClock } from "effect/testing"
import { Graceful, Health, Lifecycle, type Report } from "../../../src/index.ts"
import * as BunGuard from "../../../src/internal/http/bunGuard.ts"
import * as GracefulTest from "../../../src/testing.ts"

/** A Bun server that records how it was stopped. */
const recordingServer = () => {
  const stops: Array<"graceful" | "force"> = []
  return {
    stops,
    stop: (closeActiveConnections?: boolean) => {
      stops.push(closeActiveConnections === true ? "force" : "graceful")
      return Promise.resolve()
    }
  }
}

interface Started {
  readonly guard: BunGuard.BunGuard
  readonly server: ReturnType<typeof recordingServer>
  readonly fiber: Fiber.Fiber<Report.ShutdownReport, unknown>
}

/** The guard under `Graceful.run`, with a 100 ms idle grace; resolves once Ready. */
const start = (options: Graceful.RunOptions = {}) =>
  Effect.gen(function*() {
    const server = recordingServer()
    const installed = yield* Deferred.make<BunGuard.BunGuard>()
    const fiber = yield* Effect.gen(function*() {
      const guard = yield* BunGuard.install({
        name: "http server",
        idleGraceMs: 100,
        closeReason: "server shutting down",
        health: Health.defaultPaths,
        readinessDetail: false
      }, server)
      yield* Lifecycle.Lifecycle.use((lifecycle) => lifecycle.awaitPhase("Ready"))
      yield* Deferred.succeed(installed, guard)
      return yield* Effect.never
    }).pipe(Graceful.run({ timeout: "20 seconds", drainTimeout: "10 seconds", ...options }), Effect.forkChild)
    return { guard: yield* Deferred.await(installed), server, fiber } as Started
  })

/** One request through the guarded app, as `BunHttpServer` runs it. */
const request = <E>(
  guard: BunGuard.BunGuard,
  app: Effect.Effect<HttpServerResponse.HttpServerResponse, E, HttpServerRequest.HttpServerRequest>,
  url = "http://localhost/work",
  init?: RequestInit
) =>
  guard.wrap(app).pipe(
    Effect.provideService(HttpServerRequest.HttpServerRequest, HttpServerRequest.fromWeb(new Request(url, init))),
    Effect.scoped
  )

const ok = Effect.succeed(HttpServerResponse.text("done"))

describe("BunGuard", () => {
  it.effect("Ready: health routes are answered before the app; app responses keep the connection", () =>
    Effect.gen(function*() {
      const { guard, fiber } = yield* start()
      const live = yield* request(
        guard,
        Effect.die("the app must not see /health/live"),
        "http://localhost/health/live"
      )
      expect(live.status).toBe(200)
      const ready = yield* request(guard, Effect.die("nor /health/ready"), "http://localhost/health/ready")
      expect(ready.status).toBe(200)
      const work = yield* request(guard, ok)
      expect(work.status).toBe(200)
      expect(work.headers["connection"]).toBeUndefined()
      yield* GracefulTest.send("SIGTERM")
      yield* TestClock.adjust("1 second")
      expect((yield* Fiber.join(fiber)).outcome).toBe("clean")
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("a request in flight at SIGTERM holds the drain and is answered with Connection: close", () =>
    Effect.gen(function*() {
      const { guard, fiber, server } = yield* start()
      const arrived = yield* Deferred.make<void>()
      const finish = yield* Deferred.make<void>()
      const inFlight = yield* request(
        guard,
        Deferred.succeed(arrived, undefined).pipe(Effect.andThen(Deferred.await(finish)), Effect.andThen(ok))
      ).pipe(Effect.forkChild)
      yield* Deferred.await(arrived)
      yield* GracefulTest.send("SIGTERM")
      yield* TestClock.adjust("5 seconds")
      expect(fiber.pollUnsafe()).toBeUndefined()
      // The listener stopped after the idle grace, the request still served.
      expect(server.stops).toEqual(["graceful"])
      yield* Deferred.succeed(finish, undefined)
      const response = yield* Fiber.join(inFlight)
      expect(response.status).toBe(200)
      expect(response.headers["connection"]).toBe("close")
      const report = yield* Fiber.join(fiber)
      expect(report.outcome).toBe("clean")
      expect(report.inFlight.atDrainStart).toBe(1)
      // The release closes whatever connection is left.
      expect(server.stops).toEqual(["graceful", "force"])
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("Closing: the listener stops once no request arrived or was answered for the idle grace", () =>
    Effect.gen(function*() {
      const { guard, fiber, server } = yield* start({ delay: "1 second" })
      const turn = Effect.promise(() => new Promise((resolve) => setImmediate(resolve)))
      yield* GracefulTest.send("SIGTERM")
      yield* TestClock.adjust("1 second") // Closing: the grace counts from here at the least
      yield* TestClock.adjust("50 millis")
      // A request on a connection Bun still holds: served, and the grace starts again.
      const late = yield* request(guard, ok)
      expect(late.headers["connection"]).toBe("close")
      yield* TestClock.adjust("90 millis")
      yield* turn
      expect(server.stops).toEqual([])
      yield* TestClock.adjust("20 millis") // 110 ms after the last answer
      yield* turn
      expect(server.stops).toEqual(["graceful"])
      expect((yield* Fiber.join(fiber)).outcome).toBe("clean")
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("Closing: traffic that never pauses holds the listener at most ten idle graces", () =>
    Effect.gen(function*() {
      const { guard, fiber, server } = yield* start()
      const turn = Effect.promise(() => new Promise((resolve) => setImmediate(resolve)))
      yield* GracefulTest.send("SIGTERM")
      yield* TestClock.adjust("1 millis") // Closing (no lame duck)
      for (let i = 0; i < 18; i++) {
        yield* TestClock.adjust("50 millis")
        yield* request(guard, ok)
        yield* turn
      }
      // 901 ms: requests every 50 ms, never 100 ms quiet, the listener still open
      expect(server.stops).toEqual([])
      yield* TestClock.adjust("50 millis")
      yield* request(guard, ok)
      yield* TestClock.adjust("60 millis") // past 1,000 ms after Closing, 60 ms after the last answer
      yield* turn
      yield* turn
      // stopped (the release's forced stop follows once the drain is done)
      expect(server.stops[0]).toBe("graceful")
      expect((yield* Fiber.join(fiber)).outcome).toBe("clean")
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("upgrades are refused 503 once draining", () =>
    Effect.gen(function*() {
      const { guard, fiber } = yield* start({ delay: "1 second" })
      yield* GracefulTest.send("SIGTERM")
      yield* TestClock.adjust("10 millis")
      const upgrade = yield* request(guard, Effect.die("the app must not see the upgrade"), "http://localhost/ws", {
        headers: { upgrade: "websocket", connection: "upgrade" }
      })
      expect(upgrade.status).toBe(503)
      expect(upgrade.headers["retry-after"]).toBe("1")
      yield* TestClock.adjust("2 seconds")
      expect((yield* Fiber.join(fiber)).outcome).toBe("clean")
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("the drain deadline cuts a handler: its finalizers run, the request is answered 503 and reported", () =>
    Effect.gen(function*() {
      const { guard, fiber } = yield* start({ drainTimeout: "2 seconds" })
      const arrived = yield* Deferred.make<void>()
      const finalized = yield* Deferred.make<void>()
      const hanging = yield* request(
        guard,
        Deferred.succeed(arrived, undefined).pipe(
          Effect.andThen(Effect.never),
          Effect.onInterrupt(() => Deferred.succeed(finalized, undefined))
        )
      ).pipe(Effect.forkChild)
      yield* Deferred.await(arrived)
      yield* GracefulTest.send("SIGTERM")
      yield* TestClock.adjust("2 seconds")
      const response = yield* Fiber.join(hanging)
      expect(yield* Deferred.isDone(finalized)).toBe(true)
      expect(response.status).toBe(503)
      expect(response.headers["connection"]).toBe("close")
      expect(response.headers["retry-after"]).toBe("1")
      yield* TestClock.adjust("1 second")
      const report = yield* Fiber.join(fiber)
      expect(report.outcome).toBe("degraded")
      expect(report.cut).toEqual([{ kind: "request", label: "GET /work", ageMs: 2000 }])
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("a streamed response is in flight until its body ends; cut, its stream fails (Bun aborts it)", () =>
    Effect.gen(function*() {
      const { guard, fiber } = yield* start({ drainTimeout: "2 seconds" })
      const response = yield* request(
        guard,
        Effect.succeed(HttpServerResponse.stream(Stream.concat(Stream.make(new Uint8Array([1])), Stream.never)))
      )
      expect(response.body._tag).toBe("Stream")
      const body = response.body._tag === "Stream" ? response.body.stream : Stream.empty
      const consumed = yield* Stream.runCollect(body).pipe(Effect.result, Effect.forkChild)
      yield* GracefulTest.send("SIGTERM")
      yield* TestClock.adjust("1 second")
      expect(fiber.pollUnsafe()).toBeUndefined()
      yield* TestClock.adjust("1 second")
      const result = yield* Fiber.join(consumed)
      expect(result._tag).toBe("Failure")
      yield* TestClock.adjust("1 second")
      const report = yield* Fiber.join(fiber)
      expect(report.cut.map((item) => item.label)).toEqual(["GET /work"])
    }).pipe(Effect.provide(GracefulTest.layer)))
})
