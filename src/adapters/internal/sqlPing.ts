/**
 * `SELECT 1` through the current `SqlClient` within a timeout: the readiness
 * check behind `Mysql.sqlPing` and `SqlPg.sqlPing`, each with its own error.
 *
 * @internal
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as SqlClient from "effect/sql/SqlClient"
import { reasonOf } from "../../internal/base/errors.ts"
import { DEFAULT_PING_TIMEOUT } from "./errors.ts"

export const sqlPing = <E>(
  name: string,
  timeout: Duration.Input | undefined,
  makeError: (fields: { readonly resource: string; readonly reason: string }) => E
): Effect.Effect<void, E, SqlClient.SqlClient> => {
  const duration = timeout === undefined ? DEFAULT_PING_TIMEOUT : Duration.fromInputUnsafe(timeout)
  return SqlClient.SqlClient.use((sql) => sql`SELECT 1`).pipe(
    Effect.mapError((error) => makeError({ resource: name, reason: reasonOf(error) })),
    Effect.timeoutOrElse({
      duration,
      orElse: () =>
        Effect.fail(makeError({ resource: name, reason: `no answer within ${Duration.toMillis(duration)} ms` }))
    }),
    Effect.asVoid
  )
}
