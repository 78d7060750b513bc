/**
 * The readiness-ping error shared by `effect-graceful/Pg` and
 * `effect-graceful/SqlPg`. It names no client's types, so that either
 * module's declarations stand without the other client installed.
 *
 * @internal
 */
import * as Data from "effect/Data"

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
export class PgPingError extends Data.TaggedError("PgPingError")<{
  /** The resource's name, as in logs and in the report (not `Error.name`, which stays the tag). */
  readonly resource: string
  readonly reason: string
}> {
  override get message(): string {
    return `${this.resource}: ping failed: ${this.reason}`
  }
}
