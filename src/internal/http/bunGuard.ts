/**
 * The HTTP guard for Effect's `HttpServer` on `Bun.serve`
 * (`@effect/platform-bun`). Bun owns its sockets: there is no connection
 * event, no socket to end, no response to rewrite at the wire. So this guard
 * works one level up, around the application's `HttpApp`, and on the Bun
 * server's own public `stop`:
 *
 * - Ready: health routes answered before the app; every request is noted
 *   (one object in a set) so the drain can adopt it.
 * - Draining: every request not yet answered, and every one that arrives,
 *   is in the in-flight set; every response says `Connection: close` (Bun
 *   then closes the connection after it); upgrades are refused 503.
 * - Closing: WebSockets get close code 1001. Once no request has arrived or
 *   been answered for `idleGrace` (a keep-alive client may be writing its
 *   next request; `stop` would close its connection under it) and one more
 *   turn of the loop (Bun reads what is already on the wire), `server.stop()`:
 *   the listener closes (a new connection is refused), idle keep-alive
 *   connections get a FIN, busy ones close after their response. Until then
 *   the listener counts as one in-flight item.
 * - The cut (drain deadline): a handler still running is interrupted and
 *   its request answered 503 with `Connection: close`; a streamed response
 *   whose head was sent fails its stream, so Bun aborts the connection
 *   (the client sees a truncated response, never a complete-looking one).
 * - Release: whatever is left is answered 503, then `server.stop(true)`
 *   closes every connection.
 *
 * @internal
 */
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as HttpBody from "effect/http/HttpBody"
import * as HttpServerRequest from "effect/http/HttpServerRequest"
import * as HttpServerResponse from "effect/http/HttpServerResponse"
import type * as Scope from "effect/Scope"
import * as Socket from "effect/socket/Socket"
import * as Stream from "effect/Stream"
import type { InFlightRegistryService, Item } from "../../Adapter.ts"
import { inFlightRegistry, pathOf } from "../../Adapter.ts"
import * as Health from "../../Health.ts"
import type { InFlight } from "../../InFlight.ts"
import * as Lifecycle from "../../Lifecycle.ts"
import * as Resource from "../../Resource.ts"
import { REFUSED_BODY } from "./refusal.ts"

/** What the guard uses of a `Bun.serve` server: public API only. */
export interface BunServerHandle {
  stop(closeActiveConnections?: boolean): Promise<void>
}

/** The guard's settings, from the options and the services in context. */
export interface BunGuardSettings {
  readonly name: string
  /** The Bun server, stopped at Closing and closed at the release. */
  readonly server: BunServerHandle
  readonly inFlight: InFlightRegistryService
  readonly clock: Clock.Clock
  readonly closeReason: string
  /** How long no request may have arrived or been answered before the listener stops, in ms. */
  readonly idleGraceMs: number
  readonly answerHealth: ((method: string, url: string) => Effect.Effect<Health.Answer> | undefined) | undefined
}

type Mode = "Ready" | "Draining" | "Closing" | "Released"

/** The response a refused or cut request gets. */
const refusal = (): HttpServerResponse.HttpServerResponse =>
  HttpServerResponse.text(REFUSED_BODY, {
    status: 503,
    headers: { connection: "close", "retry-after": "1", "cache-control": "no-store" }
  })

class CutError extends Error {
  constructor() {
    super("response cut at the drain deadline")
  }
}

/** One request (or WebSocket) the guard follows, from arrival to its response's end. */
class GuardedRequest implements Item {
  readonly reportCut = true
  startedAt: number
  tracked = false
  done = false
  socket: Socket.Socket | undefined = undefined
  wasCut = false
  /** The handler's fiber, until it has answered. */
  handler: Fiber.Fiber<unknown, unknown> | undefined = undefined
  /** Made only for a streamed response: completed by a cut, it fails the stream. */
  cutSignal: Deferred.Deferred<void> | undefined = undefined
  readonly kind: "request" | "websocket"
  readonly method: string
  readonly url: string
  constructor(kind: "request" | "websocket", method: string, url: string, arrivedAt: number) {
    this.kind = kind
    this.method = method
    this.url = url
    this.startedAt = arrivedAt
  }
  get label(): string {
    return `${this.method} ${pathOf(this.url)}`
  }
  interrupt(): void {
    this.wasCut = true
    this.handler?.interruptUnsafe()
    if (this.cutSignal !== undefined) Deferred.doneUnsafe(this.cutSignal, Exit.void)
  }
}

/**
 * The listener, from Closing until `stop` resolved. At the cut nothing is
 * done at once: the release closes every connection a turn after the cut's
 * 503s are written.
 */
class ListenerItem implements Item {
  readonly kind = "connections"
  readonly reportCut = false
  startedAt = 0
  readonly label: string
  constructor(label: string) {
    this.label = label
  }
  interrupt(): void {}
}

/** What `HttpServer.serve` runs for each request. */
type HttpApp<E, R> = Effect.Effect<
  HttpServerResponse.HttpServerResponse,
  E,
  R | HttpServerRequest.HttpServerRequest | Scope.Scope
>

/**
 * Whether the request asks for an upgrade. On Bun its source is the Web
 * `Request`: asking it for one header spares converting all of them (the
 * app may never read them).
 */
const isUpgradeRequest = (request: HttpServerRequest.HttpServerRequest): boolean =>
  request.source instanceof Request
    ? request.source.headers.get("upgrade") !== null
    : request.headers["upgrade"] !== undefined

/** How many idle graces after Closing the listener stops at the latest, however busy. */
const MAX_QUIET_WAIT = 10

/** One turn of the event loop: the runtime reads what is already on the wire. */
const nextTurn = Effect.callback<void>((resume) => void setImmediate(() => resume(Effect.void)))

export class BunGuard {
  private mode: Mode = "Ready"
  private readonly active = new Set<GuardedRequest>()
  private listenerItem: ListenerItem | undefined = undefined
  /** When a request last arrived or was answered (clock ms). */
  private lastActivityAt = 0

  readonly settings: BunGuardSettings
  constructor(settings: BunGuardSettings) {
    this.settings = settings
  }

  get name(): string {
    return this.settings.name
  }

  private now(): number {
    return this.settings.clock.currentTimeMillisUnsafe()
  }

  /** The application, guarded: what `HttpServer.serve` runs for each request. */
  wrap<E, R>(app: HttpApp<E, R>): HttpApp<E, R> {
    return Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) => {
      const health = this.settings.answerHealth?.(request.method, request.url)
      if (health !== undefined) {
        return Effect.map(health, ({ body, status }) =>
          HttpServerResponse.jsonUnsafe(body, {
            status,
            headers: this.mode === "Ready" ? { "cache-control": "no-store" } : {
              "cache-control": "no-store",
              connection: "close"
            }
          }))
      }
      const isUpgrade = isUpgradeRequest(request)
      if (isUpgrade && this.mode !== "Ready") return Effect.succeed(refusal())
      const arrivedAt = this.now()
      this.lastActivityAt = arrivedAt
      const entry = new GuardedRequest(isUpgrade ? "websocket" : "request", request.method, request.url, arrivedAt)
      this.active.add(entry)
      if (this.mode !== "Ready" && !this.enter(entry)) {
        this.leave(entry)
        return Effect.succeed(refusal())
      }
      const provided = isUpgrade
        ? Effect.provideService(app, HttpServerRequest.HttpServerRequest, this.followUpgrade(request, entry))
        : app
      // The handler runs in a child fiber, so that a cut can interrupt it and
      // this fiber still answer.
      return Effect.flatMap(Effect.forkChild(provided, { startImmediately: true }), (handler) => {
        entry.handler = handler
        return Effect.flatMap(Fiber.await(handler), (exit) => {
          if (Exit.isSuccess(exit)) return Effect.succeed(this.finish(entry, exit.value))
          this.leave(entry)
          return entry.wasCut ? Effect.succeed(refusal()) : Effect.failCause(exit.cause)
        })
      })
    })
  }

  /**
   * The request as the handler sees it, with `upgrade` noting the socket, so
   * Closing can send it close code 1001. Everything else is the request's own.
   */
  private followUpgrade(
    request: HttpServerRequest.HttpServerRequest,
    entry: GuardedRequest
  ): HttpServerRequest.HttpServerRequest {
    const followed = Object.create(request) as HttpServerRequest.HttpServerRequest
    Object.defineProperty(followed, "upgrade", {
      get: () =>
        Effect.tap(request.upgrade, (socket) =>
          Effect.suspend(() => {
            entry.socket = socket
            // Upgraded during the lame duck's last turn: say goodbye at once.
            return this.mode === "Closing" ? this.closeSocket(socket) : Effect.void
          }))
    })
    return followed
  }

  /** A handler's response: `Connection: close` once draining; a stream stays in flight until it ends. */
  private finish(
    entry: GuardedRequest,
    response: HttpServerResponse.HttpServerResponse
  ): HttpServerResponse.HttpServerResponse {
    const closing = this.mode !== "Ready" ? HttpServerResponse.setHeader(response, "connection", "close") : response
    if (closing.body._tag !== "Stream") {
      this.leave(entry)
      return closing
    }
    entry.handler = undefined
    const cutSignal = Deferred.makeUnsafe<void>()
    entry.cutSignal = cutSignal
    if (entry.wasCut) Deferred.doneUnsafe(cutSignal, Exit.void)
    const cut = Effect.flatMap(Deferred.await(cutSignal), () => Effect.fail(new CutError()))
    const body = closing.body
    return HttpServerResponse.setBody(
      closing,
      HttpBody.stream(
        body.stream.pipe(Stream.interruptWhen(cut), Stream.ensuring(Effect.sync(() => this.leave(entry)))),
        body.contentType,
        body.contentLength
      )
    )
  }

  /** Enters a request into the in-flight set; a refused one (after the cut) is recorded as cut. */
  private enter(entry: GuardedRequest): boolean {
    if (entry.tracked) return true
    const arrivedAt = entry.startedAt
    if (!this.settings.inFlight.addUnsafe(entry)) return false
    entry.tracked = true
    // Its age counts from its arrival, not from the shutdown.
    entry.startedAt = arrivedAt
    return true
  }

  private leave(entry: GuardedRequest): void {
    if (entry.done) return
    entry.done = true
    this.lastActivityAt = this.now()
    this.active.delete(entry)
    if (entry.tracked) this.settings.inFlight.removeUnsafe(entry)
  }

  /** Draining: every request not yet answered becomes in-flight work. */
  startDrain(): void {
    if (this.mode !== "Ready") return
    this.mode = "Draining"
    for (const entry of this.active) {
      if (!this.enter(entry)) entry.interrupt()
    }
  }

  /**
   * Closing: WebSockets get 1001; once the connections have been quiet for
   * `idleGrace` and the loop has turned once more, the server stops
   * listening and ends idle connections.
   */
  startClosing(): Effect.Effect<void> {
    return Effect.suspend(() => {
      this.startDrain()
      if (this.mode !== "Draining") return Effect.void
      this.mode = "Closing"
      const item = new ListenerItem(`${this.name} listener`)
      if (this.settings.inFlight.addUnsafe(item)) this.listenerItem = item
      this.lastActivityAt = Math.max(this.lastActivityAt, this.now())
      const sockets = [...this.active].flatMap((entry) => entry.socket === undefined ? [] : [entry.socket])
      return Effect.forEach(sockets, (socket) => this.closeSocket(socket), { discard: true }).pipe(
        Effect.andThen(Effect.forkDetach(this.stopWhenQuiet()))
      )
    })
  }

  /**
   * Waits (on the Clock) until no request arrived or was answered for
   * `idleGrace`, but no longer than {@link MAX_QUIET_WAIT} idle graces after
   * Closing (traffic that never pauses must not hold the listener open until
   * the drain deadline), then a turn, then stops.
   */
  private stopWhenQuiet(): Effect.Effect<void> {
    const latest = this.now() + MAX_QUIET_WAIT * this.settings.idleGraceMs
    const waitQuiet: Effect.Effect<void> = Effect.suspend(() => {
      const now = this.now()
      const left = Math.min(this.settings.idleGraceMs - (now - this.lastActivityAt), latest - now)
      return left <= 0 ? Effect.void : Effect.andThen(Effect.sleep(left), waitQuiet)
    })
    return waitQuiet.pipe(
      Effect.andThen(nextTurn),
      Effect.andThen(Effect.suspend(() => {
        if (this.mode !== "Closing") return Effect.void
        return Effect.promise(() => this.settings.server.stop().catch(() => undefined))
      })),
      Effect.ensuring(Effect.sync(() => this.settle()))
    )
  }

  private settle(): void {
    if (this.listenerItem === undefined) return
    this.settings.inFlight.removeUnsafe(this.listenerItem)
    this.listenerItem = undefined
  }

  private closeSocket(socket: Socket.Socket): Effect.Effect<void> {
    return Effect.scoped(
      Effect.flatMap(socket.writer, (writer) => writer.write(new Socket.CloseEvent(1001, this.settings.closeReason)))
    ).pipe(Effect.ignore)
  }

  /**
   * Release: after a defect the drain was skipped, so what is still
   * unanswered is entered now, found cut (reported) and answered 503; a turn
   * later every connection is closed. Resolves once the server has stopped.
   */
  release(): Effect.Effect<void> {
    return Effect.suspend(() => {
      this.startDrain()
      for (const entry of this.active) if (!entry.tracked) entry.interrupt()
      this.mode = "Released"
      this.settle()
      // A turn first, so the 503s just answered are written.
      return nextTurn.pipe(
        Effect.andThen(Effect.promise(() => this.settings.server.stop(true).catch(() => undefined)))
      )
    })
  }
}

/** What {@link install} needs, resolved from the adapter's options. */
export interface InstallOptions {
  readonly name: string
  readonly idleGraceMs: number
  readonly closeReason: string
  /** The health routes' paths, or `false` to leave them to the application. */
  readonly health: false | Health.Paths
  readonly readinessDetail: boolean
}

/**
 * Makes the guard for `server` and puts it under the lifecycle for the life
 * of the scope: drain at Draining, the listener's stop at Closing, the
 * release named `options.name`.
 */
export const install = (
  options: InstallOptions,
  server: BunServerHandle
): Effect.Effect<BunGuard, never, Lifecycle.Lifecycle | InFlight | Health.Health | Scope.Scope> =>
  Effect.gen(function*() {
    const lifecycle = yield* Lifecycle.Lifecycle
    const health = yield* Health.Health
    const guard = new BunGuard({
      name: options.name,
      server,
      inFlight: yield* inFlightRegistry,
      clock: yield* Clock.Clock,
      closeReason: options.closeReason,
      idleGraceMs: options.idleGraceMs,
      answerHealth: options.health === false
        ? undefined
        : Health.answer(health, lifecycle, options.health, { detail: options.readinessDetail })
    })
    yield* Lifecycle.addHook(`${options.name}: connection close`, "Draining", Effect.sync(() => guard.startDrain()))
    yield* Lifecycle.addHook(`${options.name}: close listener`, "Closing", guard.startClosing())
    yield* Resource.addFinalizer(options.name, guard.release())
    return guard
  })
