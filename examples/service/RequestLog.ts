/**
 * The request log: one JSON line per completed request, through the
 * library's JSONL writer (`effect-graceful/Jsonl`). Built first, so it is
 * released last: every request that completes during the drain still gets
 * its line, and the file is flushed, fsynced and closed at the very end.
 */
import { Context, Effect, Layer } from "effect"
import * as Jsonl from "../../src/adapters/Jsonl.ts"
import { ServiceConfig } from "./Config.ts"

/**
 * One line of the request log.
 *
 * @example
 * ```ts
 * import type { RequestLine } from "./RequestLog.ts"
 *
 * const line: RequestLine = { at: new Date().toISOString(), method: "GET", path: "/work", status: 200, durationMs: 12, id: "…" }
 * ```
 */
export interface RequestLine {
  readonly at: string
  readonly method: string
  readonly path: string
  readonly status: number
  readonly durationMs: number
  readonly id?: string
  readonly messages?: number
}

/**
 * The request log's writer.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { RequestLog } from "./RequestLog.ts"
 *
 * const write = RequestLog.use((log) => log.write({ at: "", method: "GET", path: "/", status: 200, durationMs: 0 }))
 * ```
 */
export class RequestLog extends Context.Service<RequestLog, Jsonl.JsonlWriter>()("service/RequestLog") {}

/**
 * Opens `LOG_FILE` (appending) as a managed release named `request log`.
 *
 * @example
 * ```ts
 * import { Layer } from "effect"
 * import { RequestLogLive } from "./RequestLog.ts"
 *
 * declare const ApiLive: Layer.Layer<never, never, import("./RequestLog.ts").RequestLog>
 * const Live = ApiLive.pipe(Layer.provide(RequestLogLive))
 * ```
 */
export const RequestLogLive = Layer.effect(
  RequestLog,
  Effect.gen(function*() {
    const config = yield* ServiceConfig
    const writer = yield* Jsonl.make(config.logFile, { name: "request log", timeout: "2 seconds" })
    yield* Effect.log(`request log: ${config.logFile}`)
    return writer
  })
)
