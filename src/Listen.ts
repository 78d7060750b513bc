/**
 * Where a server listens: a socket inherited from a supervisor (systemd
 * socket activation), or a port of its own, optionally shared with a
 * replacement through `SO_REUSEPORT`. What a restart on one machine loses
 * depends on who holds the port meanwhile:
 *
 * - **Socket activation** (systemd, launchd-style supervisors): the
 *   supervisor creates the listening socket and passes it to each instance
 *   (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`; descriptors from 3 on).
 *   When the guard closes the listener at Closing it closes this process's
 *   descriptor only: the socket stays open in the supervisor, so new
 *   connections wait in the kernel's accept queue until the next instance
 *   accepts them. Nothing is refused or reset across a restart.
 * - **`SO_REUSEPORT`** (`reusePort: true`, Node ≥ 22.12, Linux): the
 *   replacement binds the same port while the old instance still drains,
 *   and the kernel spreads new connections over both. When the old listener
 *   closes, the connections already in *its* accept queue are reset, unless
 *   `net.ipv4.tcp_migrate_req = 1` (Linux ≥ 5.14, per network namespace),
 *   which moves them to the replacement's queue. Set it on the host.
 * - **A port of its own**: between the old listener's close and the new
 *   one's listen, connections are refused. Use it behind a load balancer that
 *   takes the instance out first (readiness 503 + lame duck).
 *
 * `Http.layer`, `Http.serveNode` and `Health.serve` look for an inherited
 * socket themselves ({@link resolve}); {@link fromEnvironment} reads the
 * whole choice (`LISTEN_*`, `PORT`, `HOST`, `REUSE_PORT`) for a service that
 * wants to log it or decide itself.
 *
 * What this module does not do: it never creates, duplicates or keeps a
 * socket alive. With socket activation, the supervisor must hold the socket
 * across the restart (systemd does, for a `.socket` unit); a program that
 * passes its socket and exits leaves nothing to queue on.
 *
 * @since 0.1.0
 */
import * as Config from "effect/Config"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as Net from "node:net"

/** The first descriptor a supervisor passes (`SD_LISTEN_FDS_START`). */
const LISTEN_FDS_START = 3

/**
 * A listening socket inherited from the supervisor.
 *
 * @example
 * ```ts
 * import type { Listen } from "effect-graceful"
 *
 * const socket: Listen.Inherited = { _tag: "Inherited", fd: 3, name: "http" }
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface Inherited {
  readonly _tag: "Inherited"
  /** The descriptor: 3 for the first socket passed, 4 for the second, ... */
  readonly fd: number
  /**
   * Its name from `LISTEN_FDNAMES` (systemd's `FileDescriptorName=`, the
   * socket unit's name by default), when the supervisor gave one.
   */
  readonly name: string | undefined
}

/**
 * A port this process binds itself.
 *
 * @example
 * ```ts
 * import type { Listen } from "effect-graceful"
 *
 * const port: Listen.Port = { _tag: "Port", port: 3000, host: "127.0.0.1", reusePort: true }
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export interface Port {
  readonly _tag: "Port"
  readonly port: number
  readonly host: string | undefined
  /** `SO_REUSEPORT`: a replacement may bind the same port while this one drains. */
  readonly reusePort: boolean
}

/**
 * Where to listen.
 *
 * @example
 * ```ts
 * import type { Listen } from "effect-graceful"
 *
 * const describe = (target: Listen.Target) =>
 *   target._tag === "Inherited" ? `fd ${target.fd} (${target.name ?? "unnamed"})` : `port ${target.port}`
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export type Target = Inherited | Port

/**
 * The socket-activation variables are set for this process but do not make
 * sense, or name no socket this server can take.
 *
 * @example
 * ```ts
 * import { Listen } from "effect-graceful"
 *
 * const error = new Listen.ListenError({ variable: "LISTEN_FDS", value: "two", reason: "not a non-negative integer" })
 * ```
 *
 * @category errors
 * @since 0.1.0
 */
export class ListenError extends Data.TaggedError("ListenError")<{
  readonly variable: string
  readonly value: string
  readonly reason: string
}> {
  override get message(): string {
    return `${this.variable}=${JSON.stringify(this.value)}: ${this.reason}`
  }
}

/**
 * Which inherited socket a server takes.
 *
 * @example
 * ```ts
 * import * as http from "node:http"
 * import { Http } from "effect-graceful"
 *
 * // Under systemd: the socket unit says FileDescriptorName=api.
 * const HttpLive = Http.layer(() => http.createServer(), { port: 3000, fdName: "api" })
 * ```
 *
 * @category options
 * @since 0.1.0
 */
export interface SocketOptions {
  /**
   * The name of the inherited socket to listen on (`FileDescriptorName=` in
   * the `.socket` unit, `--fdname` for `systemd-socket-activate`). Default
   * `"http"` for `Http.layer` / `Http.serveNode`, `"health"` for
   * `Health.serve`.
   */
  readonly fdName?: string | undefined
  /**
   * Take the only inherited socket even when its name differs (systemd names
   * a socket after its unit unless `FileDescriptorName=` is set). Default
   * `true` for the HTTP server, `false` for `Health.serve`, which listens on
   * an inherited socket only when one carries its name.
   */
  readonly takeSole?: boolean | undefined
}

const parseCount = (variable: string, value: string): Effect.Effect<number, ListenError> =>
  /^\d+$/.test(value)
    ? Effect.succeed(Number(value))
    : Effect.fail(new ListenError({ variable, value, reason: "not a non-negative integer" }))

const optionalString = (name: string) =>
  Config.option(Config.String(name)).pipe(
    Effect.mapError((error) => new ListenError({ variable: name, value: "", reason: String(error) }))
  )

/**
 * The sockets passed to this process by socket activation, in descriptor
 * order; empty when `LISTEN_PID` is unset or names another process (the
 * variables were meant for a parent and leaked into this environment).
 * Read through Effect's `Config`, like `sd_listen_fds(3)`: `LISTEN_FDS`
 * sockets from descriptor 3 on, named by the colon-separated
 * `LISTEN_FDNAMES` when set.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Listen } from "effect-graceful"
 *
 * const program = Effect.gen(function*() {
 *   const sockets = yield* Listen.inheritedSockets
 *   yield* Effect.log(`inherited: ${sockets.map((s) => `${s.fd}=${s.name}`).join(", ")}`)
 * })
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const inheritedSockets: Effect.Effect<ReadonlyArray<Inherited>, ListenError> = Effect.gen(function*() {
  const pidText = yield* optionalString("LISTEN_PID")
  const fdsText = yield* optionalString("LISTEN_FDS")
  if (Option.isNone(pidText) || Option.isNone(fdsText)) return []
  const pid = yield* parseCount("LISTEN_PID", pidText.value)
  if (pid !== (yield* Effect.sync(() => process.pid))) return []
  const count = yield* parseCount("LISTEN_FDS", fdsText.value)
  const namesText = yield* optionalString("LISTEN_FDNAMES")
  const names = Option.isSome(namesText) ? namesText.value.split(":") : []
  if (Option.isSome(namesText) && names.length !== count) {
    return yield* new ListenError({
      variable: "LISTEN_FDNAMES",
      value: namesText.value,
      reason: `names ${names.length} sockets, LISTEN_FDS says ${count}`
    })
  }
  return Array.from({ length: count }, (_, i): Inherited => ({
    _tag: "Inherited",
    fd: LISTEN_FDS_START + i,
    name: names[i] === undefined || names[i] === "" ? undefined : names[i]
  }))
})

/**
 * The inherited socket a server listens on: the one named `fdName`, or,
 * with `takeSole`, the only one passed. `None` when there is none to take:
 * the server binds its port as usual.
 *
 * @example
 * ```ts
 * import { Effect, Option } from "effect"
 * import { Listen } from "effect-graceful"
 *
 * const metricsSocket = Listen.inherited({ fdName: "metrics", takeSole: false }).pipe(
 *   Effect.map(Option.map((socket) => socket.fd))
 * )
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const inherited = (
  options: SocketOptions = {}
): Effect.Effect<Option.Option<Inherited>, ListenError> =>
  Effect.map(inheritedSockets, (sockets) => {
    const fdName = options.fdName ?? "http"
    const named = sockets.find((socket) => socket.name === fdName)
    if (named !== undefined) return Option.some(named)
    return (options.takeSole ?? true) && sockets.length === 1 ? Option.some(sockets[0]!) : Option.none()
  })

/**
 * Where to listen, from the environment: the inherited socket when this
 * process was socket-activated (see {@link inherited}), otherwise `PORT` and
 * `HOST`, with `SO_REUSEPORT` when `REUSE_PORT=true`. Each variable falls
 * back to the value given here.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import * as http from "node:http"
 * import { Http, Listen } from "effect-graceful"
 *
 * const program = Effect.gen(function*() {
 *   const target = yield* Listen.fromEnvironment({ port: 3000, host: "127.0.0.1" })
 *   yield* Http.serveNode(() => http.createServer(), Listen.toListenOptions(target))
 * })
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const fromEnvironment = (
  defaults: SocketOptions & {
    readonly port?: number | undefined
    readonly host?: string | undefined
    readonly reusePort?: boolean | undefined
  } = {}
): Effect.Effect<Target, ListenError> =>
  Effect.gen(function*() {
    const socket = yield* inherited(defaults)
    if (Option.isSome(socket)) return socket.value
    const port = yield* Config.Int("PORT").pipe(
      Config.withDefault(defaults.port ?? 0),
      Effect.mapError((error) => new ListenError({ variable: "PORT", value: "", reason: String(error) }))
    )
    if (port < 0 || port > 65535) {
      return yield* new ListenError({ variable: "PORT", value: String(port), reason: "not a port (0 to 65535)" })
    }
    const host = yield* optionalString("HOST")
    const reusePort = yield* Config.Boolean("REUSE_PORT").pipe(
      Config.withDefault(defaults.reusePort ?? false),
      Effect.mapError((error) => new ListenError({ variable: "REUSE_PORT", value: "", reason: String(error) }))
    )
    return {
      _tag: "Port",
      port,
      host: Option.getOrElse(host, () => defaults.host),
      reusePort
    } satisfies Port
  })

/**
 * Node's `listen` options, with the descriptor form `{ fd }` that
 * `server.listen` also accepts.
 *
 * Node calls `listen(2)` again on a descriptor it is handed, with the
 * backlog passed to `server.listen` as an argument (511 when none is): that
 * caps the accept queue the supervisor keeps across a restart (systemd's
 * default `Backlog=` is `net.core.somaxconn`, 4096). `Http.serveNode` and
 * `Http.listen` pass `backlog` on; `Http.layer` (through `NodeHttpServer`)
 * and `Health.serve` do not, so their queue is 511 connections.
 *
 * @example
 * ```ts
 * import type { Listen } from "effect-graceful"
 *
 * const inherited: Listen.ListenOptions = { fd: 3, backlog: 4096 }
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export type ListenOptions = Net.ListenOptions & { readonly fd?: number | undefined }

/**
 * Node's `listen` options for a target.
 *
 * @example
 * ```ts
 * import { Listen } from "effect-graceful"
 *
 * const options = Listen.toListenOptions({ _tag: "Port", port: 3000, host: "127.0.0.1", reusePort: true })
 * // { port: 3000, host: "127.0.0.1", reusePort: true }
 * ```
 *
 * @category conversions
 * @since 0.1.0
 */
export const toListenOptions = (target: Target): ListenOptions =>
  target._tag === "Inherited"
    ? { fd: target.fd }
    : target.host === undefined
    ? { port: target.port, reusePort: target.reusePort }
    : { port: target.port, host: target.host, reusePort: target.reusePort }

/**
 * The options a server really listens with: unchanged when they already
 * name a descriptor, a path or a handle, or when no inherited socket is
 * there to take; otherwise the inherited socket replaces `port`, `host` and
 * `reusePort` (the rest, `backlog` included, is kept). This is what
 * `Http.layer`, `Http.serveNode` and `Health.serve` do before they listen.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import * as http from "node:http"
 * import { Http, Listen } from "effect-graceful"
 *
 * const program = Effect.gen(function*() {
 *   const options = yield* Listen.resolve({ port: 3000, host: "127.0.0.1" })
 *   yield* Http.listen(http.createServer(), options)
 * })
 * ```
 *
 * @category combinators
 * @since 0.1.0
 */
export const resolve = <O extends ListenOptions>(
  options: O,
  socket: SocketOptions = {}
): Effect.Effect<O, ListenError> =>
  options.fd !== undefined || options.path !== undefined || options.handle !== undefined
    ? Effect.succeed(options)
    : Effect.map(inherited(socket), (found) => {
      if (Option.isNone(found)) return options
      const { host: _host, port: _port, reusePort: _reusePort, ...rest } = options
      return { ...rest, fd: found.value.fd } as unknown as O
    })
