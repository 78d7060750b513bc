/**
 * Graceful shutdown for a `ws` WebSocket server that has its own port
 * (`new WebSocketServer({ port })`). A `ws` server attached to a server
 * guarded by `effect-graceful/Http` needs nothing more: the guard already
 * closes its sockets with 1001.
 *
 * - **Ready**: each connection is in the in-flight set.
 * - **Draining**: new upgrades are answered 503.
 * - **Closing**: the server stops accepting; each open socket gets close code
 *   1001 (going away) with a reason; the drain awaits the close handshakes.
 * - **Cutting**: sockets still open are terminated and reported.
 *
 * `ws` is an optional peer dependency; this module only talks to the
 * instance you pass.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type * as Http from "node:http"
import type { Duplex } from "node:stream"
import type { WebSocket, WebSocketServer } from "ws"
import { inFlightRegistry, pathOf } from "../Adapter.ts"
import { type InFlight } from "../InFlight.ts"
import { DEFAULT_CLOSE_REASON, REFUSAL_RESPONSE } from "../internal/http/refusal.ts"
import * as Lifecycle from "../Lifecycle.ts"
import * as Resource from "../Resource.ts"

/**
 * Options of {@link guard}.
 *
 * @category models
 * @since 0.1.0
 */
export interface GuardOptions {
  /** The name in the shutdown report. Default `"websocket server"`. */
  readonly name?: string | undefined
  /** The reason sent with close code 1001. Default `"server shutting down"`. */
  readonly closeReason?: string | undefined
}

/**
 * Makes a `ws` server graceful for the life of the scope.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { WebSocketServer } from "ws"
 * import * as WebSocket from "effect-graceful/WebSocket"
 *
 * const EchoLive = Effect.gen(function*() {
 *   const wss = new WebSocketServer({ port: 8080 })
 *   wss.on("connection", (ws) => ws.on("message", (data) => ws.send(data)))
 *   yield* WebSocket.guard(wss)
 * })
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const guard = (
  wss: WebSocketServer,
  options: GuardOptions = {}
): Effect.Effect<void, never, Lifecycle.Lifecycle | InFlight | Scope.Scope> =>
  Effect.gen(function*() {
    const lifecycle = yield* Lifecycle.Lifecycle
    const inFlight = yield* inFlightRegistry
    const name = options.name ?? "websocket server"
    const reason = options.closeReason ?? DEFAULT_CLOSE_REASON
    const leaves = new Map<WebSocket, () => void>()

    const handleUpgrade = wss.handleUpgrade.bind(wss)
    wss.handleUpgrade = ((request: Http.IncomingMessage, socket: Duplex, head: Buffer, callback) => {
      if (Lifecycle.isAtLeast(lifecycle.phaseUnsafe(), "Draining")) {
        socket.on("error", () => {})
        socket.end(REFUSAL_RESPONSE)
        return
      }
      handleUpgrade(request, socket, head, callback)
    }) as typeof wss.handleUpgrade

    const onConnection = (ws: WebSocket, request: Http.IncomingMessage) => {
      const leave = inFlight.enterUnsafe({
        kind: "websocket",
        label: `${request.method ?? "GET"} ${pathOf(request.url)}`,
        onCut: () => ws.terminate()
      })
      if (leave === undefined) return ws.terminate()
      leaves.set(ws, leave)
      ws.once("close", () => {
        leaves.delete(ws)
        leave()
      })
    }
    wss.on("connection", onConnection)

    yield* Lifecycle.addHook(
      `${name}: close 1001`,
      "Closing",
      Effect.sync(() => {
        // Stops the listener when `ws` owns one; existing sockets stay open.
        wss.close()
        for (const ws of wss.clients) ws.close(1001, reason)
      })
    )
    yield* Resource.addFinalizer(
      name,
      Effect.sync(() => {
        wss.off("connection", onConnection)
        for (const ws of wss.clients) ws.terminate()
      })
    )
  })
