/**
 * The HTTP guard's connection bookkeeping: what `Http.guard` attaches to a
 * Node server (see `Http.ts` for the behaviour, phase by phase).
 *
 * Cost model. While the program is Ready the guard keeps one record per
 * connection and, per request, the time on it (and a pipelined response when
 * there is one): no allocation, no listener, nothing in the in-flight set. When the shutdown starts ({@link HttpGuard.startDrain})
 * it derives what is in flight from the state Node already keeps per socket
 * (the response being written, pipelined responses queued behind it, the
 * parser's state) and tracks precisely from then on: each request in flight
 * or arriving becomes an in-flight item with a `close` listener, so the
 * drain waits for it, a cut answers it, and the report names it.
 *
 * HTTP/2 requests and upgrades are tracked one by one from the start: a
 * session multiplexes streams the guard cannot see from the socket.
 *
 * @internal
 */
import type * as Clock from "effect/Clock"
import type * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import type * as Http from "node:http"
import type * as Http2 from "node:http2"
import * as Net from "node:net"
import { type InFlightRegistryService, type Item, pathOf } from "../Adapter.ts"
import { REFUSAL_RESPONSE, REFUSED_BODY } from "./refusal.ts"

/** What the guard is told once, when it is attached. */
export interface Settings {
  readonly name: string
  readonly inFlight: InFlightRegistryService
  readonly clock: Clock.Clock
  /** Runs the grace timers on the program's clock (a `TestClock` in tests). */
  readonly context: Context.Context<never>
  readonly isHttp2: boolean
  readonly idleGraceMs: number
  readonly newConnectionGraceMs: number
  readonly closeReason: string
  readonly answerHealth: ((request: Http.IncomingMessage, response: Http.ServerResponse) => boolean) | undefined
  /**
   * Effect apps: a cut must interrupt the handler's fiber. `NodeHttpServer`
   * interrupts it when the response closes before it was ended, so the cut
   * answers 503 on the socket itself and leaves the response unended.
   */
  readonly cutThroughSocket: boolean
  /**
   * Whether the listener may shrink its accept backlog before closing. Not
   * for a listening socket shared with another process (socket activation):
   * the backlog is the kernel socket's, shared by both.
   */
  readonly shrinkBacklog: boolean
}

const READY = 0
const DRAINING = 1
const CLOSING = 2
type Mode = typeof READY | typeof DRAINING | typeof CLOSING

/** At most this many turns of the loop to accept what the kernel queued before the listener closes. */
const MAX_ACCEPT_TURNS = 1024

const kConnection = Symbol.for("effect-graceful/http/connection")
const kRequest = Symbol.for("effect-graceful/http/request")

type TrackedSocket = Net.Socket & {
  [kConnection]?: Connection
  /** Node's: the response being written on the socket. */
  _httpMessage?: Http.ServerResponse | null
  /** Node's: the socket's HTTP parser. */
  parser?: unknown
}
type TrackedResponse = Http.ServerResponse & { [kRequest]?: TrackedRequest | undefined }
type UpgradedSocket = Net.Socket & { [kRequest]?: TrackedRequest | undefined }

const noop = () => {}

/** Node's list of HTTP/1 connections (what `server.closeIdleConnections` reads). */
interface ConnectionsList {
  readonly active: () => ReadonlyArray<{ readonly socket?: unknown }>
}
const connectionsListOf = (server: object): ConnectionsList | undefined => {
  for (const symbol of Object.getOwnPropertySymbols(server)) {
    if (symbol.description === "http.server.connections") {
      const list = (server as Record<symbol, unknown>)[symbol]
      if (typeof list === "object" && list !== null && typeof (list as ConnectionsList).active === "function") {
        return list as ConnectionsList
      }
    }
  }
  return undefined
}

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

/** Node's fields of a response whose head is written but not yet on the wire. */
interface QueuedResponse {
  _header: string | null
  _last: boolean
  shouldKeepAlive: boolean
  outputData: Array<{ data: unknown }>
  socket: Net.Socket | null
}

const KEEP_ALIVE_HEAD = /\r\nconnection: keep-alive\r\n(?:keep-alive: [^\r]*\r\n)?/i

/**
 * A pipelined response whose handler finished before the shutdown started:
 * its head is written, but it waits in Node's queue behind the response
 * being sent. Rewrites `Connection: keep-alive` to `close` in the queued
 * head, and tells Node to close the connection after it.
 */
const closeQueuedHead = (response: Http.ServerResponse): void => {
  const queued = response as unknown as QueuedResponse
  const head = queued._header
  const first = queued.outputData?.[0]
  if (queued.socket != null || head == null || first === undefined || typeof first.data !== "string") return
  if (!first.data.startsWith(head)) return
  const closing = head.replace(KEEP_ALIVE_HEAD, "\r\nConnection: close\r\n")
  if (closing === head) return
  first.data = closing + first.data.slice(head.length)
  queued._header = closing
  queued._last = true
  queued.shouldKeepAlive = false
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

/** One HTTP/1 connection (or one upgraded socket). */
class Connection {
  readonly guard: HttpGuard
  readonly socket: TrackedSocket
  readonly acceptedAt: number
  /** Ready: when the newest request arrived. From the drain on: when the connection last did anything. */
  lastActiveAt: number
  /** From the drain on: the newest response on the connection. */
  last: Http.ServerResponse | undefined = undefined
  /** Ready only: responses queued behind the one being written (pipelining). */
  queued: Array<Http.ServerResponse> | undefined = undefined
  /** From the drain on: responses not yet closed. */
  pending = 0
  /** From the drain on: the requests followed on this connection, until their responses close. */
  followed: Set<TrackedRequest> | undefined = undefined
  /** A response marked `Connection: close` before a newer one arrived. */
  marked: Http.ServerResponse | undefined = undefined
  upgraded = false
  ended = false
  /** Waiting in the guard's end queue (decided two turns after it was scheduled). */
  endQueued = false
  /** Waiting out its grace. */
  graceFiber: Fiber.Fiber<void> | undefined = undefined
  constructor(guard: HttpGuard, socket: TrackedSocket, now: number) {
    this.guard = guard
    this.socket = socket
    this.acceptedAt = now
    this.lastActiveAt = now
  }
}

/** A request (or upgrade) in the in-flight set. */
class TrackedRequest implements Item {
  readonly kind: string
  readonly reportCut = true
  startedAt = 0
  readonly guard: HttpGuard
  readonly request: Http.IncomingMessage
  readonly response: Http.ServerResponse | undefined
  readonly socket: Net.Socket
  readonly connection: Connection | undefined
  /** In the in-flight set (health probes are followed, never waited for). */
  tracked = false
  constructor(
    guard: HttpGuard,
    kind: string,
    request: Http.IncomingMessage,
    response: Http.ServerResponse | undefined,
    connection: Connection | undefined
  ) {
    this.guard = guard
    this.kind = kind
    this.request = request
    this.response = response
    this.socket = request.socket
    this.connection = connection
  }
  get label(): string {
    return `${this.request.method} ${pathOf(this.request.url)}`
  }
  interrupt(): void {
    if (this.response !== undefined) return this.guard.cutResponse(this.response)
    const ws = webSocketOf(this.socket)
    if (ws !== undefined) ws.terminate()
    else this.socket.destroy()
  }
}

/** The open connections from Closing on: one item, so the drain waits for them. */
class ConnectionsItem implements Item {
  readonly kind = "connections"
  readonly reportCut = false
  startedAt = 0
  readonly guard: HttpGuard
  readonly label: string
  constructor(guard: HttpGuard, label: string) {
    this.guard = guard
    this.label = label
  }
  interrupt(): void {
    // After the requests cut with it have flushed their 503s.
    setImmediate(() => this.guard.destroyAll())
  }
}

/** An idle connection whose grace is over: FIN. */
const end = (connection: Connection) => {
  connection.ended = true
  connection.socket.end()
}

/** The connection is busy again (or gone): it is not ended. */
const cancelEnd = (connection: Connection) => {
  connection.endQueued = false
  if (connection.graceFiber !== undefined) {
    connection.graceFiber.interruptUnsafe()
    connection.graceFiber = undefined
  }
}

function onSocketClose(this: TrackedSocket): void {
  const connection = this[kConnection]
  if (connection === undefined) return
  cancelEnd(connection)
  // Responses still queued when the connection closed (pipelined behind one
  // that said close) are never sent, and Node does not close them: done.
  if (connection.followed !== undefined) {
    for (const tracked of connection.followed) {
      neuter(tracked.response!)
      onResponseClose.call(tracked.response!)
    }
  }
  connection.guard.connections.delete(this)
  connection.guard.settle()
}

function onResponseClose(this: TrackedResponse): void {
  const tracked = this[kRequest]
  if (tracked === undefined) return
  this[kRequest] = undefined
  const guard = tracked.guard
  if (tracked.tracked) guard.inFlight.removeUnsafe(tracked)
  const connection = tracked.connection
  if (connection === undefined) return
  connection.followed?.delete(tracked)
  connection.pending--
  if (connection.last === this) connection.last = undefined
  if (connection.marked === this) connection.marked = undefined
  connection.lastActiveAt = guard.now()
  if (guard.mode === CLOSING) guard.scheduleEnd(connection)
}

function onUpgradedSocketClose(this: UpgradedSocket): void {
  const tracked = this[kRequest]
  if (tracked === undefined) return
  this[kRequest] = undefined
  tracked.guard.inFlight.removeUnsafe(tracked)
}

/**
 * The guard of one server. Its hooks are called by `Http.guard`: the event
 * handlers from the server's `emit`, {@link startDrain} at Draining (or
 * whichever shutdown step comes first), {@link startClosing} at Closing,
 * {@link release} when the resource is released.
 */
export class HttpGuard {
  readonly name: string
  readonly inFlight: InFlightRegistryService
  readonly clock: Clock.Clock
  readonly settings: Settings
  readonly server: Net.Server
  readonly connections = new Set<TrackedSocket>()
  readonly sessions = new Set<Http2.ServerHttp2Session>()
  /** TLS: raw sockets still in their handshake (no HTTP yet). */
  readonly handshaking = new Set<Net.Socket>()
  mode: Mode = READY
  connectionsItem: ConnectionsItem | undefined = undefined
  /** The listener is closed (or closing has been scheduled and has run). */
  listenerClosed = false
  private closeScheduled = false
  /** Connections accepted so far (raw TCP accepts). */
  accepted = 0
  /** Node's connections list: set up when the server starts listening. */
  private connectionsList: ConnectionsList | undefined = undefined
  /** Ready only: health probes answered, so the drain never waits for one. */
  private readonly probes = new WeakSet<Http.ServerResponse>()

  constructor(server: Net.Server, settings: Settings) {
    this.server = server
    this.settings = settings
    this.name = settings.name
    this.inFlight = settings.inFlight
    this.clock = settings.clock
  }

  now(): number {
    return this.clock.currentTimeMillisUnsafe()
  }

  // ---------------------------------------------------------------------------
  // Server events
  // ---------------------------------------------------------------------------

  onConnection(socket: TrackedSocket): void {
    if (socket[kConnection] !== undefined) return
    const connection = new Connection(this, socket, this.now())
    socket[kConnection] = connection
    this.connections.add(socket)
    socket.on("close", onSocketClose)
    if (this.mode === CLOSING) this.scheduleEnd(connection)
  }

  /** Any accepted TCP connection (before TLS, if any). */
  onAccept(): void {
    this.accepted++
  }

  /** TLS: a raw socket, before its handshake; destroyed at release if it is still there. */
  onRawConnection(socket: Net.Socket): void {
    this.handshaking.add(socket)
    socket.once("close", () => this.handshaking.delete(socket))
  }

  onSession(session: Http2.ServerHttp2Session): void {
    if (this.mode === CLOSING) session.close()
    this.sessions.add(session)
    session.once("close", () => {
      this.sessions.delete(session)
      this.settle()
    })
  }

  /** Returns true when the guard answered the request itself. */
  onRequest(request: Http.IncomingMessage, response: Http.ServerResponse): boolean {
    const connection = this.settings.isHttp2 ? undefined : (request.socket as TrackedSocket)[kConnection]
    if (this.mode === READY && connection !== undefined) {
      // The steady state: the time, and a response only when it waits behind
      // another (pipelining). The one being written is Node's `_httpMessage`;
      // holding no reference lets a finished response be collected.
      connection.lastActiveAt = this.clock.currentTimeMillisUnsafe()
      if ((request.socket as TrackedSocket)._httpMessage === response) {
        if (connection.queued !== undefined) connection.queued = undefined
      } else {
        ;(connection.queued ??= []).push(response)
      }
      if (this.settings.answerHealth === undefined || !this.settings.answerHealth(request, response)) return false
      this.probes.add(response)
      return true
    }
    return this.onTrackedRequest(request, response, connection)
  }

  private onTrackedRequest(
    request: Http.IncomingMessage,
    response: Http.ServerResponse,
    connection: Connection | undefined
  ): boolean {
    if (connection?.ended === true) {
      // The request crossed our FIN on the wire. Nothing can be written back
      // on an ended socket; writing would only turn the close into a reset.
      // Leave it unanswered: the client sees a clean close.
      neuter(response)
      return true
    }
    const tracked = this.follow(request, response, connection)
    if (connection !== undefined) {
      cancelEnd(connection)
      connection.lastActiveAt = this.now()
      connection.last = response
      if (this.mode !== READY) this.markLast(connection)
    }
    // Probes count as activity on the connection but never hold the drain.
    if (this.settings.answerHealth !== undefined && this.settings.answerHealth(request, response)) return true
    return !this.enter(tracked)
  }

  /** Follows a response to its close (from the drain on, and HTTP/2 always). */
  private follow(request: Http.IncomingMessage, response: TrackedResponse, connection: Connection | undefined) {
    const tracked = new TrackedRequest(this, "request", request, response, connection)
    response[kRequest] = tracked
    response.on("close", onResponseClose)
    if (connection !== undefined) {
      connection.pending++
      ;(connection.followed ??= new Set()).add(tracked)
    }
    return tracked
  }

  /** Enters a followed request into the in-flight set; a refused one is cut. */
  private enter(tracked: TrackedRequest): boolean {
    if (!this.inFlight.addUnsafe(tracked)) {
      this.cutResponse(tracked.response!)
      return false
    }
    tracked.tracked = true
    return true
  }

  /** Returns true when the guard answered the upgrade itself. */
  onUpgrade(request: Http.IncomingMessage, socket: UpgradedSocket): boolean {
    socket.on("error", noop)
    if (this.mode !== READY) {
      socket.end(REFUSAL_RESPONSE)
      return true
    }
    let connection = (socket as TrackedSocket)[kConnection]
    if (connection === undefined) {
      this.onConnection(socket)
      connection = (socket as TrackedSocket)[kConnection]!
    }
    connection.upgraded = true
    cancelEnd(connection)
    const isWebSocket = request.headers.upgrade?.toLowerCase() === "websocket"
    const tracked = new TrackedRequest(this, isWebSocket ? "websocket" : "upgrade", request, undefined, undefined)
    if (!this.inFlight.addUnsafe(tracked)) {
      socket.end(REFUSAL_RESPONSE)
      return true
    }
    socket[kRequest] = tracked
    socket.on("close", onUpgradedSocketClose)
    return false
  }

  // ---------------------------------------------------------------------------
  // Shutdown steps
  // ---------------------------------------------------------------------------

  /**
   * From Ready to precise tracking: every response not yet finished becomes
   * an in-flight item (ages from its request's arrival), and the newest
   * response of each connection says `Connection: close`. Runs once, at the
   * first shutdown step that reaches the guard.
   */
  startDrain(): void {
    if (this.mode !== READY) return
    this.mode = DRAINING
    for (const socket of this.connections) {
      const connection = socket[kConnection]!
      if (connection.upgraded) continue
      this.adopt(connection, socket._httpMessage)
      if (connection.queued !== undefined) {
        for (const response of connection.queued) this.adopt(connection, response)
        connection.queued = undefined
      }
      this.markLast(connection)
    }
  }

  private adopt(connection: Connection, response: TrackedResponse | null | undefined): void {
    if (response == null || response[kRequest] !== undefined || response.writableFinished || response.destroyed) return
    const tracked = this.follow(response.req, response, connection)
    connection.last = response
    if (this.probes.has(response)) return
    if (this.enter(tracked)) tracked.startedAt = connection.lastActiveAt
  }

  /**
   * Closing: accept what the kernel has queued, then close the listener;
   * end idle connections after their grace; close WebSockets (1001) and
   * HTTP/2 sessions (GOAWAY). The open connections become one in-flight item.
   */
  startClosing(): void {
    this.startDrain()
    if (this.mode === CLOSING) return
    this.mode = CLOSING
    this.closeListener()
    for (const socket of this.connections) {
      const connection = socket[kConnection]!
      if (connection.upgraded) this.closeUpgraded(connection)
      else this.scheduleEnd(connection)
    }
    for (const session of this.sessions) session.close()
    if (this.connections.size > 0 || this.sessions.size > 0 || !this.listenerClosed) {
      const item = new ConnectionsItem(this, `${this.name} open connections`)
      if (this.inFlight.addUnsafe(item)) this.connectionsItem = item
    }
  }

  /**
   * Stops accepting without resetting what the kernel already queued: the
   * backlog shrinks first (new SYNs are dropped, so the client's retry meets
   * a closed port), a poll phase runs to accept what is queued (each such
   * connection is served with `Connection: close`), then the listener
   * closes. `net.Server`'s close only: `http.Server`'s would also destroy
   * idle keep-alive sockets.
   */
  closeListener(): void {
    if (this.closeScheduled) return
    this.closeScheduled = true
    if (!this.server.listening) {
      this.listenerClosed = true
      return
    }
    if (this.settings.shrinkBacklog) {
      const handle = (this.server as unknown as { _handle?: { listen?: (backlog: number) => number } })._handle
      try {
        handle?.listen?.(0)
      } catch {
        // A handle that cannot listen again (a cluster worker's): nothing to shrink.
      }
    }
    // libuv accepts one queued connection per turn of the loop: turn it
    // until two turns in a row accept nothing (bounded, should SYNs still
    // get in).
    let seen = this.accepted
    let quiet = 0
    let turns = 0
    const turn = () => {
      if (this.accepted !== seen) {
        seen = this.accepted
        quiet = 0
      } else {
        quiet++
      }
      if (quiet >= 2 || ++turns >= MAX_ACCEPT_TURNS || this.listenerClosed) {
        this.closeListenerNow()
        this.settle()
        return
      }
      setImmediate(turn)
    }
    setImmediate(turn)
  }

  closeListenerNow(): void {
    if (this.listenerClosed) return
    this.listenerClosed = true
    if (this.server.listening) Net.Server.prototype.close.call(this.server, noop)
  }

  /** Leaves the in-flight set once the listener is closed and the last connection is gone. */
  settle(): void {
    if (
      this.connectionsItem !== undefined && this.listenerClosed && this.connections.size === 0 &&
      this.sessions.size === 0
    ) {
      this.inFlight.removeUnsafe(this.connectionsItem)
      this.connectionsItem = undefined
    }
  }

  /**
   * Release, first step: answer what is still unanswered and close the
   * listener. Then (a turn later, so the 503s are flushed) {@link destroyAll}
   * destroys whatever socket is left, so no keep-alive timeout holds the
   * process.
   */
  release(): void {
    // After a defect the drain was skipped: what is still unanswered is
    // entered now, found cut on arrival (reported), and answered 503.
    this.startDrain()
    this.mode = CLOSING
    this.closeListenerNow()
  }

  destroyAll(): void {
    for (const socket of this.connections) {
      const connection = socket[kConnection]
      if (connection !== undefined) cancelEnd(connection)
      socket.destroy()
    }
    for (const session of this.sessions) session.destroy()
    for (const socket of this.handshaking) socket.destroy()
  }

  // ---------------------------------------------------------------------------
  // Per connection
  // ---------------------------------------------------------------------------

  /**
   * `Connection: close` on the newest response queued on the connection; one
   * queued before it (pipelining) keeps the connection open for the next,
   * since HTTP/1.1 lets nothing follow a response that says close.
   */
  markLast(connection: Connection): void {
    const last = connection.last
    const marked = connection.marked
    if (marked !== undefined && marked !== last && !marked.headersSent && !marked.writableEnded) {
      marked.removeHeader("connection")
    }
    connection.marked = undefined
    if (last === undefined) return
    if (!last.headersSent) {
      last.setHeader("connection", "close")
      connection.marked = last
    } else {
      closeQueuedHead(last)
    }
  }

  /**
   * Ends an idle connection with a FIN once its grace is over, after the
   * loop has read what is on the wire. The grace: `idleGrace` since its last
   * response (its client may be writing the next request now), or
   * `newConnectionGrace` since it was accepted if it has sent nothing yet.
   * A connection holding part of a request is not idle: its request will be
   * answered (or cut at the drain deadline). Connections scheduled in the
   * same turn are decided together.
   */
  scheduleEnd(connection: Connection): void {
    if (connection.ended || connection.upgraded || connection.endQueued || connection.graceFiber !== undefined) return
    if (connection.pending > 0) return this.markLast(connection)
    connection.endQueued = true
    this.endQueue.push(connection)
    if (this.endQueue.length > 1) return
    // Two turns of the loop: a poll phase runs between them, so the bytes of
    // a request already on the wire are read and parsed before we decide.
    setImmediate(() => setImmediate(() => this.decideEnds()))
  }

  private readonly endQueue: Array<Connection> = []

  private decideEnds(): void {
    const batch = this.endQueue.splice(0)
    const receiving = this.receivingSockets()
    const now = this.now()
    for (const connection of batch) {
      if (!connection.endQueued) continue
      connection.endQueued = false
      if (!this.idle(connection, receiving)) continue
      const graceEnd = connection.socket.bytesRead === 0
        ? connection.acceptedAt + this.settings.newConnectionGraceMs
        : connection.lastActiveAt + this.settings.idleGraceMs
      const wait = graceEnd - now
      if (wait <= 0) {
        end(connection)
        continue
      }
      connection.graceFiber = Effect.runForkWith(this.settings.context)(
        this.clock.sleep(Duration.millis(wait)).pipe(Effect.andThen(Effect.sync(() => {
          connection.graceFiber = undefined
          if (this.idle(connection, this.receivingSockets())) end(connection)
        })))
      )
    }
  }

  private idle(connection: Connection, receiving: ReadonlySet<unknown> | undefined): boolean {
    if (connection.pending > 0 || connection.ended || connection.upgraded) return false
    return connection.socket.bytesRead === 0 || receiving === undefined || !receiving.has(connection.socket)
  }

  /** The sockets holding bytes of a request not yet complete (Node's active connections). */
  private receivingSockets(): ReadonlySet<unknown> | undefined {
    if (this.settings.isHttp2) return undefined
    this.connectionsList ??= connectionsListOf(this.server)
    if (this.connectionsList === undefined) return undefined
    const sockets = new Set<unknown>()
    for (const parser of this.connectionsList.active()) sockets.add(parser.socket)
    return sockets
  }

  closeUpgraded(connection: Connection): void {
    const ws = webSocketOf(connection.socket)
    if (ws !== undefined) return ws.close(1001, this.settings.closeReason)
    // An upgraded socket no `ws` owns (yet): if the handshake has been
    // answered, say goodbye in the protocol; otherwise leave it to the cut.
    if (connection.socket.bytesWritten > 0 && !connection.socket.destroyed) {
      connection.socket.end(closeFrame(1001, this.settings.closeReason))
    }
  }

  /**
   * A cut: 503 with `Connection: close` if nothing was sent yet, otherwise
   * the socket is destroyed (the client must not take a truncated body for
   * a whole one).
   */
  cutResponse(response: Http.ServerResponse): void {
    if (response.headersSent || response.destroyed) {
      response.destroy()
    } else if (this.settings.cutThroughSocket && !this.settings.isHttp2) {
      const socket = response.socket as TrackedSocket | null
      if (socket !== null && socket._httpMessage === response && !socket.destroyed) {
        // The response stays unended, so `NodeHttpServer` interrupts its
        // handler when the socket closes.
        socket.end(REFUSAL_RESPONSE)
      } else {
        response.destroy()
      }
    } else {
      for (const header of response.getHeaderNames()) response.removeHeader(header)
      const headers: Http.OutgoingHttpHeaders = {
        "content-type": "text/plain",
        "content-length": REFUSED_BODY.length,
        "retry-after": "1"
      }
      if (!this.settings.isHttp2) headers.connection = "close"
      response.writeHead(503, headers)
      response.end(REFUSED_BODY)
    }
    neuter(response)
  }
}
