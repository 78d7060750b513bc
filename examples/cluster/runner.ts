/**
 * One runner of the example's sharded service: the `Account` entity, an HTTP
 * front that calls it, `NodeClusterSocket` between runners, runner and
 * message storage in Postgres.
 *
 *   DATABASE_URL   the service's database (created by start.ts)
 *   RUNNER_PORT    where other runners reach this one (loopback)
 *   HTTP_PORT      the HTTP front (0: any free port; printed as `http <port>`)
 *   MODE           `graceful` (effect-graceful's lifecycle, the default) or
 *                  `plain` (Effect's `NodeRuntime.runMain` alone: the baseline)
 *   SHARDS         shards per group (default 30)
 *   HANDOFF        `afterDrain` (default) or `atClosing` (see Cluster.Options.handoff)
 *   REFRESH_ASSIGNMENTS  the cluster's `refreshAssignmentsInterval`: how soon the
 *                  other runners see one leave (default: Cluster.layer's 1 second;
 *                  Effect's 3 seconds in MODE=plain)
 *
 * Routes: `POST /increment?account=A&key=K[&ms=N]` (persisted; `ms` of work first), `GET /ping?account=A`
 * (volatile), `/health/live`, `/health/ready`.
 */
import { NodeClusterSocket, NodeHttpServer, NodeRuntime } from "@effect/platform-node"
import { PgClient } from "@effect/sql-pg"
import { Duration, Effect, Layer, Option, Redacted } from "effect"
import { RunnerAddress } from "effect/cluster/RunnerAddress"
import { HttpRouter, HttpServer, HttpServerRequest, HttpServerResponse } from "effect/http"
import { createServer } from "node:http"
import * as Cluster from "../../src/adapters/Cluster.ts"
import * as SqlPg from "../../src/adapters/SqlPg.ts"
import * as Graceful from "../../src/Graceful.ts"
import * as Http from "../../src/Http.ts"
import { Account, AccountLive } from "./Counter.ts"

const env = (name: string, fallback?: string): string => {
  const value = process.env[name] ?? fallback
  if (value === undefined) throw new Error(`${name} is not set`)
  return value
}

const mode = env("MODE", "graceful")
const host = "127.0.0.1"
const runnerPort = Number(env("RUNNER_PORT"))
const httpPort = Number(env("HTTP_PORT", "0"))
const runnerName = `runner-${runnerPort}`
const shardsPerGroup = Number(env("SHARDS", "30"))
const refresh = process.env.REFRESH_ASSIGNMENTS
const shardingOptions = refresh === undefined
  ? { shardsPerGroup }
  : { shardsPerGroup, refreshAssignmentsInterval: Duration.fromInputUnsafe(refresh as Duration.Input) }

const search = (request: HttpServerRequest.HttpServerRequest, name: string) =>
  new URL(request.url, "http://localhost").searchParams.get(name) ?? ""

const Routes = HttpRouter.addAll([
  HttpRouter.route(
    "POST",
    "/increment",
    Effect.gen(function*() {
      const request = yield* HttpServerRequest.HttpServerRequest
      const client = yield* Account.client
      // `ms`: work the request does before it calls the entity (0 to 10000).
      const ms = Math.min(10_000, Math.max(0, Number(search(request, "ms")) || 0))
      if (ms > 0) yield* Effect.sleep(ms)
      const count = yield* client(search(request, "account")).Increment({ key: search(request, "key") })
      return HttpServerResponse.jsonUnsafe({ count })
    }).pipe(Effect.catchCause((cause) => Effect.succeed(HttpServerResponse.text(String(cause), { status: 503 }))))
  ),
  HttpRouter.route(
    "GET",
    "/ping",
    Effect.gen(function*() {
      const request = yield* HttpServerRequest.HttpServerRequest
      const client = yield* Account.client
      return HttpServerResponse.text(yield* client(search(request, "account")).Ping())
    }).pipe(Effect.catchCause((cause) => Effect.succeed(HttpServerResponse.text(String(cause), { status: 503 }))))
  )
])

const pgConfig = { url: Redacted.make(env("DATABASE_URL")), applicationName: runnerName }

// The HTTP front's port, for whoever started this runner.
const printPort = Effect.gen(function*() {
  const server = yield* HttpServer.HttpServer
  if (server.address._tag !== "UnixPathAddress") console.log(`http ${server.address.port}`)
})

if (mode === "plain") {
  // The baseline: the same service under Effect alone.
  const App = HttpRouter.serve(Routes).pipe(
    Layer.provide(AccountLive(runnerName)),
    Layer.provide(Layer.effectDiscard(printPort)),
    Layer.provideMerge(NodeHttpServer.layer(createServer, { port: httpPort, host })),
    Layer.provideMerge(NodeClusterSocket.layer({
      storage: "sql",
      shardingConfig: { ...shardingOptions, runnerAddress: Option.some(RunnerAddress.make({ host, port: runnerPort })) }
    })),
    Layer.provideMerge(PgClient.layer(pgConfig))
  )
  Layer.launch(App).pipe(NodeRuntime.runMain)
} else {
  // Under the lifecycle: the SQL client first (released last), the runner
  // on it (handed off after the drain), the HTTP front last (drained first).
  const SqlLive = SqlPg.layerManaged(PgClient.layer(pgConfig), { name: "postgres", timeout: "3 seconds" })
  // The entities are built inside the runner's layer, so that the handoff
  // stops them too, after their handlers have finished.
  const RunnerLive = Cluster.layer(
    (shardingConfig) =>
      AccountLive(runnerName).pipe(
        Layer.provideMerge(NodeClusterSocket.layer({ storage: "sql", shardingConfig }))
      ),
    {
      runnerAddress: { host, port: runnerPort },
      shardingConfig: shardingOptions,
      handoff: env("HANDOFF", "afterDrain") === "atClosing" ? "atClosing" : "afterDrain"
    }
  )
  const App = HttpRouter.serve(Routes).pipe(
    Layer.provide(Layer.effectDiscard(printPort)),
    Layer.provideMerge(Http.layer(() => createServer(), { port: httpPort, host })),
    Layer.provideMerge(RunnerLive),
    Layer.provideMerge(SqlLive)
  )
  Graceful.launch(App).pipe(NodeRuntime.runMain({ teardown: Graceful.teardown }))
}
