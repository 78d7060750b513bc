/**
 * A `@grpc/grpc-js` server as a managed resource that drains like the HTTP
 * guard: health first, then GOAWAY, then a bounded wait, then a cut that
 * names each call it ends.
 *
 * {@link serve} creates the server (with an interceptor that enters every
 * call into the in-flight set), adds your services and the standard health
 * service (`grpc.health.v1.Health`, `Check` and `Watch`), and binds it. By
 * phase:
 *
 * - **Ready**: the health service answers SERVING (for `""` and for each
 *   service name); every call is in flight from its start to its status.
 * - **Draining** (lame duck): everything is still served; the health service
 *   answers NOT_SERVING, and `Watch` streams are told so at once, so a
 *   health-checking balancer stops sending calls here.
 * - **Closing**: `tryShutdown`: the listener closes and each connection gets
 *   GOAWAY, so clients send new calls elsewhere while calls in flight finish.
 *   Streaming calls (server, client or bidirectional streaming, `Watch`
 *   included) have no natural end: each gets status UNAVAILABLE ("server
 *   shutting down") now, a status a client retries on another server, rather
 *   than holding the drain and being broken at the deadline (option
 *   `streams: "drain"` lets them run until the deadline instead).
 * - **Cutting** (the drain deadline): each call still open gets status
 *   UNAVAILABLE and is reported as cut (`grpc` with its method path and age);
 *   then `forceShutdown` closes every connection.
 * - **Releasing**: `forceShutdown` if anything is left.
 *
 * What it does not do: retry. UNAVAILABLE is the status gRPC clients treat
 * as "try again, perhaps elsewhere"; resuming a stream where it stopped
 * (a token, an offset) is the application's protocol.
 *
 * `@grpc/grpc-js` is an optional peer dependency: only this module loads it.
 *
 * @since 0.1.0
 */
import * as grpc from "@grpc/grpc-js"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { inFlightRegistry, type InFlightRegistryService, type Item } from "../Adapter.ts"
import type { InFlight } from "../InFlight.ts"
import * as Lifecycle from "../Lifecycle.ts"
import * as Resource from "../Resource.ts"

/**
 * A service and its implementation, as `server.addService` takes them.
 *
 * @category models
 * @since 0.1.0
 */
export type ServiceEntry = readonly [grpc.ServiceDefinition, grpc.UntypedServiceImplementation]

/**
 * Options of {@link serve}.
 *
 * @category models
 * @since 0.1.0
 */
export interface ServeOptions {
  /** Where to listen, as `bindAsync` takes it: `"127.0.0.1:50051"`, `"0.0.0.0:0"`. */
  readonly address: string
  /** The services to serve. */
  readonly services: ReadonlyArray<ServiceEntry>
  /** Default `ServerCredentials.createInsecure()`. */
  readonly credentials?: grpc.ServerCredentials | undefined
  /** Passed to `new grpc.Server`; its interceptors run after the adapter's. */
  readonly serverOptions?: grpc.ServerOptions | undefined
  /** The name in the shutdown report. Default `"grpc server"`. */
  readonly name?: string | undefined
  /** Serve `grpc.health.v1.Health`. Default true. */
  readonly health?: boolean | undefined
  /**
   * Streaming calls at Closing: `"end"` (default) ends each with status
   * UNAVAILABLE so that its client reconnects elsewhere; `"drain"` lets them
   * run until they end or the drain deadline cuts them.
   */
  readonly streams?: "end" | "drain" | undefined
}

/**
 * The served status of a service in `grpc.health.v1`.
 *
 * @category models
 * @since 0.1.0
 */
export type ServingStatus = "SERVING" | "NOT_SERVING"

/**
 * A running server.
 *
 * @category models
 * @since 0.1.0
 */
export interface GrpcServer {
  readonly server: grpc.Server
  /** The bound port (useful with port 0). */
  readonly port: number
  /**
   * Sets one service's health status (a failing dependency), until the
   * server drains; from Draining on every service answers NOT_SERVING.
   */
  readonly setStatus: (service: string, status: ServingStatus) => void
  /** Calls in flight now. */
  readonly calls: () => number
}

/**
 * The server could not bind its address.
 *
 * @example
 * ```ts
 * import * as Grpc from "effect-graceful/Grpc"
 *
 * const error = new Grpc.GrpcBindError({ address: "127.0.0.1:50051", reason: "EADDRINUSE" })
 * error.message // "gRPC server could not bind 127.0.0.1:50051: EADDRINUSE"
 * ```
 *
 * @category errors
 * @since 0.1.0
 */
export class GrpcBindError extends Data.TaggedError("GrpcBindError")<{
  readonly address: string
  readonly reason: string
}> {
  override get message(): string {
    return `gRPC server could not bind ${this.address}: ${this.reason}`
  }
}

const SHUTTING_DOWN = "server shutting down"

// -----------------------------------------------------------------------------
// grpc.health.v1, encoded by hand: two one-field messages are not worth a
// protobuf runtime.
//
//   message HealthCheckRequest { string service = 1; }
//   message HealthCheckResponse { ServingStatus status = 1; }
//   enum ServingStatus { UNKNOWN = 0; SERVING = 1; NOT_SERVING = 2; SERVICE_UNKNOWN = 3; }
// -----------------------------------------------------------------------------

/** `grpc.health.v1.HealthCheckResponse.ServingStatus` numbers. */
const HealthStatus = { UNKNOWN: 0, SERVING: 1, NOT_SERVING: 2, SERVICE_UNKNOWN: 3 } as const
type HealthStatusNumber = typeof HealthStatus[keyof typeof HealthStatus]

interface HealthCheckRequest {
  readonly service: string
}
interface HealthCheckResponse {
  readonly status: HealthStatusNumber
}

const readVarint = (bytes: Uint8Array, offset: number): [value: number, next: number] => {
  let value = 0
  let shift = 0
  let position = offset
  while (position < bytes.length) {
    const byte = bytes[position++]!
    value += (byte & 0x7f) * 2 ** shift
    if ((byte & 0x80) === 0) return [value, position]
    shift += 7
  }
  throw new Error("truncated varint")
}

/** Decodes a HealthCheckRequest, skipping fields it does not know (as protobuf requires). */
const decodeHealthCheckRequest = (bytes: Buffer): HealthCheckRequest => {
  let service = ""
  let offset = 0
  while (offset < bytes.length) {
    const [tag, afterTag] = readVarint(bytes, offset)
    const field = Math.floor(tag / 8)
    const wireType = tag & 7
    if (wireType === 0) {
      offset = readVarint(bytes, afterTag)[1]
    } else if (wireType === 2) {
      const [length, start] = readVarint(bytes, afterTag)
      if (field === 1) service = bytes.toString("utf8", start, start + length)
      offset = start + length
    } else if (wireType === 1) {
      offset = afterTag + 8
    } else if (wireType === 5) {
      offset = afterTag + 4
    } else {
      throw new Error(`unsupported wire type ${wireType}`)
    }
  }
  return { service }
}

const encodeHealthCheckRequest = (request: HealthCheckRequest): Buffer => {
  const text = Buffer.from(request.service, "utf8")
  if (text.length === 0) return Buffer.alloc(0)
  return Buffer.concat([Buffer.from([0x0a]), encodeVarint(text.length), text])
}

const encodeVarint = (value: number): Buffer => {
  const bytes: Array<number> = []
  let rest = value
  while (rest > 0x7f) {
    bytes.push((rest & 0x7f) | 0x80)
    rest = Math.floor(rest / 128)
  }
  bytes.push(rest)
  return Buffer.from(bytes)
}

const encodeHealthCheckResponse = (response: HealthCheckResponse): Buffer =>
  // proto3 omits a field at its default (UNKNOWN = 0).
  response.status === 0 ? Buffer.alloc(0) : Buffer.from([0x08, response.status])

const decodeHealthCheckResponse = (bytes: Buffer): HealthCheckResponse => {
  let status = 0
  let offset = 0
  while (offset < bytes.length) {
    const [tag, afterTag] = readVarint(bytes, offset)
    if ((tag & 7) !== 0) throw new Error("unexpected field in HealthCheckResponse")
    const [value, next] = readVarint(bytes, afterTag)
    if (tag >>> 3 === 1) status = value
    offset = next
  }
  return { status: status as HealthStatusNumber }
}

/**
 * The service definition of `grpc.health.v1.Health` (`Check` and `Watch`),
 * for clients and tests.
 *
 * @example
 * ```ts
 * import * as grpc from "@grpc/grpc-js"
 * import * as Grpc from "effect-graceful/Grpc"
 *
 * const HealthClient = grpc.makeGenericClientConstructor(Grpc.healthService, "Health")
 * const client = new HealthClient("127.0.0.1:50051", grpc.credentials.createInsecure())
 * ```
 *
 * @category health
 * @since 0.1.0
 */
export const healthService = {
  check: {
    path: "/grpc.health.v1.Health/Check",
    requestStream: false,
    responseStream: false,
    requestSerialize: encodeHealthCheckRequest,
    requestDeserialize: decodeHealthCheckRequest,
    responseSerialize: encodeHealthCheckResponse,
    responseDeserialize: decodeHealthCheckResponse,
    originalName: "Check"
  },
  watch: {
    path: "/grpc.health.v1.Health/Watch",
    requestStream: false,
    responseStream: true,
    requestSerialize: encodeHealthCheckRequest,
    requestDeserialize: decodeHealthCheckRequest,
    responseSerialize: encodeHealthCheckResponse,
    responseDeserialize: decodeHealthCheckResponse,
    originalName: "Watch"
  }
} satisfies grpc.ServiceDefinition

/** Health statuses and the Watch calls that follow them. */
class HealthRegistry {
  readonly statuses = new Map<string, HealthStatusNumber>()
  readonly watchers = new Map<string, Set<grpc.ServerWritableStream<HealthCheckRequest, HealthCheckResponse>>>()
  draining = false

  set(service: string, status: HealthStatusNumber): void {
    if (this.draining && status === HealthStatus.SERVING) return
    if (this.statuses.get(service) === status) return
    this.statuses.set(service, status)
    for (const watcher of this.watchers.get(service) ?? []) watcher.write({ status })
  }

  drain(): void {
    for (const service of this.statuses.keys()) this.set(service, HealthStatus.NOT_SERVING)
    this.draining = true
  }

  readonly implementation: grpc.UntypedServiceImplementation = {
    check: (
      call: grpc.ServerUnaryCall<HealthCheckRequest, HealthCheckResponse>,
      callback: grpc.sendUnaryData<HealthCheckResponse>
    ) => {
      const status = this.statuses.get(call.request.service)
      if (status === undefined) {
        callback({ code: grpc.status.NOT_FOUND, details: `unknown service ${call.request.service}` })
      } else {
        callback(null, { status })
      }
    },
    watch: (call: grpc.ServerWritableStream<HealthCheckRequest, HealthCheckResponse>) => {
      const service = call.request.service
      let watchers = this.watchers.get(service)
      if (watchers === undefined) this.watchers.set(service, watchers = new Set())
      watchers.add(call)
      call.on("cancelled", () => watchers.delete(call))
      call.write({ status: this.statuses.get(service) ?? HealthStatus.SERVICE_UNKNOWN })
    }
  }
}

// -----------------------------------------------------------------------------
// Calls in flight
// -----------------------------------------------------------------------------

interface ServerState {
  readonly inFlight: InFlightRegistryService
  readonly calls: Set<TrackedCall>
  /** Set at the cut: called when the last call has ended (its status written). */
  onIdle: (() => void) | undefined
}

/**
 * One call, from its start to its status: the interceptor's call object and
 * its in-flight entry.
 */
class TrackedCall extends grpc.ServerInterceptingCall implements Item {
  readonly kind = "grpc"
  readonly reportCut = true
  startedAt = 0
  readonly label: string
  readonly streaming: boolean
  readonly state: ServerState
  ended = false

  constructor(
    state: ServerState,
    descriptor: grpc.ServerMethodDefinition<unknown, unknown>,
    next: grpc.ServerInterceptingCallInterface
  ) {
    super(next, {
      // The call's end, whatever it is (status sent, client cancel, broken
      // connection): grpc-js reports each through the listener's onCancel.
      // (Called once the call starts, after construction.)
      start: (forward) => forward({ onCancel: () => this.leave() })
    })
    this.state = state
    this.label = descriptor.path
    this.streaming = descriptor.requestStream || descriptor.responseStream
  }

  enter(): boolean {
    if (!this.state.inFlight.addUnsafe(this)) return false
    this.state.calls.add(this)
    return true
  }

  leave(): void {
    if (this.ended) return
    this.ended = true
    this.state.calls.delete(this)
    this.state.inFlight.removeUnsafe(this)
    if (this.state.calls.size === 0) this.state.onIdle?.()
  }

  /** Ends the call with UNAVAILABLE: a status the client retries elsewhere, not a broken stream. */
  unavailable(details: string): void {
    if (this.ended) return
    this.sendStatus({ code: grpc.status.UNAVAILABLE, details, metadata: new grpc.Metadata() })
  }

  /** The drain deadline: a status, then `forceShutdown` (by the server's entry) closes the connection. */
  interrupt(): void {
    this.unavailable(`${SHUTTING_DOWN}: cut at the drain deadline`)
  }
}

/**
 * How long the cut waits for the statuses it sent to be written before
 * `forceShutdown`. A status after response messages goes out as trailers,
 * asynchronously; closing the connection first would turn it into a reset.
 */
const STATUS_FLUSH_MS = 250

/** The server from Closing on: one entry, so the drain waits for `tryShutdown` to finish. */
class ShutdownEntry implements Item {
  readonly kind = "grpc server"
  readonly reportCut = false
  startedAt = 0
  readonly label: string
  readonly server: grpc.Server
  readonly state: ServerState
  constructor(label: string, server: grpc.Server, state: ServerState) {
    this.label = label
    this.server = server
    this.state = state
  }
  interrupt(): void {
    // The calls cut with this entry are sending their UNAVAILABLE statuses:
    // close the connections once those are out (or after a short grace).
    let timer: NodeJS.Timeout | undefined
    const force = () => {
      clearTimeout(timer)
      this.state.onIdle = undefined
      this.server.forceShutdown()
    }
    if (this.state.calls.size === 0) return void setImmediate(force)
    this.state.onIdle = () => setImmediate(force)
    timer = setTimeout(force, STATUS_FLUSH_MS)
    timer.unref()
  }
}

const bind = (server: grpc.Server, address: string, credentials: grpc.ServerCredentials) =>
  Effect.callback<number, GrpcBindError>((resume) => {
    server.bindAsync(address, credentials, (error, port) => {
      if (error !== null) resume(Effect.fail(new GrpcBindError({ address, reason: error.message })))
      else resume(Effect.succeed(port))
    })
  })

/**
 * Serves gRPC for the life of the scope, with graceful shutdown (see the
 * module docs for the sequence). Returns once the server is bound; the
 * health service turns SERVING when the program is Ready.
 *
 * @example
 * ```ts
 * import * as grpc from "@grpc/grpc-js"
 * import { Layer } from "effect"
 * import { Graceful } from "effect-graceful"
 * import * as Grpc from "effect-graceful/Grpc"
 *
 * declare const greeter: grpc.ServiceDefinition
 *
 * const GrpcLive = Layer.effectDiscard(Grpc.serve({
 *   address: "0.0.0.0:50051",
 *   services: [[greeter, {
 *     sayHello: (call: grpc.ServerUnaryCall<{ name: string }, { message: string }>, callback: grpc.sendUnaryData<{ message: string }>) =>
 *       callback(null, { message: `hello ${call.request.name}` })
 *   }]]
 * }))
 *
 * Graceful.runMain(GrpcLive)
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const serve = (
  options: ServeOptions
): Effect.Effect<GrpcServer, GrpcBindError, Lifecycle.Lifecycle | InFlight | Scope.Scope> =>
  Effect.gen(function*() {
    const lifecycle = yield* Lifecycle.Lifecycle
    const inFlight = yield* inFlightRegistry
    const name = options.name ?? "grpc server"
    const endStreams = (options.streams ?? "end") === "end"
    const state: ServerState = { inFlight, calls: new Set(), onIdle: undefined }
    const health = new HealthRegistry()

    const track: grpc.ServerInterceptor = (descriptor, next) => {
      const call = new TrackedCall(state, descriptor, next)
      if (!call.enter()) {
        // Arrived after the cut: refused with a status, and reported by the set.
        call.ended = true
        queueMicrotask(() => call.sendStatus({ code: grpc.status.UNAVAILABLE, details: SHUTTING_DOWN }))
      }
      return call
    }

    const server = yield* Resource.make(
      name,
      Effect.sync(() =>
        new grpc.Server({
          ...options.serverOptions,
          interceptors: [track, ...(options.serverOptions?.interceptors ?? [])]
        })
      ),
      (server) => Effect.sync(() => server.forceShutdown())
    )
    for (const [definition, implementation] of options.services) server.addService(definition, implementation)
    const serviceNames = options.services.flatMap(([definition]) => {
      const first = Object.values(definition)[0]
      // "/package.Service/Method" → "package.Service"
      return first === undefined ? [] : [first.path.split("/")[1]!]
    })
    if (options.health !== false) server.addService(healthService, health.implementation)
    const port = yield* bind(server, options.address, options.credentials ?? grpc.ServerCredentials.createInsecure())

    for (const service of ["", ...serviceNames]) health.set(service, HealthStatus.NOT_SERVING)
    yield* Effect.forkScoped(
      lifecycle.awaitPhase("Ready").pipe(Effect.andThen(Effect.sync(() => {
        if (Lifecycle.isAtLeast(lifecycle.phaseUnsafe(), "Draining")) return
        for (const service of ["", ...serviceNames]) health.set(service, HealthStatus.SERVING)
      })))
    )

    yield* Lifecycle.addHook(`${name}: health NOT_SERVING`, "Draining", Effect.sync(() => health.drain()))
    yield* Lifecycle.addHook(
      `${name}: GOAWAY`,
      "Closing",
      Effect.sync(() => {
        health.drain()
        if (endStreams) { for (const call of [...state.calls]) if (call.streaming) call.unavailable(SHUTTING_DOWN) }
        const entry = new ShutdownEntry(`${name} shutdown`, server, state)
        const waiting = inFlight.addUnsafe(entry)
        server.tryShutdown(() => {
          if (waiting) inFlight.removeUnsafe(entry)
        })
      })
    )

    return {
      server,
      port,
      setStatus: (service, status) => health.set(service, HealthStatus[status]),
      calls: () => state.calls.size
    }
  })
