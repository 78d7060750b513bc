/**
 * The readiness-ping error shared by `effect-graceful/Pg` and
 * `effect-graceful/SqlPg`. It names no client's types, so that either
 * module's declarations stand without the other client installed.
 *
 * @internal
 */
import { PingError } from "./errors.ts"

/**
 * The readiness ping did not answer in time, or failed.
 *
 * @example
 * ```ts
 * import * as Pg from "effect-graceful/Pg"
 *
 * const error = new Pg.PgPingError({ resource: "postgres", reason: "no answer within 2000 ms" })
 * error.message // "postgres: ping failed: no answer within 2000 ms"
 * ```
 *
 * @category errors
 * @since 0.1.0
 */
export class PgPingError extends PingError("PgPingError") {}
