/**
 * The Bun benchmark server, one variant a process (BENCH_VARIANT), run by Bun:
 *
 * - `bun-bare`: Effect HttpRouter on stock `BunHttpServer.layer`.
 * - `bun-graceful`: the same app on `BunHttp.layer` under `Graceful.launch`.
 *
 * Routes: `/` (a trivial text response), `/cpu` (CPU time used so far, µs).
 * Prints `PORT <n>` once listening.
 */
import { BunHttpServer, BunRuntime } from "@effect/platform-bun"
import { Effect, Layer } from "effect"
import { HttpRouter, HttpServer, HttpServerResponse } from "effect/http"
import * as BunHttp from "../../src/adapters/BunHttp.ts"
import { Graceful } from "../../src/index.ts"

const variant = process.env.BENCH_VARIANT ?? "bun-bare"

const cpuMicros = () => {
  const usage = process.cpuUsage()
  return usage.user + usage.system
}

const Routes = Layer.mergeAll(
  HttpRouter.add("GET", "/", HttpServerResponse.text("ok")),
  HttpRouter.add("GET", "/cpu", Effect.sync(() => HttpServerResponse.text(String(cpuMicros()))))
)

const PrintPort = Layer.effectDiscard(HttpServer.HttpServer.use((server) =>
  Effect.sync(() => {
    if (server.address._tag !== "UnixPathAddress") console.log(`PORT ${server.address.port}`)
  })
))

const App = Layer.mergeAll(HttpRouter.serve(Routes, { disableLogger: true, disableListenLog: true }), PrintPort)
const options = { port: 0, hostname: "127.0.0.1" }

if (variant === "bun-graceful") {
  Graceful.launch(App.pipe(Layer.provide(BunHttp.layer(options)))).pipe(
    BunRuntime.runMain({ teardown: Graceful.teardown })
  )
} else {
  Layer.launch(App.pipe(Layer.provide(BunHttpServer.layer(options)))).pipe(BunRuntime.runMain)
}
