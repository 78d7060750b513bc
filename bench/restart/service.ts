/**
 * The service the restart benchmark restarts: an Effect `HttpRouter` app on
 * `Http.layer` (effect-graceful), without the example service's PGlite
 * (whose ~3.5 s start-up would make 120 restarts take ten minutes; set
 * `RESTART_SERVICE=example` in the bench to restart examples/service
 * instead: it honours the same variables).
 *
 * Where it listens comes from the environment, as for the example service:
 * the inherited socket under socket activation (`LISTEN_FDS`, ...), else
 * `PORT`/`HOST`, with `SO_REUSEPORT` when `REUSE_PORT=true`. Under PM2 it
 * sends `ready` when Ready (the library does) and stops on PM2's `shutdown`
 * message or SIGINT.
 *
 * - `GET /work?ms=N`: answers `ok <pid>` after N ms.
 * - `READY_AFTER_MS`: stays Starting (readiness 503, no PM2 `ready`) this
 *   long after listening: a warm-up, so that a supervisor that does not
 *   wait for readiness shows it.
 *
 * Prints `MARK <event> <pid> <epoch ms>` lines: `listening`, `ready`,
 * `shutdown <trigger>`, `released` (after the drain, just before exit).
 */
import { NodeRuntime } from "@effect/platform-node"
import { Effect, Layer, Option } from "effect"
import { HttpRouter, HttpServerResponse } from "effect/http"
import * as NodeHttp from "node:http"
import { Graceful, Http, Lifecycle, Listen, type Report, Resource } from "../../src/index.ts"

const mark = (event: string) => console.log(`MARK ${event} ${process.pid} ${Date.now()}`)
const msOf = (url: string) =>
  Math.min(Math.max(Number(new URL(url, "http://x").searchParams.get("ms") ?? "0") || 0, 0), 60_000)
const readyAfterMs = Number(process.env.READY_AFTER_MS ?? "0")

const Server = Layer.unwrap(Effect.gen(function*() {
  const target = yield* Listen.fromEnvironment({ port: 3000, host: "127.0.0.1" })
  return HttpRouter.serve(
    HttpRouter.add(
      "GET",
      "/work",
      (request) => Effect.sleep(msOf(request.url)).pipe(Effect.as(HttpServerResponse.text(`ok ${process.pid}`)))
    ),
    { disableLogger: true, disableListenLog: true }
  ).pipe(
    Layer.provide(Http.layer(() => NodeHttp.createServer({ keepAliveTimeout: 65_000 }), Listen.toListenOptions(target)))
  )
}))

// Acquired first, so released last: after the drain, just before exit.
const Marks = Layer.effectDiscard(Effect.gen(function*() {
  yield* Resource.make("marks", Effect.void, () => Effect.sync(() => mark("released")))
  const lifecycle = yield* Lifecycle.Lifecycle
  yield* Effect.forkScoped(lifecycle.awaitPhase("Ready").pipe(Effect.andThen(Effect.sync(() => mark("ready")))))
  yield* Effect.forkScoped(
    lifecycle.awaitPhase("Draining").pipe(
      Effect.andThen(lifecycle.trigger),
      Effect.andThen(Option.match({
        onNone: () => Effect.void,
        onSome: (trigger) => Effect.sync(() => mark(`shutdown:${triggerName(trigger)}`))
      }))
    )
  )
}))

/** `SIGTERM`, `SIGINT`, `Message` (PM2's shutdown message), ... */
const triggerName = (trigger: Report.Trigger): string => trigger._tag === "Signal" ? trigger.signal : trigger._tag

// Readiness (and PM2's `ready`) comes when the layers are built: after this.
const Warmup = Layer.effectDiscard(Effect.gen(function*() {
  mark("listening")
  if (readyAfterMs > 0) yield* Effect.sleep(readyAfterMs)
}))

Graceful.launch(Warmup.pipe(Layer.provideMerge(Server), Layer.provideMerge(Marks))).pipe(
  NodeRuntime.runMain({ teardown: Graceful.teardown })
)
