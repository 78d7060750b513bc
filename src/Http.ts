/**
 * HTTP draining that never drops a request, for Effect's `HttpServer` on
 * Node and for any plain Node `http`, `https` or `http2` server (Express,
 * Fastify, Koa: their handlers do not change).
 *
 * {@link guard} attaches to the Node server beneath either. What it does, by
 * phase:
 *
 * - **Ready**: every request (and WebSocket) is in the in-flight set; the
 *   health routes (`/health/live`, `/health/ready`) are answered before the
 *   application sees them.
 * - **Draining** (lame duck): everything is still served, readiness is 503,
 *   and every HTTP/1.1 response not yet started carries `Connection: close`
 *   (on a pipelined connection, only the last response queued), so each
 *   keep-alive connection closes after its current response. Upgrade requests
 *   are answered 503.
 * - **Closing**: the listener closes: a new connection is refused, never
 *   accepted and then reset (Node's own `server.close()` is not used, because
 *   it destroys idle keep-alive sockets and resets a request on its way in).
 *   An idle keep-alive socket is ended (FIN) once it has been idle for
 *   `idleGrace` (default 100 ms): at once if it already was, after the rest of
 *   the grace if it just finished a response, since its client may be writing
 *   the next request; either way only after the event loop has had a turn to
 *   read a request already on the wire. A busy socket closes after its
 *   response. WebSockets get close frame 1001; their close handshakes are part
 *   of the drain. HTTP/2 sessions get GOAWAY, so their open streams finish.
 * - **Cutting** (the drain deadline): a request still in flight is answered
 *   503 with `Connection: close` if its headers were not sent, or its socket
 *   is destroyed if they were; a WebSocket is terminated. Each cut is in the
 *   report with method, path and age.
 * - **Releasing**: whatever socket is left is destroyed, so no keep-alive
 *   timeout holds the process.
 *
 * From Closing until the last connection closes, the open connections count
 * as one in-flight item, so the drain also waits for idle sockets to finish
 * their grace and for ended sockets to be closed by their peer: closing a
 * socket while a request the peer sent is still unread would reset it.
 *
 * @since 0.1.0
 */
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as NodeHttpServerRequest from "@effect/platform-node/NodeHttpServerRequest"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import type { LazyArg } from "effect/Function"
import * as HttpServer from "effect/http/HttpServer"
import * as HttpServerRequest from "effect/http/HttpServerRequest"
import type { HttpServerResponse } from "effect/http/HttpServerResponse"
import { ServeError } from "effect/http/HttpServerError"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import type * as Http from "node:http"
import type * as Http2 from "node:http2"
import type * as Https from "node:https"
import * as Net from "node:net"
import * as Health from "./Health.ts"
import { InFlight } from "./InFlight.ts"
import * as Lifecycle from "./Lifecycle.ts"
import * as Listen from "./Listen.ts"
import { millisOr } from "./internal/duration.ts"
import { DEFAULT_CLOSE_REASON, REFUSAL_RESPONSE, REFUSED_BODY } from "./internal/refusal.ts"
import * as Resource from "./Resource.ts"

/**
 * A Node server the guard understands.
 *
 * @since 0.1.0
 */
export type NodeServer = Http.Server | Https.Server | Http2.Http2Server | Http2.Http2SecureServer

/**
 * Options of {@link guard}.
 *
 * @since 0.1.0
 */
export interface GuardOptions {
  /** The name of the server in the shutdown report. Default `"http server"`. */
  readonly name?: string | undefined
  /** Health route paths, or `false` to leave health routes to the application. */
  readonly health?: false | Partial<Health.Paths> | undefined
  /** How long an idle keep-alive socket may have been idle before it is ended at Closing. Default 100 ms. */
  readonly idleGrace?: Duration.Input | undefined
  /** The reason sent with WebSocket close code 1001. Default `"server shutting down"`. */
  readonly webSocketCloseReason?: string | undefined
  /** @internal Set by {@link layerServer}: Effect request fibers join their records. */
  readonly attachFibers?: boolean | undefined
}

const noop = () => {}


/** `ws` keeps its WebSocket on the socket under a symbol described "websocket". */
interface WsLike {
  readonly close: (code: number, reason: string) => void
  readonly terminate: () => void
}
const webSocketOf = (socket: Net.Socket): WsLike | undefined => {
  for (const symbol of Object.getOwnPropertySymbols(socket)) {
    if (symbol.description === "websocket") {
      const value = (socket as unknown as Record<symbol, unknown>)[symbol]
      if (typeof value === "object" && value !== null && "close" in value && "terminate" in value) {
        return value as WsLike
      }
    }
  }
  return undefined
}

/** A close frame written by hand, for a WebSocket no `ws` instance owns. */
const closeFrame = (code: number, reason: string): Buffer => {
  const text = Buffer.from(reason.slice(0, 120))
  const frame = Buffer.alloc(4 + text.length)
  frame[0] = 0x88
  frame[1] = 2 + text.length
  frame.writeUInt16BE(code, 2)
  text.copy(frame, 4)
  return frame
}

/** After a cut, the application may still try to answer: let it, into the void. */
const neuter = (response: Http.ServerResponse) => {
  response.on("error", noop)
  const self = response as unknown as Record<string, unknown>
  self.writeHead = () => response
  self.setHeader = () => response
  self.write = () => true
  self.end = () => response
}

/**
 * Makes a Node server graceful for the life of the scope (see the module
 * docs for the exact semantics). The server's own listen and request
 * handling are untouched; call it before or after `listen`.
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
 * @since 0.1.0
 */
export const guard = (
  server: NodeServer,
  options: GuardOptions = {}
): Effect.Effect<void, never, Lifecycle.Lifecycle | InFlight | Health.Health | Scope.Scope> =>
  Effect.gen(function*() {
    const lifecycle = yield* Lifecycle.Lifecycle
    const inFlight = yield* InFlight
    const health = yield* Health.Health
    const name = options.name ?? "http server"
    const idleGraceMs = millisOr(options.idleGrace, 100)
    const isHttp2 = server.constructor.name.startsWith("Http2")
    const isTls = !isHttp2 && "setSecureContext" in server
    const state: GuardState = {
      lifecycle,
      inFlight,
      isHttp2,
      idleGraceMs,
      closeReason: options.webSocketCloseReason ?? DEFAULT_CLOSE_REASON,
      answerHealth: options.health === false
        ? undefined
        : Health.nodeHandler(health, lifecycle, { ...Health.defaultPaths, ...options.health }),
      connections: new Set(),
      sessions: new Set(),
      connectionsItem: undefined,
      attachFibers: options.attachFibers === true
    }
    const connectionEvent = isTls ? "secureConnection" : "connection"
    let listenerClosed = false
    // net.Server's close: stop accepting, and nothing else (Node's http close
    // would also destroy idle keep-alive sockets).
    const closeListener = () => {
      if (listenerClosed || !server.listening) return
      listenerClosed = true
      Net.Server.prototype.close.call(server as Net.Server, noop)
    }

    const originalEmit = server.emit as (this: NodeServer, event: string | symbol, ...args: Array<unknown>) => boolean
    // `arguments` rather than rest parameters: no array per event on the hot path.
    const emit = function(this: NodeServer, event: string | symbol): boolean {
      switch (event) {
        case "request":
        case "checkContinue":
          if (onRequest(state, arguments[1] as Http.IncomingMessage, arguments[2] as Http.ServerResponse)) return true
          break
        case "upgrade":
          if (onUpgrade(state, arguments[1] as Http.IncomingMessage, arguments[2] as Net.Socket)) return true
          break
        case connectionEvent:
          if (!isHttp2) connectionOf(state, arguments[1] as Net.Socket)
          break
        case "session": {
          const session = arguments[1] as Http2.ServerHttp2Session
          if (closing(state)) session.close()
          state.sessions.add(session)
          session.once("close", () => {
            state.sessions.delete(session)
            settle(state)
          })
          break
        }
      }
      return Reflect.apply(originalEmit, this, arguments) as boolean
    }
    ;(server as unknown as { emit: typeof emit }).emit = emit

    yield* Lifecycle.addHook(
      `${name}: connection close`,
      "Draining",
      Effect.sync(() => {
        for (const socket of state.connections) markLast(socket[kConnection]!)
      })
    )

    yield* Lifecycle.addHook(
      `${name}: close listener`,
      "Closing",
      Effect.sync(() => {
        closeListener()
        for (const socket of state.connections) {
          const connection = socket[kConnection]!
          if (connection.upgraded) closeUpgraded(state, connection)
          else scheduleEnd(state, connection)
        }
        for (const session of state.sessions) session.close()
        if (state.connections.size > 0 || state.sessions.size > 0) {
          const item = new ConnectionsItem(state, `${name} open connections`)
          if (inFlight.addUnsafe(item)) state.connectionsItem = item
        }
      })
    )

    yield* Resource.addFinalizer(
      name,
      Effect.sync(() => {
        destroyAll(state)
        closeListener()
        ;(server as unknown as { emit: typeof emit }).emit = originalEmit
      })
    )
  })

// -----------------------------------------------------------------------------
// The guard's bookkeeping. Per request and per connection it keeps one small
// record and registers shared listeners (they find their record through
// `this`), so that tracking costs no closure and no string per request.
// -----------------------------------------------------------------------------

interface GuardState {
  readonly lifecycle: Lifecycle.LifecycleService
  readonly inFlight: InFlight["Service"]
  readonly isHttp2: boolean
  readonly idleGraceMs: number
  readonly closeReason: string
  readonly answerHealth: ((request: Http.IncomingMessage, response: Http.ServerResponse) => boolean) | undefined
  readonly connections: Set<TrackedSocket>
  readonly sessions: Set<Http2.ServerHttp2Session>
  connectionsItem: ConnectionsItem | undefined
  /** Effect apps: request records are found from the request, to attach the handler's fiber. */
  attachFibers: boolean
}

const kConnection = Symbol.for("effect-graceful/http/connection")
const kRequest = Symbol.for("effect-graceful/http/request")

type TrackedSocket = Net.Socket & { [kConnection]?: Connection }
type TrackedResponse = Http.ServerResponse & { [kRequest]?: TrackedRequest | undefined }
type TrackedIncoming = Http.IncomingMessage & { [kRequest]?: TrackedRequest | undefined }

class Connection {
  readonly state: GuardState
  readonly socket: TrackedSocket
  /** Responses not yet finished. */
  pending = 0
  /** The newest of them: the one that carries `Connection: close` while draining. */
  last: Http.ServerResponse | undefined = undefined
  /** A response we marked `Connection: close` before a newer one arrived. */
  marked: Http.ServerResponse | undefined = undefined
  lastActiveAt: number
  upgraded = false
  ended = false
  cancelEnd: (() => void) | undefined = undefined
  constructor(state: GuardState, socket: TrackedSocket) {
    this.state = state
    this.socket = socket
    this.lastActiveAt = Date.now()
  }
}

class TrackedRequest implements InFlightItem {
  readonly kind: string
  readonly reportCut = true
  startedAt = 0
  readonly state: GuardState
  readonly request: Http.IncomingMessage
  readonly response: Http.ServerResponse | undefined
  readonly socket: Net.Socket
  readonly connection: Connection | undefined
  tracked = false
  /** The Effect fiber handling the request, when it is an Effect app. */
  fiber: Fiber.Fiber<unknown, unknown> | undefined = undefined
  constructor(
    state: GuardState,
    kind: string,
    request: Http.IncomingMessage,
    response: Http.ServerResponse | undefined,
    connection: Connection | undefined
  ) {
    this.state = state
    this.kind = kind
    this.request = request
    this.response = response
    this.socket = request.socket
    this.connection = connection
  }
  get label(): string {
    return `${this.request.method} ${Health.pathOf(this.request.url)}`
  }
  interrupt(): void {
    if (this.response !== undefined) {
      cutResponse(this.state, this.response)
    } else {
      const ws = webSocketOf(this.socket)
      if (ws !== undefined) ws.terminate()
      else this.socket.destroy()
    }
    this.fiber?.interruptUnsafe()
  }
}

/** The open connections from Closing on: one item, so the drain waits for them. */
class ConnectionsItem implements InFlightItem {
  readonly kind = "connections"
  readonly reportCut = false
  startedAt = 0
  readonly state: GuardState
  readonly label: string
  constructor(state: GuardState, label: string) {
    this.state = state
    this.label = label
  }
  interrupt(): void {
    // After the requests cut with it have flushed their 503s.
    setImmediate(destroyAll, this.state)
  }
}

type InFlightItem = import("./InFlight.ts").Item

const draining = (state: GuardState) => Lifecycle.isAtLeast(state.lifecycle.phaseUnsafe(), "Draining")
const closing = (state: GuardState) => Lifecycle.isAtLeast(state.lifecycle.phaseUnsafe(), "Closing")

function onSocketClose(this: TrackedSocket): void {
  const connection = this[kConnection]
  if (connection === undefined) return
  connection.cancelEnd?.()
  connection.state.connections.delete(this)
  settle(connection.state)
}

const connectionOf = (state: GuardState, socket: TrackedSocket): Connection => {
  let connection = socket[kConnection]
  if (connection === undefined) {
    connection = new Connection(state, socket)
    socket[kConnection] = connection
    state.connections.add(socket)
    socket.on("close", onSocketClose)
    if (closing(state)) scheduleEnd(state, connection)
  }
  return connection
}

const settle = (state: GuardState) => {
  if (state.connectionsItem !== undefined && state.connections.size === 0 && state.sessions.size === 0) {
    state.inFlight.removeUnsafe(state.connectionsItem)
    state.connectionsItem = undefined
  }
}

const destroyAll = (state: GuardState) => {
  for (const socket of state.connections) {
    socket[kConnection]?.cancelEnd?.()
    socket.destroy()
  }
  for (const session of state.sessions) session.destroy()
}

/**
 * `Connection: close` on the newest response queued on the connection; one
 * queued before it (pipelining) keeps the connection open for the next.
 */
const markLast = (connection: Connection) => {
  const last = connection.last
  const marked = connection.marked
  if (marked !== undefined && marked !== last && !marked.headersSent && !marked.writableEnded) {
    marked.removeHeader("connection")
  }
  connection.marked = undefined
  if (last !== undefined && !last.headersSent && !last.writableEnded) {
    last.setHeader("connection", "close")
    connection.marked = last
  }
}

/** Ends an idle socket once it has been idle for the grace, and the loop has read what is on the wire. */
const scheduleEnd = (state: GuardState, connection: Connection) => {
  if (connection.ended || connection.upgraded || connection.cancelEnd !== undefined) return
  if (connection.pending > 0) return markLast(connection)
  const end = () => {
    connection.cancelEnd = undefined
    if (connection.pending > 0 || connection.ended || connection.upgraded) return
    connection.ended = true
    connection.socket.end()
  }
  // Two turns of the loop: a poll phase runs between them, so the bytes of
  // a request already on the wire are read and parsed before we decide.
  let immediate: NodeJS.Immediate | undefined = setImmediate(() => {
    immediate = setImmediate(() => {
      immediate = undefined
      const wait = state.idleGraceMs - (Date.now() - connection.lastActiveAt)
      if (wait <= 0) return end()
      const timer = setTimeout(end, wait)
      timer.unref()
      connection.cancelEnd = () => {
        clearTimeout(timer)
        connection.cancelEnd = undefined
      }
    })
  })
  connection.cancelEnd = () => {
    if (immediate !== undefined) clearImmediate(immediate)
    connection.cancelEnd = undefined
  }
}

const cutResponse = (state: GuardState, response: Http.ServerResponse) => {
  if (!response.headersSent && !response.destroyed) {
    for (const header of response.getHeaderNames()) response.removeHeader(header)
    const headers: Http.OutgoingHttpHeaders = {
      "content-type": "text/plain",
      "content-length": REFUSED_BODY.length,
      "retry-after": "1"
    }
    if (!state.isHttp2) headers.connection = "close"
    response.writeHead(503, headers)
    response.end(REFUSED_BODY)
  } else {
    response.destroy()
  }
  neuter(response)
}

function onResponseClose(this: TrackedResponse): void {
  const tracked = this[kRequest]
  if (tracked === undefined) return
  this[kRequest] = undefined
  if (tracked.tracked) tracked.state.inFlight.removeUnsafe(tracked)
  const connection = tracked.connection
  if (connection === undefined) return
  connection.pending--
  if (connection.last === this) connection.last = undefined
  if (connection.marked === this) connection.marked = undefined
  connection.lastActiveAt = Date.now()
  if (closing(tracked.state)) scheduleEnd(tracked.state, connection)
}

const onRequest = (state: GuardState, request: Http.IncomingMessage, response: TrackedResponse): boolean => {
  const connection = state.isHttp2 ? undefined : connectionOf(state, request.socket)
  if (connection?.ended === true) {
    // The request crossed our FIN on the wire. Nothing can be written back
    // on an ended socket; writing would only turn the close into a reset.
    // Leave it unanswered: the client sees a clean close.
    neuter(response)
    return true
  }
  const tracked = new TrackedRequest(state, "request", request, response, connection)
  response[kRequest] = tracked
  if (state.attachFibers) (request as TrackedIncoming)[kRequest] = tracked
  response.on("close", onResponseClose)
  if (connection !== undefined) {
    connection.cancelEnd?.()
    connection.lastActiveAt = Date.now()
    connection.pending++
    connection.last = response
    if (draining(state)) markLast(connection)
  }
  // Probes count as activity on the connection but never hold the drain.
  if (state.answerHealth !== undefined && state.answerHealth(request, response)) return true
  if (!state.inFlight.addUnsafe(tracked)) {
    cutResponse(state, response)
    return true
  }
  tracked.tracked = true
  return false
}

function onUpgradedSocketClose(this: Net.Socket & { [kRequest]?: TrackedRequest | undefined }): void {
  const tracked = this[kRequest]
  if (tracked === undefined) return
  this[kRequest] = undefined
  tracked.state.inFlight.removeUnsafe(tracked)
}

const onUpgrade = (state: GuardState, request: Http.IncomingMessage, socket: Net.Socket): boolean => {
  socket.on("error", noop)
  if (draining(state)) {
    socket.end(REFUSAL_RESPONSE)
    return true
  }
  const connection = connectionOf(state, socket)
  connection.upgraded = true
  connection.cancelEnd?.()
  const isWebSocket = request.headers.upgrade?.toLowerCase() === "websocket"
  const tracked = new TrackedRequest(state, isWebSocket ? "websocket" : "upgrade", request, undefined, undefined)
  if (!state.inFlight.addUnsafe(tracked)) {
    socket.end(REFUSAL_RESPONSE)
    return true
  }
  ;(socket as Net.Socket & { [kRequest]?: TrackedRequest })[kRequest] = tracked
  if (state.attachFibers) (request as TrackedIncoming)[kRequest] = tracked
  socket.on("close", onUpgradedSocketClose)
  return false
}

const closeUpgraded = (state: GuardState, connection: Connection) => {
  const ws = webSocketOf(connection.socket)
  if (ws !== undefined) return ws.close(1001, state.closeReason)
  // An upgraded socket no `ws` owns (yet): if the handshake has been
  // answered, say goodbye in the protocol; otherwise leave it to the cut.
  if (connection.socket.bytesWritten > 0 && !connection.socket.destroyed) {
    connection.socket.end(closeFrame(1001, state.closeReason))
  }
}

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
 * @since 0.1.0
 */
export const serveNode = <S extends NodeServer>(
  evaluate: LazyArg<S>,
  options: Listen.ListenOptions & GuardOptions & Listen.SocketOptions
): Effect.Effect<
  { readonly server: S; readonly port: number },
  Error,
  Lifecycle.Lifecycle | InFlight | Health.Health | Scope.Scope
> =>
  Effect.gen(function*() {
    // An inherited socket (socket activation) replaces the port; see Listen.
    const listenOptions = yield* Listen.resolve(options, options)
    const server = evaluate()
    yield* guard(server, options)
    const { port } = yield* listen(server, listenOptions)
    return { server, port }
  })

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
 * @since 0.1.0
 */
export const layerServer = (
  evaluate: LazyArg<NodeServer>,
  options: NodeHttpServer.Options & GuardOptions & Listen.SocketOptions
): Layer.Layer<HttpServer.HttpServer, ServeError, Lifecycle.Lifecycle | InFlight | Health.Health> =>
  Layer.effect(
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
      yield* guard(server!, { ...options, attachFibers: true })
      return HttpServer.make({
        address: httpServer.address,
        // Each request's fiber joins its record, so a cut also interrupts the
        // handler: its finalizers (a transaction's rollback) run before the
        // resources it uses are released.
        serve: (app, middleware) => (httpServer.serve as Serve)(attachFiber(app), middleware)
      })
    })
  )

type Serve = Parameters<typeof HttpServer.make>[0]["serve"]

const attachFiber = <E, R>(
  app: Effect.Effect<HttpServerResponse, E, R | HttpServerRequest.HttpServerRequest>
): Effect.Effect<HttpServerResponse, E, R | HttpServerRequest.HttpServerRequest> =>
  Effect.withFiber((fiber) => {
    const request = Context.getOption(fiber.context, HttpServerRequest.HttpServerRequest)
    if (Option.isSome(request)) {
      const tracked = (NodeHttpServerRequest.toIncomingMessage(request.value) as TrackedIncoming)[kRequest]
      if (tracked !== undefined) tracked.fiber = fiber
    }
    return app
  })

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
 * @since 0.1.0
 */
export const layer = (
  evaluate: LazyArg<NodeServer>,
  options: NodeHttpServer.Options & GuardOptions & Listen.SocketOptions
) => Layer.mergeAll(layerServer(evaluate, options), NodeHttpServer.layerHttpServices)
