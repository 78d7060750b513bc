/**
 * The naive baseline for the rolling-restart benchmark: the example
 * service's routes on Effect's stock `NodeHttpServer.layer` and
 * `NodeRuntime.runMain`, with no effect-graceful. What a service gets from
 * Effect alone:
 *
 * - `/health/ready` answers 200 for as long as the process runs (nothing
 *   flips it on SIGTERM);
 * - SIGTERM interrupts the main fiber, and the server's finalizer calls
 *   Node's `server.close()`: the listener closes and idle keep-alive
 *   connections are destroyed at once, then the process exits.
 *
 * Routes: `GET /health/live`, `GET /health/ready`, `GET /work?ms=N` and
 * `POST /work?ms=N` (sleeps N ms, answers 200 JSON), `GET /ws` (a WebSocket
 * echo, for bench/nginx). Honours `PORT` (default 3000) and `HOST` (default
 * 127.0.0.1). The server keeps Node's defaults (`keepAliveTimeout` 5 s).
 */
import { NodeHttpServer, NodeRuntime } from "@effect/platform-node"
import { Effect, Layer } from "effect"
import { HttpRouter, HttpServerResponse } from "effect/http"
import * as NodeHttp from "node:http"

const port = Number(process.env.PORT ?? 3000)
const host = process.env.HOST ?? "127.0.0.1"

const msOf = (url: string) => {
  const ms = Number(new URL(url, "http://x").searchParams.get("ms") ?? "0")
  return Number.isFinite(ms) && ms > 0 ? Math.min(ms, 60_000) : 0
}

const Routes = Layer.mergeAll(
  HttpRouter.add("GET", "/health/live", HttpServerResponse.jsonUnsafe({ status: "ok" })),
  HttpRouter.add("GET", "/health/ready", HttpServerResponse.jsonUnsafe({ status: "ready" })),
  HttpRouter.add("GET", "/work", (request) => {
    const ms = msOf(request.url)
    return Effect.sleep(ms).pipe(Effect.as(HttpServerResponse.jsonUnsafe({ ok: true, ms })))
  }),
  HttpRouter.add("POST", "/work", (request) => {
    const ms = msOf(request.url)
    return Effect.ignore(request.text).pipe(
      Effect.andThen(Effect.sleep(ms)),
      Effect.as(HttpServerResponse.jsonUnsafe({ ok: true, ms }))
    )
  }),
  HttpRouter.add("GET", "/ws", (request) =>
    Effect.gen(function*() {
      const socket = yield* request.upgrade
      const writer = yield* socket.writer
      const reader = yield* socket.reader
      while (true) {
        for (const chunk of yield* reader.pull) yield* writer.write(chunk)
      }
    }).pipe(Effect.scoped, Effect.ignore, Effect.as(HttpServerResponse.empty())))
)

const App = HttpRouter.serve(Routes, { disableLogger: true }).pipe(
  Layer.provide(NodeHttpServer.layer(() => NodeHttp.createServer(), { port, host }))
)

Layer.launch(App).pipe(NodeRuntime.runMain)
