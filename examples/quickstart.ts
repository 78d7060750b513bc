// The README's 20-line example, kept compiling (`npm run typecheck`) and runnable:
// node --conditions=@effect-graceful/source examples/quickstart.ts, then curl localhost:3000/work and Ctrl-C.
import { NodeRuntime } from "@effect/platform-node"
import { Effect, Layer } from "effect"
import { HttpRouter, HttpServerResponse } from "effect/http"
import { Graceful, Health, Http, Resource } from "effect-graceful"
import { createServer } from "node:http"

const openDb = Effect.sync(() => ({ ping: async () => {}, close: async () => {} })) // your client here

// Opened first, closed last (within 5 s); its ping gates /health/ready.
const DbLive = Layer.effectDiscard(Effect.gen(function*() {
  const db = yield* Resource.make("db", openDb, (db) => Effect.promise(() => db.close()), { timeout: "5 seconds" })
  yield* Health.addCheck("db", Effect.promise(() => db.ping()))
}))

const Routes = HttpRouter.add("GET", "/work", Effect.as(Effect.sleep("2 seconds"), HttpServerResponse.text("done\n")))

// Serves /health/live and /health/ready too; drains on SIGTERM / Ctrl-C.
const ServerLive = HttpRouter.serve(Routes).pipe(
  Layer.provide(Http.layer(() => createServer(), { port: 3000, host: "127.0.0.1" }))
)

Graceful.launch(ServerLive.pipe(Layer.provide(DbLive))).pipe(NodeRuntime.runMain({ teardown: Graceful.teardown }))
