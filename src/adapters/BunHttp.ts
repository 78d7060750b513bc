/**
 * Effect's `HttpServer` on Bun (`@effect/platform-bun`'s `BunHttpServer`,
 * on `Bun.serve`) under the lifecycle: the same shutdown as `Http.layer`
 * gives on Node, with Bun's own server doing the socket work.
 *
 * What happens, by phase:
 *
 * - **Ready**: `/health/live` and `/health/ready` are answered before the
 *   application sees them.
 * - **Draining** (lame duck): readiness is 503, everything is still served;
 *   every request not yet answered, and every one that arrives, is in flight;
 *   every response says `Connection: close` (Bun closes the connection after
 *   it); WebSocket upgrades are answered 503.
 * - **Closing**: WebSockets get close code 1001. Once no request has
 *   arrived or been answered for `idleGrace` (default 100 ms: a keep-alive
 *   client may be writing its next request; at most ten idle graces after
 *   Closing however busy) and after one more turn of the event loop (Bun
 *   reads what is already on the wire), `server.stop()`: the
 *   listener closes, so a new connection is refused; idle keep-alive
 *   connections get a FIN; busy ones close after their response. A
 *   connection accepted before that is served with `Connection: close`.
 * - **Cutting** (the drain deadline): a handler still running is interrupted
 *   (its finalizers run) and its request answered 503 with
 *   `Connection: close` and `Retry-After: 1`; a streamed response whose head
 *   was sent is aborted (the client sees a truncated response, never a
 *   complete-looking one). Each cut is in the report.
 * - **Releasing**: what is left is answered 503, then `server.stop(true)`
 *   closes every connection.
 *
 * Not handled, because `Bun.serve` does not show them: a connection that has
 * sent nothing, or only part of a request head, is not seen until its request
 * is whole: `stop` closes it (Bun's `idleTimeout` applies to it, not
 * `newConnectionGrace`); a request a client writes on a keep-alive connection
 * after `stop` ended it meets a closed socket (Bun closes both directions; the
 * Node guard lingers); connections in the kernel's accept queue when the
 * listener closes are reset (Bun cannot shrink the backlog first); a socket inherited from a supervisor (`Listen`, socket
 * activation) is not supported.
 *
 * Why the Bun server is taken from `Bun.serve` while the layer is built:
 * `BunHttpServer` keeps it to itself, and stopping the listener at Closing
 * (not at the end of the scope) needs it. `Bun.serve` is wrapped only for the
 * duration of `BunHttpServer.make`.
 *
 * @since 0.3.0
 */
import * as BunHttpServer from "@effect/platform-bun/BunHttpServer"
import * as Config from "effect/Config"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as HttpServer from "effect/http/HttpServer"
import { ServeError } from "effect/http/HttpServerError"
import * as Layer from "effect/Layer"
import * as Health from "../Health.ts"
import type { InFlight } from "../InFlight.ts"
import { millisOr } from "../internal/base/duration.ts"
import * as BunGuard from "../internal/http/bunGuard.ts"
import { DEFAULT_CLOSE_REASON } from "../internal/http/refusal.ts"
import type * as Lifecycle from "../Lifecycle.ts"

/** Quiet time before the listener stops at Closing (Node's guard gives idle sockets the same). */
const DEFAULT_IDLE_GRACE = Duration.millis(100)

/**
 * What the guard adds to `BunHttpServer`'s options.
 *
 * @example
 * ```ts
 * import type * as BunHttp from "effect-graceful/BunHttp"
 *
 * const options: BunHttp.GuardOptions = { name: "api", readinessDetail: false }
 * ```
 *
 * @category models
 * @since 0.3.0
 */
export interface GuardOptions {
  /** The name of the server in the shutdown report. Default `"http server"`. */
  readonly name?: string | undefined
  /** Health route paths, or `false` to leave health routes to the application. */
  readonly health?: false | Partial<Health.Paths> | undefined
  /**
   * How long no request may have arrived or been answered before the
   * listener stops at Closing (`server.stop()` ends idle keep-alive
   * connections at once; a client may be writing its next request on one).
   * Default 100 ms.
   */
  readonly idleGrace?: Duration.Input | undefined
  /** The reason sent with WebSocket close code 1001. Default `"server shutting down"`. */
  readonly webSocketCloseReason?: string | undefined
  /** Whether `/health/ready` names each failing check's error text. Default `false`. */
  readonly readinessDetail?: boolean | undefined
}

/**
 * The options of {@link layer}: `BunHttpServer`'s (`port`, `hostname`,
 * `idleTimeout`, `websocket`, ...) and the guard's. `disablePreemptiveShutdown`
 * and `gracefulShutdownTimeout` are not taken: the lifecycle owns the
 * shutdown.
 *
 * @example
 * ```ts
 * import type * as BunHttp from "effect-graceful/BunHttp"
 *
 * const options: BunHttp.Options = { port: 3000, hostname: "127.0.0.1", name: "api" }
 * ```
 *
 * @category models
 * @since 0.3.0
 */
export type Options = WithoutShutdownOptions<Parameters<typeof BunHttpServer.make>[0]> & GuardOptions

/** `Omit` over each member of the union (a Unix socket or a host and port). */
type WithoutShutdownOptions<T> = T extends unknown ? Omit<T, "disablePreemptiveShutdown" | "gracefulShutdownTimeout">
  : never

/** The Bun runtime's global, as far as this module uses it. */
interface BunGlobal {
  serve: (...args: Array<unknown>) => BunGuard.BunServerHandle
}

const bunGlobal = (): BunGlobal | undefined => (globalThis as { readonly Bun?: BunGlobal }).Bun

/**
 * Runs `make` with `Bun.serve` wrapped to note the server it returns, and
 * puts `Bun.serve` back whatever happens.
 */
const capturingServer = <A, E, R>(
  bun: BunGlobal,
  make: Effect.Effect<A, E, R>
): Effect.Effect<readonly [A, BunGuard.BunServerHandle | undefined], E, R> =>
  Effect.suspend(() => {
    const original = bun.serve
    let server: BunGuard.BunServerHandle | undefined
    bun.serve = (...args) => (server = original.apply(bun, args))
    return make.pipe(
      Effect.map((made) => [made, server] as const),
      Effect.ensuring(Effect.sync(() => {
        bun.serve = original
      }))
    )
  })

/**
 * `BunHttpServer.layerServer` with the guard: an Effect `HttpServer` on
 * `Bun.serve` whose requests, keep-alive connections and WebSockets drain
 * gracefully. Serve an app on it as usual (`HttpRouter.serve`,
 * `HttpServer.serve`). On Node it fails at start-up, naming the runtime.
 *
 * @example
 * ```ts
 * import { Layer } from "effect"
 * import { HttpRouter, HttpServerResponse } from "effect/http"
 * import { Graceful } from "effect-graceful"
 * import * as BunHttp from "effect-graceful/BunHttp"
 *
 * const Routes = HttpRouter.add("GET", "/", HttpServerResponse.text("hello"))
 *
 * const ServerLive = HttpRouter.serve(Routes).pipe(
 *   Layer.provide(BunHttp.layer({ port: 3000 }))
 * )
 *
 * Graceful.runMain(ServerLive)
 * ```
 *
 * @category layers
 * @since 0.3.0
 */
export const layerServer = (
  options: Options
): Layer.Layer<HttpServer.HttpServer, ServeError, Lifecycle.Lifecycle | InFlight | Health.Health> =>
  Layer.effect(
    HttpServer.HttpServer,
    Effect.gen(function*() {
      const bun = bunGlobal()
      if (bun === undefined) {
        return yield* Effect.die(
          new Error(
            `effect-graceful/BunHttp serves on Bun.serve and runs on Bun only (this is ${process.release.name} ${process.version}); on Node use Http.layer`
          )
        )
      }
      const {
        health: healthPaths,
        idleGrace,
        name = "http server",
        readinessDetail,
        webSocketCloseReason,
        ...serveOptions
      } = options
      const [server, handle] = yield* capturingServer(
        bun,
        BunHttpServer.make({ ...serveOptions, disablePreemptiveShutdown: true })
      )
      if (handle === undefined) {
        return yield* new ServeError({ cause: new Error("Bun.serve was not called by BunHttpServer.make") })
      }
      const guard = yield* BunGuard.install({
        name,
        idleGraceMs: millisOr(idleGrace, DEFAULT_IDLE_GRACE),
        closeReason: webSocketCloseReason ?? DEFAULT_CLOSE_REASON,
        health: healthPaths === false ? false : { ...Health.defaultPaths, ...healthPaths },
        readinessDetail: readinessDetail === true
      }, handle)
      return HttpServer.make({
        address: server.address,
        serve: (app, middleware) =>
          middleware === undefined ? server.serve(guard.wrap(app)) : server.serve(guard.wrap(app), middleware)
      })
    })
  )

/**
 * {@link layerServer} plus the platform services `BunHttpServer.layer`
 * provides (`HttpPlatform`, `Etag.Generator`, `BunServices`).
 *
 * @example
 * ```ts
 * import * as BunHttp from "effect-graceful/BunHttp"
 *
 * const HttpLive = BunHttp.layer({ port: 3000, hostname: "127.0.0.1" })
 * ```
 *
 * @category layers
 * @since 0.3.0
 */
export const layer = (options: Options) => Layer.mergeAll(layerServer(options), BunHttpServer.layerHttpServices)

/**
 * {@link layer} with its options read through `Config` (a `Config` of the
 * options, or a record of one `Config` per option), as
 * `BunHttpServer.layerConfig` does.
 *
 * @example
 * ```ts
 * import { Config } from "effect"
 * import * as BunHttp from "effect-graceful/BunHttp"
 *
 * const HttpLive = BunHttp.layerConfig({
 *   port: Config.Port("PORT").pipe(Config.withDefault(3000)),
 *   hostname: Config.succeed("127.0.0.1")
 * })
 * ```
 *
 * @category layers
 * @since 0.3.0
 */
export const layerConfig = (options: Config.Wrap<Options>) =>
  Layer.unwrap(Effect.map(Config.unwrap(options), (resolved) => layer(resolved)))
