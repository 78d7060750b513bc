/**
 * The gRPC adapter's deadline logic under TestClock: a real grpc-js server
 * and client in this process (real sockets), with the shutdown's time driven
 * by the test. Waiting for I/O is done by turning the event loop, never by
 * sleeping.
 */
import { describe, expect, it } from "@effect/vitest"
import * as grpc from "@grpc/grpc-js"
import { Effect, Fiber } from "effect"
import { TestClock } from "effect/testing"
import * as Grpc from "../../src/adapters/Grpc.ts"
import { Graceful } from "../../src/index.ts"
import * as GracefulTest from "../../src/testing.ts"
import {
  type CountRequest,
  DemoClient,
  DemoService,
  type EchoReply,
  type EchoRequest,
  type Tick
} from "../e2e/fixtures/grpc/demo.ts"

const implementation = {
  echo: (call: grpc.ServerUnaryCall<EchoRequest, EchoReply>, callback: grpc.sendUnaryData<EchoReply>) => {
    // Real time: a 60 s call never finishes within the test.
    const timer = setTimeout(() => callback(null, { text: call.request.text, server: "t" }), call.request.delayMs)
    call.on("cancelled", () => clearTimeout(timer))
  },
  count: (call: grpc.ServerWritableStream<CountRequest, Tick>) => {
    call.write({ n: call.request.after + 1, server: "t" })
  }
}

/** Turns the event loop until `condition` holds (real I/O progresses; no timer, no clock). */
const until = (condition: () => boolean, what: string) =>
  Effect.gen(function*() {
    for (let turn = 0; turn < 20_000; turn++) {
      if (condition()) return
      yield* Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))
    }
    return yield* Effect.die(new Error(`never: ${what}`))
  })

const serveDemo = (options: Partial<Grpc.ServeOptions>, runOptions: Graceful.RunOptions) =>
  Effect.gen(function*() {
    let served: Grpc.GrpcServer | undefined
    const fiber = yield* Effect.gen(function*() {
      served = yield* Grpc.serve({ address: "127.0.0.1:0", services: [[DemoService, implementation]], ...options })
      return yield* Effect.never
    }).pipe(Graceful.run(runOptions), Effect.forkChild)
    yield* until(() => served !== undefined, "bound")
    const client = new DemoClient(`127.0.0.1:${served!.port}`, grpc.credentials.createInsecure())
    yield* Effect.addFinalizer(() => Effect.sync(() => client.close()))
    return { fiber, served: served!, client }
  })

const echo = (client: DemoClient, delayMs: number) => {
  const outcome: { error?: grpc.ServiceError | null } = {}
  client.echo({ text: "x", delayMs }, {}, (error) => (outcome.error = error))
  return outcome
}

describe("Grpc.serve: drain deadline (TestClock)", () => {
  it.live("a call still running at the deadline gets UNAVAILABLE and is reported with its age; not a moment before", () =>
    Effect.gen(function*() {
      const { fiber, served, client } = yield* serveDemo({}, { timeout: "20 seconds", drainTimeout: "5 seconds" })
      const hanging = echo(client, 60_000)
      yield* until(() => served.calls() === 1, "call in flight")
      yield* TestClock.adjust("2 seconds")

      yield* GracefulTest.send("SIGTERM")
      yield* TestClock.adjust("4999 millis")
      // Just before the deadline: still running, no status.
      yield* until(() => true, "")
      expect(hanging.error).toBeUndefined()
      expect(served.calls()).toBe(1)

      yield* TestClock.adjust("1 millis")
      const report = yield* Fiber.join(fiber)
      yield* until(() => hanging.error !== undefined, "status")
      expect(hanging.error?.code).toBe(grpc.status.UNAVAILABLE)
      expect(hanging.error?.details).toBe("server shutting down: cut at the drain deadline")
      expect(report.cut).toEqual([{ kind: "grpc", label: "/demo.Demo/Echo", ageMs: 7_000 }])
      expect(report.exitCode).toBe(1)
      expect(served.calls()).toBe(0)
    }).pipe(Effect.provide(GracefulTest.layer), Effect.provide(TestClock.layer()), Effect.scoped))

  it.live("streams: 'end' ends a stream at Closing with UNAVAILABLE; 'drain' leaves it to the deadline", () =>
    Effect.gen(function*() {
      for (const mode of ["end", "drain"] as const) {
        const { fiber, served, client } = yield* serveDemo(
          { streams: mode },
          { timeout: "20 seconds", delay: "1 second", drainTimeout: "5 seconds" }
        )
        const call = client.count({ after: 0 })
        const ended: { status?: grpc.StatusObject } = {}
        call.on("data", () => {})
        call.on("error", () => {})
        call.on("status", (status) => (ended.status = status))
        yield* until(() => served.calls() === 1, "stream open")

        yield* GracefulTest.send("SIGTERM")
        yield* TestClock.adjust("999 millis")
        yield* until(() => true, "")
        expect(ended.status).toBeUndefined()
        // Closing.
        yield* TestClock.adjust("1 millis")
        if (mode === "end") {
          yield* until(() => ended.status !== undefined, "status at Closing")
          expect(ended.status).toMatchObject({ code: grpc.status.UNAVAILABLE, details: "server shutting down" })
          const report = yield* Fiber.join(fiber)
          expect(report.cut).toEqual([])
          expect(report.phases.find((phase) => phase.phase === "closing")?.durationMs).toBe(0)
        } else {
          yield* TestClock.adjust("4999 millis")
          yield* until(() => true, "")
          expect(ended.status).toBeUndefined()
          yield* TestClock.adjust("1 millis")
          const report = yield* Fiber.join(fiber)
          yield* until(() => ended.status !== undefined, "status at the deadline")
          expect(ended.status?.code).toBe(grpc.status.UNAVAILABLE)
          expect(report.cut).toEqual([{ kind: "grpc", label: "/demo.Demo/Count", ageMs: 6_000 }])
        }
      }
    }).pipe(Effect.provide(GracefulTest.layer), Effect.provide(TestClock.layer()), Effect.scoped))
})
