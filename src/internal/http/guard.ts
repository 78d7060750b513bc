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
import * as Http from "node:http"
import type * as Http2 from "node:http2"
import * as Net from "node:net"
import { type InFlightRegistryService, type Item, pathOf } from "../../Adapter.ts"
import {
  closeQueuedHead,
  closesConnection,
  type ConnectionsList,
  connectionsListOf,
  currentResponse,
  listenHandle,
  reopenQueuedHead,
  webSocketOf
} from "./nodeInternals.ts"
import { REFUSAL_RESPONSE, REFUSED_BODY, REQUEST_TIMEOUT_RESPONSE } from "./refusal.ts"

/** What the guard is told once, when it is attached. */
export interface Settings {
  readonly name: string
  readonly inFlight: InFlightRegistryService
  readonly clock: Clock.Clock
  /** Runs the grace timers on the program's clock (a `TestClock` in tests). */
  readonly context: Context.Context<never>
  readonly isHttp2: boolean
  readonly isTls: boolean
  readonly idleGraceMs: number
  readonly newConnectionGraceMs: number
  /** How long an ended socket waits for its peer's FIN before it is destroyed. */
  readonly lingerMs: number
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

/** Where the guard is in the shutdown. */
type Mode = "Ready" | "Draining" | "Closing"

/**
 * One HTTP/1 connection's state, as the guard sees it:
 * - `Open`: serving (busy or idle);
 * - `Upgraded`: handed to a WebSocket (or another protocol);
 * - `Closing`: a response that says `Connection: close` has finished: Node
 *   ends the socket, and nothing read after it can be answered;
 * - `Ended`: the guard sent FIN (idle, or 408) and lingers for the peer's.
 */
type ConnectionState =
  | { readonly _tag: "Open" }
  | { readonly _tag: "Upgraded" }
  | { readonly _tag: "Closing" }
  | { readonly _tag: "Ended"; readonly at: number }

const OPEN: ConnectionState = { _tag: "Open" }
const UPGRADED: ConnectionState = { _tag: "Upgraded" }
const CLOSING_STATE: ConnectionState = { _tag: "Closing" }

/** At most this many turns of the loop to accept what the kernel queued before the listener closes. */
const MAX_ACCEPT_TURNS = 1024

const kConnection = Symbol.for("effect-graceful/http/connection")
const kRequest = Symbol.for("effect-graceful/http/request")

type TrackedSocket = Net.Socket & { [kConnection]?: Connection }
type TrackedResponse = Http.ServerResponse & { [kRequest]?: TrackedRequest | undefined; [kForcedClose]?: boolean }
const kForcedClose = Symbol.for("effect-graceful/http/forced-close")
type UpgradedSocket = Net.Socket & { [kRequest]?: TrackedRequest | undefined }

const noop = () => {}

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
  state: ConnectionState = OPEN
  /** Waiting in the guard's end queue (decided two turns after it was scheduled). */
  endQueued = false
  /** Waiting out its grace (or, ended, its linger). */
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

/**
 * An idle connection whose grace is over: FIN (after `farewell`, a 408),
 * then a bounded linger for the peer's FIN, as Go's and nginx's lingering
 * close do; a peer that never closes its side is destroyed after it.
 */
const end = (connection: Connection, farewell?: string) => {
  const guard = connection.guard
  connection.state = { _tag: "Ended", at: guard.now() }
  if (farewell !== undefined) connection.socket.end(farewell)
  else connection.socket.end()
  guard.linger(connection)
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
      responseClosed(tracked.response!)
    }
  }
  connection.guard.connections.delete(this)
  connection.guard.lingering.delete(connection)
  connection.guard.settle()
}

function onResponseClose(this: TrackedResponse): void {
  responseClosed(this)
}

const responseClosed = (response: TrackedResponse): void => {
  const tracked = response[kRequest]
  if (tracked === undefined) return
  response[kRequest] = undefined
  const guard = tracked.guard
  if (tracked.tracked) guard.inFlight.removeUnsafe(tracked)
  const connection = tracked.connection
  if (connection === undefined) return
  connection.followed?.delete(tracked)
  connection.pending--
  if (connection.last === response) connection.last = undefined
  // Node ends the socket after a response that says close: a request read
  // after it could never be answered.
  if (connection.state._tag === "Open" && closesConnection(response)) connection.state = CLOSING_STATE
  connection.lastActiveAt = guard.now()
  if (guard.mode === "Closing") guard.scheduleEnd(connection)
}

const nodeWriteHead = Http.ServerResponse.prototype.writeHead as (
  this: Http.ServerResponse,
  ...args: Array<unknown>
) => Http.ServerResponse

const isConnectionHeader = (name: unknown) => typeof name === "string" && name.toLowerCase() === "connection"

/** The handler's headers without any `Connection` entry (object, flat array or array of pairs). */
const withoutConnection = (headers: unknown): unknown => {
  if (Array.isArray(headers)) {
    if (headers.length > 0 && Array.isArray(headers[0])) {
      return headers.filter((pair: ReadonlyArray<unknown>) => !isConnectionHeader(pair[0]))
    }
    const kept: Array<unknown> = []
    for (let i = 0; i + 1 < headers.length; i += 2) {
      if (!isConnectionHeader(headers[i])) kept.push(headers[i], headers[i + 1])
    }
    return kept
  }
  if (typeof headers === "object" && headers !== null) {
    const kept: Record<string, unknown> = {}
    for (const [name, value] of Object.entries(headers)) if (!isConnectionHeader(name)) kept[name] = value
    return kept
  }
  return headers
}

/**
 * Every head a followed response writes goes through here (Node's implicit
 * head calls \`writeHead\` too). The newest response of the connection says
 * exactly one \`Connection: close\`, whatever the handler set
 * (\`keep-alive\`, \`appendHeader\`, \`Upgrade\` on a 426).
 */
function guardedWriteHead(this: TrackedResponse, statusCode: number, ...rest: Array<unknown>): Http.ServerResponse {
  const connection = this[kRequest]?.connection
  if (connection === undefined || connection.last !== this || this.headersSent) {
    return nodeWriteHead.call(this, statusCode, ...rest)
  }
  // `writeHead(status, reason, headers)` with `reason` undefined is the
  // three-argument form too (Effect's NodeHttpServer passes `statusText`,
  // often undefined): the headers are where the arity says, not the type.
  const withReason = rest.length >= 2 || typeof rest[0] === "string"
  const headers = withoutConnection(withReason ? rest[1] : rest[0])
  const own = this.getHeader("connection")
  if (!(typeof own === "string" && own.toLowerCase() === "close")) this[kForcedClose] = true
  this.removeHeader("connection")
  this.setHeader("connection", "close")
  return withReason
    ? nodeWriteHead.call(this, statusCode, rest[0], headers)
    : nodeWriteHead.call(this, statusCode, headers)
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
  mode: Mode = "Ready"
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
  /** TLS: when each raw socket still in its handshake was accepted. */
  private readonly acceptedAt = new WeakMap<Net.Socket, number>()
  /** When Closing started (clock milliseconds). */
  private closingAt = 0
  /** Requests lost without an answer a client can use, by kind (reported at release). */
  readonly lost = new Map<string, number>()
  /** Pipelined requests not read because the connection was already closing (the client retries them). */
  unread = 0
  /** Ended sockets destroyed after the linger (their peer never closed its side). */
  lingered = 0
  /** Ended connections waiting for their peer's FIN; one sweep for all of them. */
  readonly lingering = new Set<Connection>()
  private lingerSweep: Fiber.Fiber<void> | undefined = undefined

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

  /** Runs `f` after `millis` on the program's clock; interrupt the fiber to cancel. */
  after(millis: number, f: () => void): Fiber.Fiber<void> {
    return Effect.runForkWith(this.settings.context)(
      this.clock.sleep(Duration.millis(Math.max(0, millis))).pipe(Effect.andThen(Effect.sync(f)))
    )
  }

  /** An ended connection waits at most `linger` for its peer's FIN (one timer for all, not one each). */
  linger(connection: Connection): void {
    this.lingering.add(connection)
    if (this.lingerSweep === undefined) this.scheduleSweep(this.settings.lingerMs)
  }

  private scheduleSweep(millis: number): void {
    this.lingerSweep = this.after(millis, () => {
      this.lingerSweep = undefined
      const now = this.now()
      let next = Infinity
      for (const connection of this.lingering) {
        const state = connection.state
        if (connection.socket.destroyed || state._tag !== "Ended") {
          this.lingering.delete(connection)
          continue
        }
        const wait = state.at + this.settings.lingerMs - now
        if (wait > 0) {
          next = Math.min(next, wait)
          continue
        }
        this.lingering.delete(connection)
        this.lingered++
        connection.socket.destroy()
      }
      if (this.lingering.size > 0) this.scheduleSweep(next === Infinity ? this.settings.lingerMs : next)
    })
  }

  private addLost(kind: string): void {
    this.lost.set(kind, (this.lost.get(kind) ?? 0) + 1)
  }

  // ---------------------------------------------------------------------------
  // Server events
  // ---------------------------------------------------------------------------

  onConnection(socket: TrackedSocket): void {
    if (socket[kConnection] !== undefined) return
    if (this.settings.isTls) {
      // The handshake is over: from now on an HTTP connection like any other.
      const raw = (socket as unknown as { _parent?: Net.Socket | null })._parent
      if (raw != null) this.handshaking.delete(raw)
    }
    const connection = new Connection(this, socket, this.now())
    socket[kConnection] = connection
    this.connections.add(socket)
    socket.on("close", onSocketClose)
    if (this.mode === "Closing") this.scheduleEnd(connection)
  }

  /** Any accepted TCP connection (before TLS, if any). */
  onAccept(): void {
    this.accepted++
  }

  /** TLS: a raw socket, before its handshake; destroyed at release if it is still there. */
  onRawConnection(socket: Net.Socket): void {
    this.handshaking.add(socket)
    this.acceptedAt.set(socket, this.now())
    socket.once("close", () => {
      if (this.handshaking.delete(socket)) this.settle()
    })
    if (this.mode === "Closing") this.boundHandshake(socket)
  }

  /**
   * Closing: a TLS connection accepted before the listener closed is within
   * the new-connection grace, like a plain one; one whose handshake is not
   * over by then is destroyed (it has sent no request).
   */
  private boundHandshake(socket: Net.Socket): void {
    const graceEnd = Math.max(this.acceptedAt.get(socket) ?? this.closingAt, this.closingAt) +
      this.settings.newConnectionGraceMs
    this.after(graceEnd - this.now(), () => {
      if (this.handshaking.has(socket)) socket.destroy()
    })
  }

  onSession(session: Http2.ServerHttp2Session): void {
    if (this.mode === "Closing") session.close()
    this.sessions.add(session)
    session.once("close", () => {
      this.sessions.delete(session)
      this.settle()
    })
  }

  /** Returns true when the guard answered the request itself. */
  onRequest(request: Http.IncomingMessage, response: Http.ServerResponse): boolean {
    const connection = this.settings.isHttp2 ? undefined : (request.socket as TrackedSocket)[kConnection]
    if (this.mode === "Ready" && connection !== undefined) {
      // The steady state: the time, and a response only when it waits behind
      // another (pipelining). The one being written is Node's `_httpMessage`;
      // holding no reference lets a finished response be collected.
      connection.lastActiveAt = this.clock.currentTimeMillisUnsafe()
      if (currentResponse(request.socket) === response) {
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
    if (connection !== undefined && !this.answerable(connection)) {
      // Either the request crossed our FIN on the wire (nothing can be
      // written back on an ended socket; writing would only turn the close
      // into a reset), or it is pipelined behind a response that already
      // said close. It is not run: the client sees a clean close after the
      // last answer and retries it (RFC 9112 §9.3.2).
      neuter(response)
      this.unread++
      return true
    }
    const tracked = this.follow(request, response, connection)
    if (connection !== undefined) {
      cancelEnd(connection)
      connection.lastActiveAt = this.now()
      connection.last = response
      if (this.mode !== "Ready") this.markLast(connection)
    }
    // Probes count as activity on the connection but never hold the drain.
    if (this.settings.answerHealth !== undefined && this.settings.answerHealth(request, response)) return true
    return !this.enter(tracked)
  }

  /**
   * Whether a request read now on this connection can still be answered: no
   * FIN sent, and no response before it that says close (unless the guard
   * put that close on a head still queued, and can take it back).
   */
  private answerable(connection: Connection): boolean {
    if (connection.state._tag !== "Open") return false
    const last = connection.last as TrackedResponse | undefined
    if (last === undefined || !closesConnection(last)) return true
    if (last[kForcedClose] === true && reopenQueuedHead(last)) {
      last[kForcedClose] = false
      return true
    }
    return false
  }

  /** Follows a response to its close (from the drain on, and HTTP/2 always). */
  private follow(request: Http.IncomingMessage, response: TrackedResponse, connection: Connection | undefined) {
    const tracked = new TrackedRequest(this, "request", request, response, connection)
    response[kRequest] = tracked
    response.on("close", onResponseClose)
    if (connection !== undefined) {
      ;(response as unknown as { writeHead: typeof guardedWriteHead }).writeHead = guardedWriteHead
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
    if (this.mode !== "Ready") {
      socket.end(REFUSAL_RESPONSE)
      return true
    }
    let connection = (socket as TrackedSocket)[kConnection]
    if (connection === undefined) {
      this.onConnection(socket)
      connection = (socket as TrackedSocket)[kConnection]!
    }
    connection.state = UPGRADED
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
    if (this.mode !== "Ready") return
    this.mode = "Draining"
    for (const socket of this.connections) {
      const connection = socket[kConnection]!
      if (connection.state._tag === "Upgraded") continue
      this.adopt(connection, currentResponse(socket))
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
    if (this.mode === "Closing") return
    this.mode = "Closing"
    this.closingAt = this.now()
    this.closeListener()
    for (const socket of this.connections) {
      const connection = socket[kConnection]!
      if (connection.state._tag === "Upgraded") this.closeUpgraded(connection)
      else this.scheduleEnd(connection)
    }
    for (const socket of this.handshaking) this.boundHandshake(socket)
    for (const session of this.sessions) session.close()
    if (this.connections.size > 0 || this.sessions.size > 0 || this.handshaking.size > 0 || !this.listenerClosed) {
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
      const handle = listenHandle(this.server)
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
      this.sessions.size === 0 && this.handshaking.size === 0
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
    this.mode = "Closing"
    this.closeListenerNow()
  }

  destroyAll(): void {
    this.lingerSweep?.interruptUnsafe()
    this.lingerSweep = undefined
    this.lingering.clear()
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
   * `Connection: close` on the newest response of the connection: a head
   * not yet written gets it when it is written ({@link guardedWriteHead});
   * a head already written and still queued behind another (pipelining) is
   * rewritten. One queued before the newest keeps the connection open for
   * the next, since HTTP/1.1 lets nothing follow a response that says close.
   */
  markLast(connection: Connection): void {
    const last = connection.last as TrackedResponse | undefined
    if (last === undefined || !last.headersSent) return
    if (closeQueuedHead(last)) last[kForcedClose] = true
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
    if (connection.state._tag !== "Open" || connection.endQueued || connection.graceFiber !== undefined) return
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
      if (connection.pending > 0 || connection.state._tag !== "Open") continue
      if (!this.idle(connection, receiving)) {
        this.boundHead(connection, now)
        continue
      }
      const graceEnd = connection.socket.bytesRead === 0
        ? connection.acceptedAt + this.settings.newConnectionGraceMs
        : connection.lastActiveAt + this.settings.idleGraceMs
      const wait = graceEnd - now
      if (wait <= 0) {
        end(connection)
        continue
      }
      connection.graceFiber = this.after(wait, () => {
        connection.graceFiber = undefined
        const receivingNow = this.receivingSockets()
        if (this.idle(connection, receivingNow)) end(connection)
        else if (connection.pending === 0 && connection.state._tag === "Open") this.boundHead(connection, this.now())
      })
    }
  }

  /**
   * A connection holding part of a request head: it is answered if the head
   * completes within the new-connection grace (from its accept, or from
   * Closing if it was accepted before); otherwise it gets 408 and a close,
   * and the request is reported lost. No client can stretch the drain.
   */
  private boundHead(connection: Connection, now: number): void {
    if (connection.graceFiber !== undefined) return
    const graceEnd = Math.max(connection.acceptedAt, this.closingAt) + this.settings.newConnectionGraceMs
    connection.graceFiber = this.after(graceEnd - now, () => {
      connection.graceFiber = undefined
      if (connection.pending > 0 || connection.state._tag !== "Open") return
      const receiving = this.receivingSockets()
      if (receiving !== undefined && receiving.has(connection.socket)) {
        this.addLost("request head incomplete (408)")
        end(connection, REQUEST_TIMEOUT_RESPONSE)
      } else if (this.idle(connection, receiving)) {
        end(connection)
      }
    })
  }

  private idle(connection: Connection, receiving: ReadonlySet<unknown> | undefined): boolean {
    if (connection.pending > 0 || connection.state._tag !== "Open") return false
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
      if (socket !== null && currentResponse(socket) === response && !socket.destroyed) {
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
