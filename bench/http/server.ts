/**
 * The benchmark server, one variant a process (BENCH_VARIANT):
 *
 * - `effect-bare`: Effect HttpRouter on stock `NodeHttpServer.layer`.
 * - `effect-graceful`: the same app on `Http.layer` under `Graceful.launch`.
 * - `node-bare`: a plain `http.Server`.
 * - `node-graceful`: the same server through `Http.serveNode`.
 * - `node-terminator`: the same server with http-terminator.
 * - `node-terminus`: the same server with @godaddy/terminus.
 *
 * Routes: `/` (a trivial text response), `/slow` (answers when the process
 * gets SIGUSR2, to hold requests in flight), `/parked` (how many are held),
 * `/heap` (heap used after a GC), `/cpu` (CPU time used so far, µs).
 * Prints `PORT <n>` once listening, and `EXIT <ns>` (monotonic clock) as it exits.
 */
import { NodeHttpServer, NodeRuntime } from "@effect/platform-node"
import { createTerminus } from "@godaddy/terminus"
import { Effect, Layer } from "effect"
import { HttpRouter, HttpServer, HttpServerResponse } from "effect/http"
import { createHttpTerminator } from "http-terminator"
import { writeSync } from "node:fs"
import * as NodeHttp from "node:http"
import { Graceful, Http } from "../../src/index.ts"

const variant = process.env.BENCH_VARIANT ?? "node-bare"
const gc = (globalThis as { gc?: () => void }).gc

const heapUsed = () => {
  gc?.()
  gc?.()
  return process.memoryUsage().heapUsed
}

const cpuMicros = () => {
  const usage = process.cpuUsage()
  return usage.user + usage.system
}

// The moment of exit on the system's monotonic clock, which the bench reads
// too: the bench's own event loop, busy with 1,000 closing sockets, would
// see the exit late.
process.on("exit", () => writeSync(1, `EXIT ${process.hrtime.bigint()}\n`))

// Requests parked on /slow, released all at once by SIGUSR2.
const parked: Array<() => void> = []
process.on("SIGUSR2", () => {
  for (const release of parked.splice(0)) release()
})

const nodeHandler: NodeHttp.RequestListener = (req, res) => {
  if (req.url === "/slow") {
    parked.push(() => res.end("slow"))
    return
  }
  if (req.url === "/heap") {
    res.end(String(heapUsed()))
    return
  }
  if (req.url === "/cpu") {
    res.end(String(cpuMicros()))
    return
  }
  if (req.url === "/parked") {
    res.end(String(parked.length))
    return
  }
  res.writeHead(200, { "content-type": "text/plain", "content-length": 5 })
  res.end("hello")
}

const Routes = Layer.mergeAll(
  HttpRouter.add("GET", "/", HttpServerResponse.text("hello")),
  HttpRouter.add("GET", "/heap", Effect.sync(() => HttpServerResponse.text(String(heapUsed())))),
  HttpRouter.add("GET", "/cpu", Effect.sync(() => HttpServerResponse.text(String(cpuMicros())))),
  HttpRouter.add("GET", "/parked", Effect.sync(() => HttpServerResponse.text(String(parked.length)))),
  HttpRouter.add(
    "GET",
    "/slow",
    Effect.callback<HttpServerResponse.HttpServerResponse>((resume) => {
      parked.push(() => resume(Effect.succeed(HttpServerResponse.text("slow"))))
    })
  )
)

const PrintPort = Layer.effectDiscard(HttpServer.HttpServer.use((server) =>
  Effect.sync(() => {
    if (server.address._tag !== "UnixPathAddress") console.log(`PORT ${server.address.port}`)
  })
))

const listenOptions = { port: 0, host: "127.0.0.1" }
const createServer = () => NodeHttp.createServer({ keepAliveTimeout: 60_000 }, nodeHandler)
const printPort = (server: NodeHttp.Server) => {
  const address = server.address()
  if (typeof address === "object" && address !== null) console.log(`PORT ${address.port}`)
}

switch (variant) {
  case "effect-bare": {
    const App = Layer.mergeAll(HttpRouter.serve(Routes, { disableLogger: true, disableListenLog: true }), PrintPort)
      .pipe(
        Layer.provide(NodeHttpServer.layer(() => NodeHttp.createServer({ keepAliveTimeout: 60_000 }), listenOptions))
      )
    Layer.launch(App).pipe(NodeRuntime.runMain)
    break
  }
  case "effect-graceful": {
    const App = Layer.mergeAll(HttpRouter.serve(Routes, { disableLogger: true, disableListenLog: true }), PrintPort)
      .pipe(Layer.provide(Http.layer(() => NodeHttp.createServer({ keepAliveTimeout: 60_000 }), listenOptions)))
    Graceful.launch(App).pipe(NodeRuntime.runMain({ teardown: Graceful.teardown }))
    break
  }
  case "node-graceful": {
    Graceful.runMain(Layer.effectDiscard(Effect.gen(function*() {
      const { server } = yield* Http.serveNode(createServer, listenOptions)
      printPort(server)
    })))
    break
  }
  case "node-terminator": {
    const server = createServer()
    const terminator = createHttpTerminator({ server, gracefulTerminationTimeout: 25_000 })
    process.on("SIGTERM", () => void terminator.terminate().then(() => process.exit(0)))
    server.listen(listenOptions, () => printPort(server))
    break
  }
  case "node-terminus": {
    const server = createServer()
    createTerminus(server, { signals: ["SIGTERM"], timeout: 25_000, healthChecks: { "/health/ready": async () => {} } })
    server.listen(listenOptions, () => printPort(server))
    break
  }
  default: {
    const server = createServer()
    process.on("SIGTERM", () => server.close(() => process.exit(0)))
    server.listen(listenOptions, () => printPort(server))
  }
}
