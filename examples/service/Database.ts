/**
 * The database: one row per `/work` request.
 *
 * - `DATABASE_URL` set: a real Postgres through a managed `pg.Pool`
 *   (`effect-graceful/Pg`): at release it stops handing out connections,
 *   lets running queries finish within its slice, cancels what is left, and
 *   ends the pool. `DATABASE_CONNECT_TIMEOUT` (default `10 seconds`) bounds
 *   getting a connection: at start-up, retries included (each logged; a
 *   signal stops them at once), and for every query after. A connection
 *   reset under a query fails that request (500) and nothing else.
 * - unset: PGlite, Postgres compiled to WebAssembly, in this process (in
 *   memory, or in `PGLITE_DIR`), released by closing it (which also flushes
 *   it to disk).
 *
 * Either way it registers a readiness check, `database`, through
 * `Health.addCheck`: `/health/ready` answers 503 while the database does not
 * answer `SELECT 1` within 1 s.
 */
import { Config, Context, Data, Duration, Effect, Layer, Option } from "effect"
import * as Pg from "../../src/adapters/Pg.ts"
import * as Health from "../../src/Health.ts"
import * as Resource from "../../src/Resource.ts"
import * as ShutdownConfig from "../../src/ShutdownConfig.ts"
import { ServiceConfig } from "./Config.ts"

/**
 * A query failed.
 *
 * @example
 * ```ts
 * import { DatabaseError } from "./Database.ts"
 *
 * const error = new DatabaseError({ reason: "connection refused" })
 * ```
 */
export class DatabaseError extends Data.TaggedError("DatabaseError")<{ readonly reason: string }> {
  override get message(): string {
    return this.reason
  }
}

/**
 * What the service needs of its database.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Database } from "./Database.ts"
 *
 * const record = Database.use((db) => db.recordWork({ id: "w-1", ms: 10, startedAt: new Date() }))
 * ```
 */
export class Database extends Context.Service<Database, {
  /** `pglite` or `postgres`. */
  readonly kind: "pglite" | "postgres"
  /** Inserts the row of one `/work` request. */
  readonly recordWork: (work: { readonly id: string; readonly ms: number; readonly startedAt: Date }) => Effect.Effect<
    void,
    DatabaseError
  >
  /** How many rows the `work` table holds. */
  readonly countWork: Effect.Effect<number, DatabaseError>
  /** `SELECT 1`: the readiness check. */
  readonly ping: Effect.Effect<void, unknown>
}>()("service/Database") {}

/** The one table the service writes. */
export const schema = `CREATE TABLE IF NOT EXISTS work (
  id text PRIMARY KEY,
  ms integer NOT NULL,
  started_at timestamptz NOT NULL,
  finished_at timestamptz NOT NULL DEFAULT now()
)`

const insert = "INSERT INTO work (id, ms, started_at) VALUES ($1, $2, $3)"
const count = "SELECT count(*)::int AS n FROM work"

const reasonOf = (error: unknown) => error instanceof Error ? error.message : String(error)

const pglite = (dir: string | undefined) =>
  Effect.gen(function*() {
    const { PGlite } = yield* Effect.promise(() => import("@electric-sql/pglite"))
    const db = yield* Resource.make(
      "database (pglite)",
      Effect.tryPromise({
        try: () => PGlite.create(dir),
        catch: (error) => new DatabaseError({ reason: `cannot open PGlite: ${reasonOf(error)}` })
      }),
      (db) => Effect.promise(() => db.close()),
      { timeout: "5 seconds" }
    )
    const run = <R>(text: string, values?: Array<unknown>) =>
      Effect.tryPromise({
        try: () => db.query<R>(text, values),
        catch: (error) => new DatabaseError({ reason: reasonOf(error) })
      })
    yield* run(schema)
    return Database.of({
      kind: "pglite",
      recordWork: ({ id, ms, startedAt }) => Effect.asVoid(run(insert, [id, ms, startedAt.toISOString()])),
      countWork: Effect.map(run<{ n: number }>(count), (result) => result.rows[0]?.n ?? 0),
      ping: Effect.asVoid(run("SELECT 1"))
    })
  })

const postgres = (url: string) =>
  Effect.gen(function*() {
    // How long getting a connection may take: at start-up, retries included
    // (each logged; a database that stays unreachable fails the start-up
    // with the reason), and for each query after that.
    const connectTimeout = yield* ShutdownConfig.duration("DATABASE_CONNECT_TIMEOUT").pipe(
      Config.withDefault(Duration.seconds(10))
    )
    const pool = yield* Pg.makePool(
      { connectionString: url, application_name: "effect-graceful-example", max: 10 },
      { name: "database (postgres)", timeout: "5 seconds", connectTimeout }
    )
    const run = <R extends object>(text: string, values?: Array<unknown>) =>
      pool.query<R>(text, values).pipe(Effect.mapError((error) => new DatabaseError({ reason: error.message })))
    yield* run(schema)
    return Database.of({
      kind: "postgres",
      recordWork: ({ id, ms, startedAt }) => Effect.asVoid(run(insert, [id, ms, startedAt])),
      countWork: Effect.map(run<{ n: number }>(count), (result) => result.rows[0]?.n ?? 0),
      ping: pool.ping
    })
  })

/**
 * The database for the configuration: Postgres when `DATABASE_URL` is set,
 * PGlite otherwise; with its readiness check.
 *
 * @example
 * ```ts
 * import { Layer } from "effect"
 * import { DatabaseLive } from "./Database.ts"
 *
 * declare const ApiLive: Layer.Layer<never, never, import("./Database.ts").Database>
 * const Live = ApiLive.pipe(Layer.provide(DatabaseLive))
 * ```
 */
export const DatabaseLive = Layer.effect(
  Database,
  Effect.gen(function*() {
    const config = yield* ServiceConfig
    const db = Option.isSome(config.databaseUrl)
      ? yield* postgres(config.databaseUrl.value)
      : yield* pglite(Option.getOrUndefined(config.pgliteDir))
    yield* Health.addCheck("database", db.ping, { timeout: "1 second" })
    yield* Effect.log(
      `database: ${db.kind}${db.kind === "pglite" ? ` (${Option.getOrElse(config.pgliteDir, () => "in memory")})` : ""}`
    )
    return db
  })
)
