/**
 * `@effect/sql-pg` as part of the shutdown: its client layer's release made
 * a named, budgeted step of the sequence, and a readiness ping through
 * `SqlClient`.
 *
 * `@effect/sql-pg`'s client layer closes its pool when its scope closes,
 * waiting for connections in use, with no deadline and no name.
 * {@link layerManaged} gives that close a name, a deadline and a line in the
 * report, in reverse acquisition order with everything else. Interrupted
 * `@effect/sql-pg` queries (work cut at the drain deadline) are cancelled by
 * the client itself.
 *
 * For a plain `pg.Pool`, use `effect-graceful/Pg`. The two modules are
 * separate so that a user of one client never needs the other's package or
 * types: this one names `@effect/sql-pg`'s types only, and loads it only
 * when {@link layerClient} is built.
 *
 * @since 0.2.0
 */
import type * as PgClient from "@effect/sql-pg/PgClient"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as SqlClient from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import type { Lifecycle } from "../Lifecycle.ts"
import { managedLayer } from "./internal/managedLayer.ts"
import { PgPingError } from "./internal/pgPing.ts"
import { sqlPing as sqlPingWith } from "./internal/sqlPing.ts"

export {
  /**
   * The readiness ping did not answer in time, or failed (the same class as
   * `Pg.PgPingError`).
   *
   * @category errors
   * @since 0.1.0
   */
  PgPingError
} from "./internal/pgPing.ts"

/**
 * Options of {@link layerManaged}.
 *
 * @category models
 * @since 0.1.0
 */
export interface ManagedLayerOptions {
  /** Names the release in logs and in the report. Default `postgres`. */
  readonly name?: string | undefined
  /** The release's own deadline. Bounded by the shutdown budget. */
  readonly timeout?: Duration.Input | undefined
}

/**
 * Builds `layer` in a scope of its own and closes that scope as a named,
 * budgeted release: in reverse acquisition order with everything else,
 * within its deadline, recorded in the report. Made for
 * `PgClient.layer(...)`; works for any layer.
 *
 * @example
 * ```ts
 * import { PgClient } from "@effect/sql-pg"
 * import { Redacted } from "effect"
 * import * as SqlPg from "effect-graceful/SqlPg"
 *
 * const SqlLive = SqlPg.layerManaged(
 *   PgClient.layer({ url: Redacted.make(process.env.DATABASE_URL!), applicationName: "orders" }),
 *   { name: "postgres", timeout: "5 seconds" }
 * )
 * ```
 *
 * @category layers
 * @since 0.1.0
 */
export const layerManaged = <ROut, E, RIn>(
  layer: Layer.Layer<ROut, E, RIn>,
  options: ManagedLayerOptions = {}
): Layer.Layer<ROut, E, RIn | Lifecycle> => managedLayer(layer, options.name ?? "postgres", options.timeout)

/**
 * `@effect/sql-pg`'s client layer (`PgClient` and `SqlClient`) with its
 * release managed by {@link layerManaged}.
 *
 * @example
 * ```ts
 * import { Redacted } from "effect"
 * import * as SqlPg from "effect-graceful/SqlPg"
 *
 * const SqlLive = SqlPg.layerClient(
 *   { url: Redacted.make(process.env.DATABASE_URL!), applicationName: "orders" },
 *   { timeout: "5 seconds" }
 * )
 * ```
 *
 * @category layers
 * @since 0.1.0
 */
export const layerClient = (
  config: PgClient.PgPoolConfig,
  options?: ManagedLayerOptions
): Layer.Layer<PgClient.PgClient | SqlClient.SqlClient, SqlError, Lifecycle> =>
  layerManaged(
    Layer.unwrap(
      Effect.promise(() => import("@effect/sql-pg/PgClient")).pipe(Effect.map((module) => module.layer(config)))
    ),
    options
  )

/**
 * `SELECT 1` through the current `SqlClient` within `timeout` (default 1
 * second): a readiness check for `@effect/sql-pg` (or any SQL client).
 *
 * @example
 * ```ts
 * import * as SqlPg from "effect-graceful/SqlPg"
 *
 * const readiness = SqlPg.sqlPing({ timeout: "1 second" })
 * ```
 *
 * @category readiness
 * @since 0.1.0
 */
export const sqlPing = (
  options: { readonly name?: string | undefined; readonly timeout?: Duration.Input | undefined } = {}
): Effect.Effect<void, PgPingError, SqlClient.SqlClient> =>
  sqlPingWith(options.name ?? "postgres", options.timeout, (fields) => new PgPingError(fields))
