/**
 * The example service's composition, the same on Node (main.ts) and Bun
 * (bun.ts); only the HTTP server beneath the API differs.
 *
 * Layers are built in this order, and released in the reverse one:
 *
 * 1. config (`PORT`, `HOST`, `LOG_FILE`, `DATABASE_URL`, `REDIS_URL`; the
 *    library reads `SHUTDOWN_*` itself), and the start-up budget check
 *    against PM2's `kill_timeout` or the Kubernetes grace period
 * 2. the JSONL request log (`LOG_FILE`): released last, so the drain's
 *    requests still get their lines
 * 3. the database: PGlite in process, or Postgres with `DATABASE_URL`
 * 4. the subscription: in-process pub/sub, or Redis with `REDIS_URL`
 * 5. the HTTP API with health routes and a WebSocket echo: first to stop
 *
 * Each phase change is logged (`phase: Draining`, ...).
 */
import { Effect, Layer, type LogLevel, References } from "effect"
import * as Graceful from "../../src/Graceful.ts"
import { ApiLive, type ServerLayer } from "./Api.ts"
import { ConfigLive } from "./Config.ts"
import { DatabaseLive } from "./Database.ts"
import { EventsLive } from "./Events.ts"
import { PhaseLogLive } from "./PhaseLog.ts"
import { RequestLogLive } from "./RequestLog.ts"

// LOG_LEVEL (Debug, Info, Warn, ...; default Info): at Debug, each request's
// start is logged (`work started`), which the end-to-end tests wait for.
const minimumLogLevel = (process.env.LOG_LEVEL ?? "") as LogLevel.LogLevel
const logLevels: ReadonlyArray<string> = ["All", "Trace", "Debug", "Info", "Warn", "Error", "Fatal", "None"]

/**
 * The whole service on `server`, launched: what `runMain` runs.
 *
 * @example
 * ```ts
 * import { NodeRuntime } from "@effect/platform-node"
 * import * as Graceful from "../../src/Graceful.ts"
 * import { nodeServer } from "./Api.ts"
 * import { launch } from "./App.ts"
 *
 * launch(nodeServer).pipe(NodeRuntime.runMain({ teardown: Graceful.teardown }))
 * ```
 */
export const launch = (server: ServerLayer) =>
  // `Layer.provide` builds what it provides first: read from the bottom up.
  Graceful.launch(
    Layer.merge(ApiLive(server), PhaseLogLive).pipe(
      Layer.provide(EventsLive),
      Layer.provide(DatabaseLive),
      Layer.provide(RequestLogLive),
      Layer.provide(ConfigLive)
    )
  ).pipe(
    logLevels.includes(minimumLogLevel)
      ? Effect.provideService(References.MinimumLogLevel, minimumLogLevel)
      : (self) => self
  )
