/**
 * The HTTP API: an Effect `HttpRouter` app on the guarded Node server
 * (`Http.layer` from `effect-graceful/Http`), which also answers
 * `/health/live` and `/health/ready`.
 *
 * - `GET /work?ms=N`: waits N ms (0 to 60000, default 0), writes one row to
 *   the database and one line to the request log, announces it on the
 *   subscription channel, answers 200 `{ ok, id, ms, durationMs }`. The row
 *   is the commit point: a failure before it answers 500 (nothing was done,
 *   retry); a failure after it (log line, announcement) still answers 200,
 *   with `warnings` naming the failed step (the work is done; a retry would
 *   do it twice).
 * - `POST /work?ms=N`: the same, as a request a proxy must not retry once
 *   sent (non-idempotent); its body is read and ignored.
 * - `GET /ws`: a WebSocket echo; one request-log line when it closes.
 * - `GET /events`: server-sent events (`effect-graceful/Sse`), one every
 *   100 ms, ids 1, 2, 3, ...; with `Last-Event-ID: n` the stream resumes at
 *   n + 1, so a client moved to another instance at shutdown loses nothing.
 */
import type { FileSystem, Path } from "effect"
import { Effect, Layer, Schedule, Stream } from "effect"
import type { HttpServerRequest } from "effect/http"
import type { Etag, HttpPlatform, HttpServerError } from "effect/http"
import { HttpRouter, HttpServer, HttpServerResponse } from "effect/http"
import { randomUUID } from "node:crypto"
import * as NodeHttp from "node:http"
import type * as Health from "../../src/Health.ts"
import * as Http from "../../src/Http.ts"
import type * as InFlight from "../../src/InFlight.ts"
import type * as Lifecycle from "../../src/Lifecycle.ts"
import * as Sse from "../../src/Sse.ts"
import { ServiceConfig } from "./Config.ts"
import { Database } from "./Database.ts"
import { Events } from "./Events.ts"
import { RequestLog } from "./RequestLog.ts"

/** How often `/events` sends an event, in ms. */
export const EVENT_INTERVAL_MS = 100

/** The first id after `Last-Event-ID` (1 without one, or when it is not a count). */
const resumeAfter = (lastEventId: string | undefined): number => {
  const last = Number(lastEventId)
  return lastEventId !== undefined && Number.isSafeInteger(last) && last >= 0 ? last + 1 : 1
}

/** The longest `/work` the API accepts, in ms. */
export const MAX_WORK_MS = 60_000

const parseMs = (url: string): number | undefined => {
  const raw = new URL(url, "http://localhost").searchParams.get("ms")
  if (raw === null || raw === "") return 0
  const ms = Number(raw)
  return Number.isInteger(ms) && ms >= 0 && ms <= MAX_WORK_MS ? ms : undefined
}

const Routes = Layer.unwrap(Effect.gen(function*() {
  const db = yield* Database
  const log = yield* RequestLog
  const events = yield* Events
  const sse = yield* Sse.make({ retry: "500 millis" })

  const work = (request: HttpServerRequest.HttpServerRequest) =>
    Effect.gen(function*() {
      const ms = parseMs(request.url)
      if (ms === undefined) {
        return HttpServerResponse.jsonUnsafe({ ok: false, error: `ms must be an integer from 0 to ${MAX_WORK_MS}` }, {
          status: 400
        })
      }
      if (request.method === "POST") yield* Effect.ignore(request.text)
      const id = randomUUID()
      const startedAt = new Date()
      yield* Effect.logDebug(`work started ms=${ms}`)
      yield* Effect.sleep(ms)
      // The row is the commit point: once it is written the work is done,
      // and an error answer would invite a retry that does it twice. A later
      // step that fails (the log line, the announcement) is logged at ERROR
      // and named in `warnings`; the answer stays 200.
      yield* db.recordWork({ id, ms, startedAt })
      const durationMs = Date.now() - startedAt.getTime()
      const warnings: Array<string> = []
      const afterCommit = <E extends { readonly _tag: string }>(step: string, effect: Effect.Effect<void, E>) =>
        effect.pipe(
          Effect.catch((error) =>
            Effect.logError(`/work ${id}: ${step} failed after the row was committed`, error).pipe(
              Effect.andThen(Effect.sync(() => void warnings.push(`${step}: ${error._tag}`)))
            )
          )
        )
      // Acknowledged (handed to the OS) before the response is sent.
      yield* afterCommit(
        "request log",
        log.write({ at: new Date().toISOString(), method: request.method, path: "/work", status: 200, durationMs, id })
      )
      yield* afterCommit("announcement", events.publish(JSON.stringify({ id, ms })))
      return HttpServerResponse.jsonUnsafe(
        warnings.length === 0 ? { ok: true, id, ms, durationMs } : { ok: true, id, ms, durationMs, warnings }
      )
    }).pipe(
      Effect.catch((error) =>
        Effect.logError("/work failed", error).pipe(
          Effect.as(HttpServerResponse.jsonUnsafe({ ok: false, error: error._tag }, { status: 500 }))
        )
      )
    )

  const echo = (request: HttpServerRequest.HttpServerRequest) =>
    Effect.gen(function*() {
      const startedAt = Date.now()
      let messages = 0
      yield* Effect.gen(function*() {
        const socket = yield* request.upgrade
        const writer = yield* socket.writer
        const reader = yield* socket.reader
        while (true) {
          const chunks = yield* reader.pull
          for (const chunk of chunks) {
            messages++
            yield* writer.write(chunk)
          }
        }
      }).pipe(Effect.scoped, Effect.ignore)
      yield* log.write({
        at: new Date().toISOString(),
        method: "GET",
        path: "/ws",
        status: 101,
        durationMs: Date.now() - startedAt,
        messages
      }).pipe(Effect.ignore)
      return HttpServerResponse.empty()
    })

  // Event n is the same on every instance: a client resumed elsewhere
  // continues the same sequence.
  const ticks = sse.response(({ lastEventId }) =>
    Stream.iterate(resumeAfter(lastEventId), (n) => n + 1).pipe(
      Stream.schedule(Schedule.spaced(EVENT_INTERVAL_MS)),
      Stream.map((n) => ({ id: n, data: JSON.stringify({ n }) }))
    )
  )

  return Layer.mergeAll(
    HttpRouter.add("GET", "/work", work),
    HttpRouter.add("POST", "/work", work),
    HttpRouter.add("GET", "/ws", echo),
    HttpRouter.add("GET", "/events", ticks)
  )
}))

const AnnounceAddress = (host: string) =>
  Layer.effectDiscard(
    HttpServer.HttpServer.use((server) =>
      Effect.log(`listening on http://${host}:${"port" in server.address ? server.address.port : "?"}`)
    )
  )

/**
 * The guarded HTTP server the API runs on, made from the configuration:
 * `Http.layer` on Node (the default), `BunHttp.layer` on Bun (bun.ts).
 */
export type ServerLayer = (config: ServiceConfig["Service"]) => Layer.Layer<
  HttpServer.HttpServer | HttpPlatform.HttpPlatform | Etag.Generator | FileSystem.FileSystem | Path.Path,
  HttpServerError.ServeError,
  Lifecycle.Lifecycle | InFlight.InFlight | Health.Health
>

/** The API's server on Node: the guarded `node:http` server. */
export const nodeServer: ServerLayer = (config) =>
  Http.layer(
    // Longer than a load balancer's idle timeout, as it should be; the guard
    // ends idle keep-alive sockets at shutdown, so it never waits this out.
    () => NodeHttp.createServer({ keepAliveTimeout: 65_000 }),
    // Socket activation (LISTEN_FDS) wins over port and host, by itself.
    { port: config.port, host: config.host, reusePort: config.reusePort }
  )

/**
 * The API on the guarded server, listening on `HOST:PORT`.
 *
 * @example
 * ```ts
 * import { Layer } from "effect"
 * import { ApiLive, nodeServer } from "./Api.ts"
 * import { ConfigLive } from "./Config.ts"
 *
 * // needs Database, RequestLog, Events and the services Graceful.run provides
 * const Partial = ApiLive(nodeServer).pipe(Layer.provide(ConfigLive))
 * ```
 */
export const ApiLive = (server: ServerLayer) =>
  Layer.unwrap(Effect.gen(function*() {
    const config = yield* ServiceConfig
    return Layer.mergeAll(
      HttpRouter.serve(Routes, { disableLogger: true, disableListenLog: true }),
      AnnounceAddress(config.host)
    ).pipe(Layer.provide(server(config)))
  }))
