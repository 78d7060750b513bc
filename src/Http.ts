/**
 * HTTP draining that never drops a request, for Effect's `HttpServer` on
 * Node and for any plain Node `http`, `https` or `http2` server (Express,
 * Fastify, Koa: their handlers do not change).
 *
 * {@link guard} attaches to the Node server beneath either. What it does, by
 * phase:
 *
 * - **Ready**: the health routes (`/health/live`, `/health/ready`) are
 *   answered before the application sees them. Otherwise the guard only
 *   notes, per connection, the newest response and when it arrived: no
 *   allocation and no listener per request. What is in flight is derived
 *   when the shutdown starts, from the state Node keeps per socket.
 * - **Draining** (lame duck): every response not yet finished becomes
 *   in-flight work, and from now on every request that arrives too.
 *   Everything is still served, readiness is 503, and the newest response
 *   of each HTTP/1.1 connection carries `Connection: close`, so the
 *   connection closes after it, whatever the handler set (exactly one
 *   `Connection: close`). On a pipelined connection that is the last
 *   response queued, even one whose handler already wrote its head (HTTP/1.1
 *   lets nothing follow a response that says close, and the requests queued
 *   before it are already being handled); a request that arrives behind a
 *   response already committed to close is not run (the client retries it). Upgrade requests are answered 503.
 * - **Closing**: the listener stops accepting without resetting anyone: its
 *   accept backlog shrinks (a new SYN is dropped, and the client's retry
 *   meets a closed port), the connections the kernel already queued are
 *   accepted and served with `Connection: close`, then the listener closes
 *   (Node's own `server.close()` is not used: it destroys idle keep-alive
 *   sockets and resets a request on its way in). A socket inherited from a
 *   supervisor (socket activation, see `Listen`) is shared with the next
 *   process: its backlog is left alone and only this process's descriptor
 *   closes, so new connections wait in the kernel for the successor instead
 *   of being refused. An idle keep-alive
 *   connection is ended (FIN) once it has been idle for `idleGrace` (default
 *   100 ms), since its client may be writing the next request; a connection
 *   that has sent nothing yet gets `newConnectionGrace` (default 5 s, as in
 *   Go's net/http) from when it was accepted (a TLS connection still in its
 *   handshake too); a connection holding part of a request is not idle: its
 *   request is answered if its head completes within `newConnectionGrace`
 *   (from Closing), otherwise it gets `408` and a close, and the shutdown is
 *   reported degraded. An ended connection waits at most `linger` (default
 *   500 ms) for its peer's FIN, then is destroyed. Either way the decision
 *   waits until the event loop has read what is already on the wire. A busy
 *   connection closes after its response. WebSockets get close frame 1001;
 *   their close handshakes are part of the drain. HTTP/2 sessions get GOAWAY,
 *   so their open streams finish.
 * - **Cutting** (the drain deadline): a request still in flight is answered
 *   503 with `Connection: close` if its headers were not sent, or its socket
 *   is destroyed if they were; a WebSocket is terminated. On an Effect
 *   `HttpServer` the handler's fiber is interrupted too. Each cut is in the
 *   report with method, path and age.
 * - **Releasing**: whatever socket is left is destroyed, so no keep-alive
 *   timeout holds the process, and the release waits for the server's
 *   `close` event, so code hung on it runs before the process exits.
 *
 * From Closing until the last connection closes, the open connections count
 * as one in-flight item, so the drain also waits for idle connections to
 * finish their grace and for ended ones to be closed by their peer: closing
 * a socket while a request the peer sent is still unread would reset it.
 *
 * Not handled: a request whose head had not fully arrived is not named in
 * the report if it is cut; ages of requests in flight when the shutdown
 * started count from their arrival, those of pipelined ones from the newest
 * request on their connection; a defect skips the drain, so requests in
 * flight then are answered 503 at the release and reported with age 0.
 *
 * @since 0.1.0
 */
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type { LazyArg } from "effect/Function"
import * as HttpServer from "effect/http/HttpServer"
import { ServeError } from "effect/http/HttpServerError"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import type * as Http from "node:http"
import type * as Http2 from "node:http2"
import type * as Https from "node:https"
import type * as Net from "node:net"
import { inFlightRegistry } from "./Adapter.ts"
import * as Health from "./Health.ts"
import type { InFlight } from "./InFlight.ts"
import { millisOr } from "./internal/base/duration.ts"
import { requestNodeHttpGuard, runtimeCheck } from "./internal/base/runtime.ts"
import { HttpGuard } from "./internal/http/guard.ts"
import { selfCheck } from "./internal/http/nodeInternals.ts"
import { DEFAULT_CLOSE_REASON } from "./internal/http/refusal.ts"
import * as Lifecycle from "./Lifecycle.ts"
import * as Listen from "./Listen.ts"
import * as Resource from "./Resource.ts"

/** Grace for a keep-alive socket that just finished a response (its client may be writing the next request). */
const DEFAULT_IDLE_GRACE = Duration.millis(100)
/** Grace for a new connection that has sent nothing yet (Go's net/http gives 5 s). */
const DEFAULT_NEW_CONNECTION_GRACE = Duration.seconds(5)
/** How long an ended idle socket waits for its peer's FIN before it is destroyed (a lingering close). */
const DEFAULT_LINGER = Duration.millis(500)

/**
 * A Node server the guard understands.
 *
 * @example
 * ```ts
 * import * as http from "node:http"
 * import type { Http } from "effect-graceful"
 *
 * const server: Http.NodeServer = http.createServer()
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export type NodeServer = Http.Server | Https.Server | Http2.Http2Server | Http2.Http2SecureServer

/**
 * Options of {@link guard}.
 *
 * @example
 * ```ts
 * import type { Http } from "effect-graceful"
 *
 * const options: Http.GuardOptions = { name: "api", idleGrace: "100 millis", newConnectionGrace: "5 seconds" }
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface GuardOptions {
  /** The name of the server in the shutdown report. Default `"http server"`. */
  readonly name?: string | undefined
  /** Health route paths, or `false` to leave health routes to the application. */
  readonly health?: false | Partial<Health.Paths> | undefined
  /**
   * How long a keep-alive connection must have been idle before it is ended
   * at Closing: its client may be writing its next request. Default 100 ms.
   */
  readonly idleGrace?: Duration.Input | undefined
  /**
   * How long a connection that has sent nothing yet may wait for its first
   * request byte at Closing, counted from when it was accepted (Go's
   * net/http gives such connections 5 s). Bounded by the drain deadline.
   * Default 5 seconds.
   */
  readonly newConnectionGrace?: Duration.Input | undefined
  /**
   * How long a connection the guard has ended (FIN sent) waits for its
   * peer's FIN before it is destroyed, as Go's and nginx's lingering close
   * do: a half-open client cannot hold the drain. Default 500 ms.
   */
  readonly linger?: Duration.Input | undefined
  /** The reason sent with WebSocket close code 1001. Default `"server shutting down"`. */
  readonly webSocketCloseReason?: string | undefined
  /**
   * Whether `/health/ready` on this server names each failing check's error
   * text. Default `false`: the application's port answers check names and
   * states only (no host, port or error text); the logs keep the detail.
   */
  readonly readinessDetail?: boolean | undefined
}

/** What the guard needs to know that the user does not say. */
interface GuardInternals {
  /** Effect apps: a cut leaves the response unended, so `NodeHttpServer` interrupts the handler. */
  readonly cutThroughSocket: boolean
  /**
   * Whether the listener's backlog may shrink before it closes: not for a
   * listening socket shared with another process (socket activation).
   */
  readonly shrinkBacklog?: boolean | undefined
}

/**
 * Makes a Node server graceful for the life of the scope (see the module
 * docs for the exact semantics). The server's own listen and request
 * handling are untouched; call it before or after `listen`.
 *
 * What it costs: while the program is Ready, one small record per
 * connection and a few field writes per request, no allocation and no
 * listener per request; precise per-request tracking starts with the
 * shutdown.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import express from "express"
 * import * as http from "node:http"
 * import { Http } from "effect-graceful"
 *
 * const ServerLive = Effect.gen(function*() {
 *   const app = express().get("/", (_req, res) => void res.send("hello"))
 *   const server = http.createServer(app)
 *   yield* Http.guard(server)
 *   yield* Http.listen(server, { port: 3000 })
 * })
 * ```
 *
 * @category guards
 * @since 0.1.0
 */
export const guard = (
  server: NodeServer,
  options: GuardOptions = {}
): Effect.Effect<void, never, Lifecycle.Lifecycle | InFlight | Health.Health | Scope.Scope> => {
  requestNodeHttpGuard()
  return guardWith(server, options, { cutThroughSocket: false })
}

/** Which protocol stack the server runs: decides which socket events the guard follows. */
interface ServerKind {
  readonly isHttp2: boolean
  readonly isTls: boolean
}

const serverKind = (server: NodeServer): ServerKind => {
  const isHttp2 = server.constructor.name.startsWith("Http2")
  return { isHttp2, isTls: !isHttp2 && "setSecureContext" in server }
}

/** The guard's state for `server`, from the options and the services in context. */
const makeHttpGuard = (
  server: NodeServer,
  options: GuardOptions,
  internals: GuardInternals,
  kind: ServerKind
): Effect.Effect<HttpGuard, never, Lifecycle.Lifecycle | InFlight | Health.Health> =>
  Effect.gen(function*() {
    const lifecycle = yield* Lifecycle.Lifecycle
    const health = yield* Health.Health
    return new HttpGuard(server as Net.Server, {
      name: options.name ?? "http server",
      inFlight: yield* inFlightRegistry,
      clock: yield* Clock.Clock,
      context: yield* Effect.context<never>(),
      isHttp2: kind.isHttp2,
      isTls: kind.isTls,
      idleGraceMs: millisOr(options.idleGrace, DEFAULT_IDLE_GRACE),
      newConnectionGraceMs: millisOr(options.newConnectionGrace, DEFAULT_NEW_CONNECTION_GRACE),
      lingerMs: millisOr(options.linger, DEFAULT_LINGER),
      closeReason: options.webSocketCloseReason ?? DEFAULT_CLOSE_REASON,
      answerHealth: options.health === false
        ? undefined
        : Health.nodeHandler(health, lifecycle, { ...Health.defaultPaths, ...options.health }, {
          detail: options.readinessDetail === true
        }),
      cutThroughSocket: internals.cutThroughSocket,
      shrinkBacklog: internals.shrinkBacklog ?? true
    })
  })

/**
 * Node emits `close` once the listener is closed and the last connection
 * is gone; the release waits for it, so a user's `server.on("close")` runs
 * before the process exits.
 */
interface CloseWatch {
  closed: boolean
  readonly onClose: () => void
}

const watchClose = (server: NodeServer): CloseWatch => {
  const watch: CloseWatch = {
    closed: !server.listening,
    onClose: () => {
      watch.closed = true
    }
  }
  server.on("listening", () => (watch.closed = false))
  server.on("close", watch.onClose)
  return watch
}

/**
 * Routes the server's events through the guard by replacing its `emit`
 * (requests and connections reach the guard before any listener). Returns
 * what puts the original `emit` back.
 */
const interceptEmit = (server: NodeServer, guard: HttpGuard, kind: ServerKind): () => void => {
  const { isHttp2, isTls } = kind
  const originalEmit = server.emit as (this: NodeServer, event: string | symbol, ...args: Array<unknown>) => boolean
  // Requests take the first branch with no rest array; every other event
  // goes through `arguments` untouched.
  const emit = function(this: NodeServer, event: string | symbol, a: unknown, b: unknown): boolean {
    if (event === "request") {
      if (guard.onRequest(a as Http.IncomingMessage, b as Http.ServerResponse)) return true
      return originalEmit.call(this, event, a, b)
    }
    switch (event) {
      case "checkContinue":
        if (guard.onRequest(a as Http.IncomingMessage, b as Http.ServerResponse)) return true
        break
      case "upgrade":
        if (guard.onUpgrade(a as Http.IncomingMessage, b as Net.Socket)) return true
        break
      case "connection":
        guard.onAccept()
        if (isTls) guard.onRawConnection(a as Net.Socket)
        else if (!isHttp2) guard.onConnection(a as Net.Socket)
        break
      case "secureConnection":
        if (isTls) guard.onConnection(a as Net.Socket)
        break
      case "session":
        guard.onSession(a as Http2.ServerHttp2Session)
        break
    }
    // eslint-disable-next-line prefer-rest-params -- a rest array would be one allocation per event on the hot path (bench:http counts instructions per request)
    return Reflect.apply(originalEmit, this, arguments) as boolean
  }
  ;(server as unknown as { emit: typeof emit }).emit = emit
  return () => {
    ;(server as unknown as { emit: typeof emit }).emit = originalEmit
  }
}

/**
 * The guard's finalizer: answers or cuts what is left, destroys the
 * remaining sockets, waits for the server's `close`, then detaches.
 */
const releaseGuard = (
  server: NodeServer,
  guard: HttpGuard,
  watch: CloseWatch,
  restoreEmit: () => void
): Effect.Effect<void, Error> =>
  Effect.sync(() => guard.release()).pipe(
    // A turn of the loop, so the 503s written by the release are flushed.
    Effect.andThen(Effect.callback<void>((resume) => void setImmediate(() => resume(Effect.void)))),
    Effect.andThen(Effect.sync(() => guard.destroyAll())),
    Effect.andThen(Effect.callback<void>((resume) => {
      if (watch.closed) return resume(Effect.void)
      server.once("close", () => resume(Effect.void))
    })),
    Effect.ensuring(Effect.sync(() => {
      server.off("close", watch.onClose)
      restoreEmit()
    })),
    Effect.andThen(Effect.suspend(() => {
      const notes: Array<string> = []
      if (guard.unread > 0) notes.push(`${guard.unread} pipelined request(s) not read (left for the client to retry)`)
      if (guard.lingered > 0) notes.push(`${guard.lingered} half-open connection(s) destroyed after the linger`)
      const lost = [...guard.lost].map(([kind, count]) => `${count} ${kind}`)
      const log = notes.length > 0 ? Effect.logInfo(`${guard.name}: ${notes.join("; ")}`) : Effect.void
      // A request lost without an answer makes the shutdown degraded: the
      // report names it under this release.
      return lost.length === 0
        ? log
        : log.pipe(Effect.andThen(Effect.fail(new Error(`requests lost without an answer: ${lost.join(", ")}`))))
    }))
  )

const guardWith = (
  server: NodeServer,
  options: GuardOptions,
  internals: GuardInternals
): Effect.Effect<void, never, Lifecycle.Lifecycle | InFlight | Health.Health | Scope.Scope> =>
  Effect.gen(function*() {
    const name = options.name ?? "http server"
    const broken = runtimeCheck() ?? selfCheck()
    if (broken !== undefined) return yield* Effect.die(new Error(broken))
    const kind = serverKind(server)
    const guard = yield* makeHttpGuard(server, options, internals, kind)
    const watch = watchClose(server)
    const restoreEmit = interceptEmit(server, guard, kind)
    yield* Lifecycle.addHook(`${name}: connection close`, "Draining", Effect.sync(() => guard.startDrain()))
    yield* Lifecycle.addHook(`${name}: close listener`, "Closing", Effect.sync(() => guard.startClosing()))
    yield* Resource.addFinalizer(name, releaseGuard(server, guard, watch, restoreEmit))
  })

/**
 * Listens on a Node server (resolving once it is listening) and returns the
 * bound port.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import * as http from "node:http"
 * import { Http } from "effect-graceful"
 *
 * const program = Effect.gen(function*() {
 *   const { port } = yield* Http.listen(http.createServer(), { port: 0, host: "127.0.0.1" })
 * })
 * ```
 *
 * @category listening
 * @since 0.1.0
 */
export const listen = (
  server: NodeServer,
  options: Listen.ListenOptions
): Effect.Effect<{ readonly port: number; readonly host: string }, Error> =>
  Effect.callback<{ readonly port: number; readonly host: string }, Error>((resume) => {
    const onError = (error: Error) => resume(Effect.fail(error))
    server.once("error", onError)
    const onListening = () => {
      server.off("error", onError)
      const address = server.address()
      resume(Effect.succeed(
        typeof address === "object" && address !== null
          ? { port: address.port, host: address.address }
          : { port: options.port ?? 0, host: String(address) }
      ))
    }
    // A descriptor (socket activation): Node takes its backlog only as an argument.
    if (options.fd !== undefined) server.listen({ fd: options.fd }, options.backlog ?? 511, onListening)
    else server.listen(options, onListening)
  })

/**
 * A guarded, listening plain Node server for the life of the scope: the
 * adapter for Express, Fastify (`fastify({ serverFactory })` or
 * `app.server`), Koa (`http.createServer(app.callback())`) and friends.
 *
 * @example
 * ```ts
 * import { Effect, Layer } from "effect"
 * import express from "express"
 * import * as http from "node:http"
 * import { Graceful, Http } from "effect-graceful"
 *
 * const app = express().get("/", (_req, res) => void res.send("hello"))
 *
 * const ServerLive = Layer.effectDiscard(
 *   Http.serveNode(() => http.createServer(app), { port: 3000, host: "127.0.0.1" })
 * )
 *
 * Graceful.runMain(ServerLive)
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const serveNode = <S extends NodeServer>(
  evaluate: LazyArg<S>,
  options: Listen.ListenOptions & GuardOptions & Listen.SocketOptions
): Effect.Effect<
  { readonly server: S; readonly port: number },
  Error,
  Lifecycle.Lifecycle | InFlight | Health.Health | Scope.Scope
> => {
  requestNodeHttpGuard()
  return Effect.gen(function*() {
    // An inherited socket (socket activation) replaces the port; see Listen.
    const listenOptions = yield* Listen.resolve(options, options)
    const server = evaluate()
    // The backlog of an inherited socket is the supervisor's, shared with the
    // successor: shrinking it would drop connections meant for the next process.
    yield* guardWith(server, options, { cutThroughSocket: false, shrinkBacklog: !("fd" in listenOptions) })
    const { port } = yield* listen(server, listenOptions)
    return { server, port }
  })
}

/**
 * `NodeHttpServer.layerServer` with the guard: an Effect `HttpServer` whose
 * requests, keep-alive connections and WebSockets drain gracefully. Serve an
 * app on it as usual (`HttpRouter.serve`, `HttpServer.serve`).
 *
 * Node's own preemptive shutdown is disabled: the guard owns the sequence.
 *
 * @example
 * ```ts
 * import { Effect, Layer } from "effect"
 * import { HttpRouter, HttpServerResponse } from "effect/http"
 * import * as http from "node:http"
 * import { Graceful, Http } from "effect-graceful"
 *
 * const Routes = HttpRouter.add("GET", "/", HttpServerResponse.text("hello"))
 *
 * const ServerLive = HttpRouter.serve(Routes).pipe(
 *   Layer.provide(Http.layer(() => http.createServer(), { port: 3000 }))
 * )
 *
 * Graceful.runMain(ServerLive)
 * ```
 *
 * @category layers
 * @since 0.1.0
 */
export const layerServer = (
  evaluate: LazyArg<NodeServer>,
  options: NodeHttpServer.Options & GuardOptions & Listen.SocketOptions
): Layer.Layer<HttpServer.HttpServer, ServeError, Lifecycle.Lifecycle | InFlight | Health.Health> => {
  requestNodeHttpGuard()
  return Layer.effect(
    HttpServer.HttpServer,
    Effect.gen(function*() {
      // An inherited socket (socket activation) replaces the port; see Listen.
      const listenOptions = yield* Listen.resolve(options, options).pipe(
        Effect.mapError((cause) => new ServeError({ cause }))
      )
      let server: NodeServer | undefined
      const httpServer = yield* NodeHttpServer.make(() => (server = evaluate()), {
        ...listenOptions,
        disablePreemptiveShutdown: true
      })
      // A cut leaves the response unended, so NodeHttpServer interrupts the
      // handler's fiber: its finalizers (a transaction's rollback) run before
      // the resources it uses are released.
      yield* guardWith(server!, options, { cutThroughSocket: true, shrinkBacklog: !("fd" in listenOptions) })
      return httpServer
    })
  )
}

/**
 * {@link layerServer} plus the platform services `NodeHttpServer.layer`
 * provides (`HttpPlatform`, `Etag.Generator`, `NodeServices`).
 *
 * @example
 * ```ts
 * import * as http from "node:http"
 * import { Http } from "effect-graceful"
 *
 * const HttpLive = Http.layer(() => http.createServer(), { port: 3000, host: "127.0.0.1" })
 * ```
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (
  evaluate: LazyArg<NodeServer>,
  options: NodeHttpServer.Options & GuardOptions & Listen.SocketOptions
) => Layer.mergeAll(layerServer(evaluate, options), NodeHttpServer.layerHttpServices)

/**
 * {@link layer} with its options read through `Config`, as
 * `NodeHttpServer.layerConfig` does: a `Config` of the options, or a record
 * of one `Config` per option (`Config.Wrap`), so a port from the environment needs no
 * `Layer.unwrap`. A configuration error fails the layer at start-up, naming
 * the variable.
 *
 * @example
 * ```ts
 * import { Config } from "effect"
 * import * as http from "node:http"
 * import { Http } from "effect-graceful"
 *
 * const HttpLive = Http.layerConfig(() => http.createServer(), {
 *   port: Config.Port("PORT").pipe(Config.withDefault(3000)),
 *   host: Config.succeed("127.0.0.1")
 * })
 * ```
 *
 * @category layers
 * @since 0.2.0
 */
export const layerConfig = (
  evaluate: LazyArg<NodeServer>,
  options: Config.Wrap<NodeHttpServer.Options & GuardOptions & Listen.SocketOptions>
) => {
  requestNodeHttpGuard()
  return Layer.unwrap(Effect.map(Config.unwrap(options), (resolved) => layer(evaluate, resolved)))
}
