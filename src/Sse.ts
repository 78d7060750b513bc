/**
 * Server-sent event streams that end cleanly at shutdown and resume
 * elsewhere, for Effect apps (a `Stream` of events becomes the response) and
 * for plain Node servers (`(req, res)`).
 *
 * An event stream is a response that never ends by itself: as ordinary
 * in-flight work it would hold the drain until the deadline and then lose its
 * socket mid-stream. {@link make} gives a registry of open streams that
 * treats them the way the WebSocket guard treats sockets:
 *
 * - **Ready**: each stream opens with a `retry:` field (the client's
 *   reconnection delay) and is registered; a comment line is sent every
 *   `heartbeat` so that proxies do not time out a quiet stream.
 * - **Draining** (lame duck): open streams keep flowing; a new stream is
 *   refused with 503 and `Retry-After`, before any event is written.
 * - **Closing**: every open stream gets a last event carrying `retry:`, and
 *   its response ends: a complete chunked terminator, no reset, so the request
 *   completes and the drain does not wait for it. The client's `EventSource`
 *   reconnects after `retry` (to another instance, since this one's listener
 *   is closed) and sends the id of the last event it received as
 *   `Last-Event-ID`: the resume point your stream is built from.
 * - **Cutting**: a stream whose last event could not be written out before
 *   the drain deadline (a client that stopped reading) is destroyed; under
 *   the HTTP guard its request is reported as cut.
 *
 * What it does not do: remember events. Resuming after `Last-Event-ID` is
 * the application's part (ids from a log, a sequence, a broker's offsets);
 * the registry hands you the id the client sent.
 *
 * @since 0.1.0
 */
import type * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as HttpServerRequest from "effect/http/HttpServerRequest"
import * as HttpServerResponse from "effect/http/HttpServerResponse"
import * as Queue from "effect/Queue"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import type * as Http from "node:http"
import { inFlightRegistry, type InFlightRegistryService, type Item, pathOf } from "./Adapter.ts"
import type { InFlight } from "./InFlight.ts"
import { REFUSED_BODY } from "./internal/http/refusal.ts"
import * as Lifecycle from "./Lifecycle.ts"
import * as Resource from "./Resource.ts"

/**
 * One server-sent event. `data` may span lines (each becomes a `data:`
 * line); `id` becomes the client's `Last-Event-ID`.
 *
 * @category models
 * @since 0.1.0
 */
export interface Event {
  readonly data: string
  readonly id?: string | number | undefined
  readonly event?: string | undefined
  /** Sets the client's reconnection delay from this event on. */
  readonly retry?: Duration.Input | undefined
}

/**
 * Where the client asks to resume: the `Last-Event-ID` it sent, if any.
 *
 * @category models
 * @since 0.1.0
 */
export interface Resume {
  readonly lastEventId: string | undefined
}

/**
 * Options of {@link make}.
 *
 * @category models
 * @since 0.1.0
 */
export interface Options {
  /** The name of the registry's hook and finalizer in the report. Default `"sse streams"`. */
  readonly name?: string | undefined
  /**
   * The reconnection delay sent to clients (`retry:`) when a stream opens and
   * in its last event; also the `Retry-After` of a refusal (rounded up to
   * whole seconds). Default 1 second.
   */
  readonly retry?: Duration.Input | undefined
  /** How often an open stream gets a comment line (`:`), for proxies' idle timeouts. Default 15 seconds; 0 for none. */
  readonly heartbeat?: Duration.Input | undefined
}

/**
 * An event stream opened on a plain Node response by {@link SseStreams.open}.
 *
 * @category models
 * @since 0.1.0
 */
export interface NodeStream {
  /** The `Last-Event-ID` the client sent: resume after it. */
  readonly lastEventId: string | undefined
  /** Writes an event; false once the stream has ended (nothing is written then). */
  readonly send: (event: Event) => boolean
  /** Aborted when the stream ends: the client went away, shutdown reached Closing, or `close()`. */
  readonly signal: AbortSignal
  /** Ends the stream (the response completes). */
  readonly close: () => void
}

/**
 * The registry of open event streams.
 *
 * @category models
 * @since 0.1.0
 */
export interface SseStreams {
  /**
   * An event-stream response for the current request: `events` gets the
   * client's resume point, and its events are written as they come. While
   * draining, a 503 with `Retry-After` instead. The stream ends at Closing
   * (after a last event with `retry:`), when `events` ends, or when it fails
   * (the failure is logged; the client reconnects).
   */
  readonly response: <E, R>(
    events: (resume: Resume) => Stream.Stream<Event, E, R>
  ) => Effect.Effect<HttpServerResponse.HttpServerResponse, never, R | HttpServerRequest.HttpServerRequest>
  /**
   * Opens an event stream on a plain Node response (headers written, first
   * `retry:` sent), or refuses it with 503 and `Retry-After` while draining
   * and returns `undefined`.
   */
  readonly open: (request: Http.IncomingMessage, response: Http.ServerResponse) => NodeStream | undefined
  /** How many streams are open now. */
  readonly size: () => number
}

const encoder = new TextEncoder()

const noop = () => {}

const millisOf = (input: Duration.Input): number => Duration.toMillis(Duration.fromInputUnsafe(input))

/**
 * The wire form of an event (ends with the blank line that dispatches it).
 * Line breaks in `id` or `event` would break the framing and are removed.
 *
 * @example
 * ```ts
 * import * as Sse from "effect-graceful/Sse"
 *
 * Sse.encode({ id: 7, data: "hello\nworld" })
 * // "id: 7\ndata: hello\ndata: world\n\n"
 * ```
 *
 * @category encoding
 * @since 0.1.0
 */
export const encode = (event: Event): string => {
  let text = ""
  if (event.event !== undefined) text += `event: ${singleLine(event.event)}\n`
  if (event.id !== undefined) text += `id: ${singleLine(String(event.id))}\n`
  if (event.retry !== undefined) text += `retry: ${Math.max(0, Math.round(millisOf(event.retry)))}\n`
  for (const line of event.data.split(/\r\n|\r|\n/)) text += `data: ${line}\n`
  return text + "\n"
}

const singleLine = (value: string) => value.replace(/[\r\n\0]/g, "")

const HEADERS = {
  "content-type": "text/event-stream; charset=utf-8",
  "cache-control": "no-cache",
  // nginx buffers responses unless told not to.
  "x-accel-buffering": "no"
} as const

/** A registered stream: an in-flight entry (its cut destroys it) and the way to end it at Closing. */
interface Entry extends Item {
  /** Writes the last event and ends the stream. */
  readonly finish: () => void
}

/** What the parts of a registry share. */
interface Registry {
  readonly name: string
  readonly lifecycle: Lifecycle.LifecycleService
  readonly inFlight: InFlightRegistryService
  readonly retryAfter: string
  /** The first bytes of every stream: the client's reconnection delay. */
  readonly opening: string
  /** The last bytes of a stream ended at Closing. */
  readonly last: string
  readonly heartbeatMs: number
  readonly entries: Set<Entry>
  /** Set at Closing (or release): no stream opens after it. */
  ended: boolean
}

const makeRegistry = (
  options: Options,
  lifecycle: Lifecycle.LifecycleService,
  inFlight: InFlightRegistryService
): Registry => {
  const retryMs = Math.max(0, Math.round(millisOf(options.retry ?? "1 second")))
  return {
    name: options.name ?? "sse streams",
    lifecycle,
    inFlight,
    retryAfter: String(Math.max(1, Math.ceil(retryMs / 1000))),
    opening: `retry: ${retryMs}\n\n`,
    // The last event: a comment saying why, and the reconnection delay. It
    // has no data, so EventSource dispatches nothing: only `retry` applies.
    last: `: server shutting down, reconnect\nretry: ${retryMs}\n\n`,
    heartbeatMs: millisOf(options.heartbeat ?? "15 seconds"),
    entries: new Set<Entry>(),
    ended: false
  }
}

const isRefusing = (registry: Registry): boolean =>
  registry.ended || Lifecycle.isAtLeast(registry.lifecycle.phaseUnsafe(), "Draining")

const register = (registry: Registry, entry: Entry): boolean => {
  if (!registry.inFlight.addUnsafe(entry)) return false
  registry.entries.add(entry)
  return true
}

const unregister = (registry: Registry, entry: Entry): void => {
  if (registry.entries.delete(entry)) registry.inFlight.removeUnsafe(entry)
}

/**
 * The body of an event-stream response: a queue the registry can end. At
 * Closing it appends the last event and ends the queue, and the server
 * writes out what is buffered, the last event, and the chunked terminator.
 * The events are pulled into the queue by a fiber of the body's own scope.
 */
const streamBody = <E, R>(
  registry: Registry,
  label: string,
  resume: Resume,
  events: (resume: Resume) => Stream.Stream<Event, E, R>,
  context: Context.Context<R>
): Stream.Stream<Uint8Array> =>
  Stream.callback<string>((queue) =>
    Effect.gen(function*() {
      const entry: Entry = {
        kind: "sse",
        label,
        // The HTTP guard reports the request itself if it is cut.
        reportCut: false,
        startedAt: 0,
        finish: () => {
          Queue.offerUnsafe(queue, registry.last)
          Queue.endUnsafe(queue)
        },
        interrupt: () => void Queue.endUnsafe(queue)
      }
      yield* Queue.offer(queue, registry.opening)
      // Closing came between the handler and the first write: end at once.
      if (registry.ended || !register(registry, entry)) return entry.finish()
      yield* Effect.addFinalizer(() => Effect.sync(() => unregister(registry, entry)))
      if (registry.heartbeatMs > 0) {
        yield* Queue.offer(queue, ":\n\n").pipe(Effect.delay(registry.heartbeatMs), Effect.forever, Effect.forkScoped)
      }
      yield* events(resume).pipe(
        Stream.runForEach((event) => Queue.offer(queue, encode(event))),
        Effect.catchCause((cause) => Effect.logWarning(`${registry.name}: ${label} failed`, cause)),
        Effect.provideContext(context)
      )
      // The events ended by themselves: so does the response.
      yield* Queue.end(queue)
    })
  ).pipe(Stream.map((text) => encoder.encode(text)))

/** {@link SseStreams.response} on a registry. */
const respond = <E, R>(
  registry: Registry,
  events: (resume: Resume) => Stream.Stream<Event, E, R>
): Effect.Effect<HttpServerResponse.HttpServerResponse, never, R | HttpServerRequest.HttpServerRequest> =>
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    if (isRefusing(registry)) {
      return HttpServerResponse.text(REFUSED_BODY, { status: 503, headers: { "retry-after": registry.retryAfter } })
    }
    const context = yield* Effect.context<R>()
    const label = `${request.method} ${pathOf(request.url)}`
    const lastEventId = request.headers["last-event-id"]
    const body = streamBody(registry, label, { lastEventId }, events, context)
    return HttpServerResponse.stream(body, { headers: HEADERS })
  })

/** A 503 with `Retry-After` on a plain Node response, written before any event. */
const refuseNode = (registry: Registry, request: Http.IncomingMessage, response: Http.ServerResponse): void => {
  const headers: Http.OutgoingHttpHeaders = {
    "content-type": "text/plain",
    "content-length": REFUSED_BODY.length,
    "retry-after": registry.retryAfter
  }
  if (request.httpVersionMajor === 1) headers.connection = "close"
  response.writeHead(503, headers)
  response.end(REFUSED_BODY)
}

/** {@link SseStreams.open} on a registry. */
const openNode = (
  registry: Registry,
  request: Http.IncomingMessage,
  response: Http.ServerResponse
): NodeStream | undefined => {
  if (isRefusing(registry)) {
    refuseNode(registry, request, response)
    return undefined
  }
  const stream = new NodeEventStream(
    request,
    response,
    registry.opening,
    registry.last,
    registry.heartbeatMs,
    (entry) => unregister(registry, entry)
  )
  if (!register(registry, stream)) {
    response.destroy()
    return undefined
  }
  stream.start()
  return stream
}

/** At Closing: every open stream gets its last event and ends. */
const finishAll = (registry: Registry): void => {
  registry.ended = true
  for (const entry of registry.entries) entry.finish()
}

/** At release: any stream still open is destroyed. */
const interruptAll = (registry: Registry): void => {
  registry.ended = true
  for (const entry of registry.entries) {
    entry.interrupt()
    unregister(registry, entry)
  }
}

/**
 * Creates the registry of open event streams for the life of the scope: its
 * `Closing` hook ends every open stream with a last `retry:` event, and its
 * finalizer destroys any stream still open at release.
 *
 * Effect apps use {@link SseStreams.response} in a route; plain Node servers
 * {@link SseStreams.open} in their handler.
 *
 * @example
 * ```ts
 * import { Effect, Layer, Schedule, Stream } from "effect"
 * import { HttpRouter } from "effect/http"
 * import * as Sse from "effect-graceful/Sse"
 *
 * // Counts up every second, resuming after the client's Last-Event-ID.
 * const Events = Layer.unwrap(Effect.gen(function*() {
 *   const sse = yield* Sse.make({ retry: "500 millis" })
 *   return HttpRouter.add("GET", "/events", sse.response(({ lastEventId }) =>
 *     Stream.iterate(Number(lastEventId ?? 0) + 1, (n) => n + 1).pipe(
 *       Stream.schedule(Schedule.spaced("1 second")),
 *       Stream.map((n) => ({ id: n, data: `tick ${n}` }))
 *     )))
 * }))
 * ```
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import * as http from "node:http"
 * import * as Sse from "effect-graceful/Sse"
 *
 * const program = Effect.gen(function*() {
 *   const sse = yield* Sse.make()
 *   const server = http.createServer((req, res) => {
 *     const stream = sse.open(req, res)
 *     if (stream === undefined) return // refused: draining
 *     let n = Number(stream.lastEventId ?? 0)
 *     const timer = setInterval(() => stream.send({ id: ++n, data: String(n) }), 1000)
 *     stream.signal.addEventListener("abort", () => clearInterval(timer))
 *   })
 * })
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = (
  options: Options = {}
): Effect.Effect<SseStreams, never, Lifecycle.Lifecycle | InFlight | Scope.Scope> =>
  Effect.gen(function*() {
    const registry = makeRegistry(options, yield* Lifecycle.Lifecycle, yield* inFlightRegistry)
    yield* Lifecycle.addHook(`${registry.name}: last event`, "Closing", Effect.sync(() => finishAll(registry)))
    yield* Resource.addFinalizer(registry.name, Effect.sync(() => interruptAll(registry)))
    return {
      response: (events) => respond(registry, events),
      open: (request, response) => openNode(registry, request, response),
      size: () => registry.entries.size
    }
  })

/** A stream on a plain Node response: its registry entry and its handle. */
class NodeEventStream implements Entry, NodeStream {
  readonly kind = "sse"
  readonly reportCut = false
  startedAt = 0
  readonly lastEventId: string | undefined
  readonly #request: Http.IncomingMessage
  readonly #response: Http.ServerResponse
  readonly #opening: string
  readonly #last: string
  readonly #heartbeatMs: number
  readonly #unregister: (entry: Entry) => void
  readonly #abort = new AbortController()
  #heartbeat: NodeJS.Timeout | undefined = undefined

  constructor(
    request: Http.IncomingMessage,
    response: Http.ServerResponse,
    opening: string,
    last: string,
    heartbeatMs: number,
    unregister: (entry: Entry) => void
  ) {
    this.#request = request
    this.#response = response
    this.#opening = opening
    this.#last = last
    this.#heartbeatMs = heartbeatMs
    this.#unregister = unregister
    const header = request.headers["last-event-id"]
    this.lastEventId = Array.isArray(header) ? header[0] : header
  }

  get label(): string {
    return `${this.#request.method ?? "GET"} ${pathOf(this.#request.url)}`
  }

  get signal(): AbortSignal {
    return this.#abort.signal
  }

  start(): void {
    const response = this.#response
    response.on("error", noop)
    response.once("close", () => this.#dispose())
    response.writeHead(200, HEADERS)
    response.write(this.#opening)
    if (this.#heartbeatMs > 0) {
      this.#heartbeat = setInterval(() => response.write(":\n\n"), this.#heartbeatMs)
      this.#heartbeat.unref()
    }
  }

  send(event: Event): boolean {
    if (this.#response.writableEnded || this.#response.destroyed) return false
    this.#response.write(encode(event))
    return true
  }

  close(): void {
    if (!this.#response.writableEnded) this.#response.end()
    this.#dispose()
  }

  finish(): void {
    if (!this.#response.writableEnded && !this.#response.destroyed) this.#response.end(this.#last)
    this.#dispose()
  }

  interrupt(): void {
    this.#response.destroy()
    this.#dispose()
  }

  #dispose(): void {
    if (this.#heartbeat !== undefined) clearInterval(this.#heartbeat)
    this.#heartbeat = undefined
    if (!this.#abort.signal.aborted) this.#abort.abort()
    // Registered until the last bytes are flushed: the drain waits for them.
    if (this.#response.writableFinished || this.#response.destroyed) this.#unregister(this)
    else this.#response.once("finish", () => this.#unregister(this))
  }
}
