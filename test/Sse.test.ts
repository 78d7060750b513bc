import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Schedule, Stream } from "effect"
import { HttpServerRequest, type HttpServerResponse } from "effect/http"
import { TestClock } from "effect/testing"
import { InFlight } from "../src/index.ts"
import * as Sse from "../src/Sse.ts"
import * as GracefulTest from "../src/testing.ts"
import { start } from "./support/run.ts"

const requestFor = (headers: Record<string, string> = {}) =>
  HttpServerRequest.fromWeb(new Request("http://localhost/events", { headers }))

/** Event n every 100 ms, after the client's Last-Event-ID. */
const ticks = ({ lastEventId }: Sse.Resume) =>
  Stream.iterate(Number(lastEventId ?? 0) + 1, (n) => n + 1).pipe(
    Stream.schedule(Schedule.spaced("100 millis")),
    Stream.map((n) => ({ id: n, data: `tick ${n}` }))
  )

const bodyText = (response: HttpServerResponse.HttpServerResponse) => {
  if (response.body._tag !== "Stream") throw new Error(`not a stream body: ${response.body._tag}`)
  return response.body.stream.pipe(Stream.decodeText)
}

const idsIn = (text: string) => [...text.matchAll(/^id: (\d+)$/gm)].map((match) => Number(match[1]))

describe("Sse.encode", () => {
  it("writes id, event, retry and one data line per line, then the blank line", () => {
    expect(Sse.encode({ id: 7, event: "note", data: "a\nb\r\nc", retry: "2 seconds" })).toBe(
      "event: note\nid: 7\nretry: 2000\ndata: a\ndata: b\ndata: c\n\n"
    )
    expect(Sse.encode({ data: "" })).toBe("data: \n\n")
    // A line break in a field would split the event: it is removed.
    expect(Sse.encode({ id: "1\n2", event: "x\ry", data: "d" })).toBe("event: xy\nid: 12\ndata: d\n\n")
  })
})

describe("Sse.make: close timing (TestClock)", () => {
  it.effect("flows through the lame duck, refuses new streams with Retry-After, ends at Closing with a last retry: event; the drain does not wait", () =>
    Effect.gen(function*() {
      const text: Array<string> = []
      let open = (): Effect.Effect<HttpServerResponse.HttpServerResponse> => Effect.die("not started")
      let streams = () => -1
      const fiber = yield* start(
        Effect.gen(function*() {
          const sse = yield* Sse.make({ retry: "1500 millis", heartbeat: "0 millis" })
          streams = sse.size
          open = () =>
            sse.response(ticks).pipe(
              Effect.provideService(HttpServerRequest.HttpServerRequest, requestFor({ "last-event-id": "10" }))
            )
          const response = yield* open()
          // The server writes the body on the request's fiber, which is in flight.
          yield* bodyText(response).pipe(
            Stream.runForEach((chunk) => Effect.sync(() => text.push(chunk))),
            (writing) => InFlight.track(writing, { kind: "request", label: "GET /events" }),
            Effect.forkChild
          )
          return yield* Effect.never
        }),
        { timeout: "10 seconds", delay: "1 second", drainTimeout: "5 seconds" }
      )
      yield* TestClock.adjust("450 millis")
      expect(text[0]).toBe("retry: 1500\n\n")
      // Event n + 10 at n × 100 ms.
      expect(idsIn(text.join(""))).toEqual([11, 12, 13, 14])
      expect(streams()).toBe(1)

      yield* GracefulTest.send("SIGTERM")
      yield* TestClock.adjust("500 millis")
      // Draining: the stream still flows; a new one is refused before any event.
      expect(idsIn(text.join("")).at(-1)).toBe(19)
      const refusal = yield* open()
      expect(refusal.status).toBe(503)
      expect(refusal.headers["retry-after"]).toBe("2")

      // Closing 1 s after the SIGTERM (1,450 ms): the last event at once, not at the next tick.
      yield* TestClock.adjust("500 millis")
      const report = yield* Fiber.join(fiber)
      const all = text.join("")
      expect(idsIn(all)).toEqual([11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24])
      expect(text.at(-1)).toBe(": server shutting down, reconnect\nretry: 1500\n\n")
      expect(streams()).toBe(0)
      expect(report.cut).toEqual([])
      expect(report.outcome).toBe("clean")
      expect(report.hooks.map((hook) => hook.name)).toContain("sse streams: last event")
      const closing = report.phases.find((phase) => phase.phase === "closing")
      expect(closing).toMatchObject({ at: 1000, durationMs: 0 })
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("a stream that ends by itself gets no shutdown event; one that fails is logged and ends", () =>
    Effect.gen(function*() {
      const outputs: Array<string> = []
      const fiber = yield* start(
        Effect.gen(function*() {
          const sse = yield* Sse.make({ heartbeat: "0 millis" })
          const request = requestFor()
          for (const events of [Stream.make({ data: "one" }), Stream.fail("broken")]) {
            const response = yield* sse.response(() => events).pipe(
              Effect.provideService(HttpServerRequest.HttpServerRequest, request)
            )
            outputs.push(yield* bodyText(response).pipe(Stream.mkString))
          }
          return yield* Effect.never
        }),
        { timeout: "10 seconds" }
      )
      expect(outputs).toEqual(["retry: 1000\n\ndata: one\n\n", "retry: 1000\n\n"])
      yield* GracefulTest.send("SIGTERM")
      yield* Fiber.join(fiber)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("heartbeat: a comment line every interval while the stream is quiet", () =>
    Effect.gen(function*() {
      const text: Array<string> = []
      const fiber = yield* start(
        Effect.gen(function*() {
          const sse = yield* Sse.make({ heartbeat: "15 seconds" })
          const response = yield* sse.response(() => Stream.never).pipe(
            Effect.provideService(HttpServerRequest.HttpServerRequest, requestFor())
          )
          yield* bodyText(response).pipe(
            Stream.runForEach((chunk) => Effect.sync(() => text.push(chunk))),
            Effect.forkChild
          )
          return yield* Effect.never
        }),
        { timeout: "10 seconds" }
      )
      yield* TestClock.adjust("14 seconds")
      expect(text).toEqual(["retry: 1000\n\n"])
      yield* TestClock.adjust("31 seconds")
      expect(text).toEqual(["retry: 1000\n\n", ":\n\n", ":\n\n", ":\n\n"])
      yield* GracefulTest.send("SIGTERM")
      yield* Fiber.join(fiber)
      expect(text.at(-1)).toBe(": server shutting down, reconnect\nretry: 1000\n\n")
    }).pipe(Effect.provide(GracefulTest.layer)))
})
