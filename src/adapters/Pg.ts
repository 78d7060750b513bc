/**
 * Postgres as part of the shutdown: a `pg.Pool` adapter that drains and then
 * cancels, a budgeted release for `@effect/sql-pg`'s client layer, and
 * readiness pings.
 *
 * **`pg.Pool`** ({@link makePool}, {@link fromPool}, {@link layerPool}). The
 * pool is a managed resource. At its release (in the Releasing phase, in
 * reverse acquisition order):
 *
 * 1. it stops handing out connections (`pool.end()`: idle connections close,
 *    `connect` fails from now on);
 * 2. queries still running (a request that was not tracked, a background
 *    job) get the release's slice, minus `cancelGrace`, to finish;
 * 3. at that point each query still running is cancelled with
 *    `pg_cancel_backend` from a separate connection, and logged; a connection
 *    still checked out after the grace (a leaked client, a transaction left
 *    open) is closed by force, so Postgres rolls it back;
 * 4. the pool ends. When anything had to be cancelled or forced, the release
 *    fails with a {@link PgPoolReleaseError} that names each query, so the
 *    shutdown report shows it.
 *
 * The slice is the release's `timeout`, bounded by what is left of the
 * shutdown budget. Work that uses the adapter's own `query`, `withClient` or
 * `transaction` is also cancelled on the server when its fiber is
 * interrupted (cut at the drain deadline): the query is cancelled on the
 * server, then the connection is closed rather than returned to the pool.
 *
 * **`@effect/sql-pg`** ({@link layerManaged}, {@link layerClient}). Its
 * client layer closes its pool when its scope closes, waiting for
 * connections in use; with no deadline and no name. {@link layerManaged}
 * gives that close a name, a deadline and a line in the report, in reverse
 * acquisition order with everything else. Interrupted `@effect/sql-pg`
 * queries (work cut at the drain deadline) are cancelled by the client
 * itself.
 *
 * **Readiness.** {@link ping} and {@link sqlPing} run `SELECT 1` within a
 * timeout and fail with {@link PgPingError}: `Effect<void, PgPingError>`,
 * the shape readiness checks take.
 *
 * `pg` and `@effect/sql-pg` are optional peer dependencies: this module only
 * loads the one you use, when you use it.
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import * as SqlClient from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import type * as Context from "effect/Context"
import type * as PgClient from "@effect/sql-pg/PgClient"
import type * as pg from "pg"
import { Lifecycle } from "../Lifecycle.ts"
import * as Resource from "../Resource.ts"
import { millisOr } from "../internal/duration.ts"
import { reasonOf } from "../internal/errors.ts"

// -----------------------------------------------------------------------------
// errors
// -----------------------------------------------------------------------------

/**
 * A query through the adapter failed (or the pool is ended). `code` is
 * Postgres' SQLSTATE when there is one (`57014`: cancelled).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import * as Pg from "effect-graceful/Pg"
 *
 * declare const db: Pg.ManagedPool
 * const count = db.query<{ n: string }>("SELECT count(*) AS n FROM users").pipe(
 *   Effect.catchTag("PgQueryError", (error) => Effect.logError(error.message).pipe(Effect.as(undefined)))
 * )
 * ```
 *
 * @since 0.1.0
 */
export class PgQueryError extends Data.TaggedError("PgQueryError")<{
  readonly name: string
  readonly reason: string
  readonly code: string | undefined
}> {
  override get message(): string {
    return `${this.name}: ${this.reason}${this.code === undefined ? "" : ` (SQLSTATE ${this.code})`}`
  }
}

/**
 * The readiness ping did not answer in time, or failed.
 *
 * @example
 * ```ts
 * import * as Pg from "effect-graceful/Pg"
 *
 * const error = new Pg.PgPingError({ name: "postgres", reason: "no answer within 2000 ms" })
 * error.message // "postgres: ping failed: no answer within 2000 ms"
 * ```
 *
 * @since 0.1.0
 */
export class PgPingError extends Data.TaggedError("PgPingError")<{
  readonly name: string
  readonly reason: string
}> {
  override get message(): string {
    return `${this.name}: ping failed: ${this.reason}`
  }
}

/**
 * A query cancelled at the end of the pool's release slice.
 *
 * @since 0.1.0
 */
export interface CancelledQuery {
  /** The backend's process id. */
  readonly pid: number
  /** The query text (first 200 characters). */
  readonly query: string
  /** How long it had been running when it was cancelled. */
  readonly runningMs: number
}

/**
 * The pool had to cancel queries or force connections closed at the end of
 * its slice. The pool is ended all the same; this error is what the
 * shutdown report shows for the release.
 *
 * @example
 * ```ts
 * import * as Pg from "effect-graceful/Pg"
 *
 * const error = new Pg.PgPoolReleaseError({
 *   name: "postgres",
 *   cancelled: [{ pid: 4242, query: "SELECT pg_sleep(60)", runningMs: 2100 }],
 *   forced: 0,
 *   ended: true
 * })
 * error.message
 * // 'postgres: cancelled 1 query still running at the end of the release slice: pid 4242 after 2100 ms: SELECT pg_sleep(60)'
 * ```
 *
 * @since 0.1.0
 */
export class PgPoolReleaseError extends Data.TaggedError("PgPoolReleaseError")<{
  readonly name: string
  readonly cancelled: ReadonlyArray<CancelledQuery>
  /** Connections still checked out after the cancel grace, closed by force. */
  readonly forced: number
  /** Whether the pool ended within the slice. */
  readonly ended: boolean
}> {
  override get message(): string {
    const parts: Array<string> = []
    if (this.cancelled.length > 0) {
      const n = this.cancelled.length
      parts.push(
        `cancelled ${n} ${n === 1 ? "query" : "queries"} still running at the end of the release slice: ` +
          this.cancelled.map((q) => `pid ${q.pid} after ${q.runningMs} ms: ${q.query}`).join("; ")
      )
    }
    if (this.forced > 0) parts.push(`closed ${this.forced} checked-out connection(s) by force`)
    if (!this.ended) parts.push("the pool did not end within its slice")
    return `${this.name}: ${parts.join("; ")}`
  }
}

// -----------------------------------------------------------------------------
// pg.Pool
// -----------------------------------------------------------------------------

/**
 * Options of the `pg.Pool` adapter.
 *
 * @since 0.1.0
 */
export interface PoolOptions {
  /** Names the pool in logs and in the report. Default `postgres`. */
  readonly name?: string | undefined
  /** The release slice. Default: what is left of the shutdown budget. */
  readonly timeout?: Duration.Input | undefined
  /**
   * The end of the slice kept for cancelling queries and ending the pool.
   * Default 1 second (at most half the slice).
   */
  readonly cancelGrace?: Duration.Input | undefined
  /** Timeout of {@link ManagedPool.ping}. Default 1 second. */
  readonly pingTimeout?: Duration.Input | undefined
}

/**
 * A `pg.Pool` whose release is part of the shutdown, with Effect wrappers
 * that cancel their query on the server when interrupted.
 *
 * @since 0.1.0
 */
export interface ManagedPool {
  readonly name: string
  /** The pool itself, for code that uses it directly (an Express app). */
  readonly pool: pg.Pool
  /** Runs one query on a pooled connection. */
  readonly query: <R extends pg.QueryResultRow = pg.QueryResultRow>(
    text: string,
    values?: ReadonlyArray<unknown>
  ) => Effect.Effect<pg.QueryResult<R>, PgQueryError>
  /** Lends a connection to `f`; it goes back to the pool when `f` ends. */
  readonly withClient: <A, E, R>(
    f: (client: ClientQuery) => Effect.Effect<A, E, R>
  ) => Effect.Effect<A, E | PgQueryError, R>
  /** Runs `f` in a transaction: COMMIT when it succeeds, ROLLBACK when it fails. */
  readonly transaction: <A, E, R>(
    f: (client: ClientQuery) => Effect.Effect<A, E, R>
  ) => Effect.Effect<A, E | PgQueryError, R>
  /** `SELECT 1` within the ping timeout: a readiness check. */
  readonly ping: Effect.Effect<void, PgPingError>
  /** How many connections are checked out now. */
  readonly checkedOut: () => number
}

/**
 * A connection lent by {@link ManagedPool.withClient}: queries on it as
 * Effects, and the `pg.PoolClient` itself.
 *
 * @since 0.1.0
 */
export interface ClientQuery {
  readonly client: pg.PoolClient
  readonly query: <R extends pg.QueryResultRow = pg.QueryResultRow>(
    text: string,
    values?: ReadonlyArray<unknown>
  ) => Effect.Effect<pg.QueryResult<R>, PgQueryError>
}


const errorCode = (error: unknown): string | undefined => {
  if (typeof error === "object" && error !== null && "code" in error && typeof error.code === "string") {
    return error.code
  }
  return undefined
}


/** pg sets `processID` from the server's BackendKeyData; @types/pg does not declare it. */
const backendPid = (client: pg.ClientBase): number | undefined => {
  const pid = (client as unknown as { readonly processID?: unknown }).processID
  return typeof pid === "number" ? pid : undefined
}

const loadPg = Effect.promise(() => import("pg")).pipe(Effect.map((module) => module.default))

/** Runs `f` with a short-lived connection of its own (not from the pool). */
const withSideConnection = <A>(
  config: pg.ClientConfig,
  applicationName: string,
  f: (client: pg.Client) => Promise<A>
): Promise<A> =>
  import("pg").then(async ({ default: pgModule }) => {
    const client = new pgModule.Client({ ...config, application_name: applicationName })
    client.on("error", () => {
      // the side connection is ours alone; errors reach the caller through its promise
    })
    await client.connect()
    try {
      return await f(client)
    } finally {
      await client.end().catch(() => undefined)
    }
  })

interface Activity {
  readonly pid: number
  readonly state: string | null
  readonly query: string | null
  readonly running_ms: string | number | null
  readonly cancelled: boolean
}

const CANCEL_SQL = `SELECT pid, state, left(query, 200) AS query,
  (extract(epoch FROM (clock_timestamp() - query_start)) * 1000)::bigint AS running_ms,
  CASE WHEN state = 'active' THEN pg_cancel_backend(pid) ELSE false END AS cancelled
FROM pg_stat_activity WHERE pid = ANY($1::int[])`

/** Cancels whatever the given backends are running; returns what they were doing. */
const cancelBackends = (
  config: pg.ClientConfig,
  name: string,
  pids: ReadonlyArray<number>
): Promise<ReadonlyArray<Activity>> =>
  pids.length === 0
    ? Promise.resolve([])
    : withSideConnection(config, `${String(config.application_name ?? name)} (cancel)`.slice(0, 63), async (client) => {
      const result = await client.query<Activity>(CANCEL_SQL, [pids])
      return result.rows
    })

const awaitPromise = (promise: Promise<unknown>, millis: number): Effect.Effect<boolean> =>
  millis <= 0
    ? Effect.sync(() => false)
    : Effect.promise(() => promise.then(() => true, () => true)).pipe(
      Effect.timeoutOption(millis),
      Effect.map((option) => option._tag === "Some")
    )

const manage = (pool: pg.Pool, options: PoolOptions) =>
  Effect.gen(function*() {
    const name = options.name ?? "postgres"
    const pingTimeoutMs = millisOr(options.pingTimeout, 1_000)
    const context = yield* Effect.context<never>()
    const runFork = Effect.runForkWith(context)
    const checkedOut = new Set<pg.PoolClient>()
    const config: pg.ClientConfig = pool.options

    const onAcquire = (client: pg.PoolClient) => void checkedOut.add(client)
    const onRelease = (_error: Error | undefined, client: pg.PoolClient) => void checkedOut.delete(client)
    const onRemove = (client: pg.PoolClient) => void checkedOut.delete(client)
    // An idle connection that dies emits `error` on the pool; with no
    // listener that would crash the process.
    const onError = (error: Error) => {
      runFork(Effect.logWarning(`${name}: an idle connection failed and was removed`, reasonOf(error)))
    }
    pool.on("acquire", onAcquire)
    pool.on("release", onRelease)
    pool.on("remove", onRemove)
    pool.on("error", onError)

    const queryError = (error: unknown) => new PgQueryError({ name, reason: reasonOf(error), code: errorCode(error) })

    /** A pooled connection; if the caller stops waiting, it is returned on arrival. */
    const connect = Effect.callback<pg.PoolClient, PgQueryError>((resume) => {
      let abandoned = false
      pool.connect().then(
        (client) => abandoned ? client.release() : resume(Effect.succeed(client)),
        (error) => {
          if (!abandoned) resume(Effect.fail(queryError(error)))
        }
      )
      return Effect.sync(() => {
        abandoned = true
      })
    })

    /** Per loan: queries running now, and whether the connection must not go back to the pool. */
    interface Loan {
      readonly client: pg.PoolClient
      count: number
      discard: boolean
    }

    const makeClientQuery = (client: pg.PoolClient, running: Loan): ClientQuery => ({
      client,
      query: <R extends pg.QueryResultRow>(text: string, values?: ReadonlyArray<unknown>) =>
        Effect.callback<pg.QueryResult<R>, PgQueryError>((resume) => {
          running.count++
          client.query<R>(text, values as Array<unknown> | undefined).then(
            (result) => {
              running.count--
              resume(Effect.succeed(result))
            },
            (error: unknown) => {
              running.count--
              resume(Effect.fail(queryError(error)))
            }
          )
        })
    })

    /**
     * Gets rid of a connection whose state is unknown (interrupted, or a
     * failed ROLLBACK): a query may still run on it, so cancel it on the
     * server first, then close the connection (a transaction left open is
     * rolled back). Until then it stays checked out, so the pool's release
     * waits for it.
     */
    const discard = (loan: Loan) => {
      const { client } = loan
      const pid = backendPid(client)
      void (loan.count > 0 && pid !== undefined
        ? cancelBackends(config, name, [pid]).then(() => undefined, () => undefined)
        : Promise.resolve()
      ).then(() => client.release(new Error(`${name}: connection discarded after an interruption`)))
    }

    const lend = Effect.map(connect, (client): Loan => ({ client, count: 0, discard: false }))

    const giveBack = (loan: Loan, exit: Exit.Exit<unknown, unknown>) =>
      Effect.sync(() => {
        if (loan.discard || loan.count > 0 || (Exit.isFailure(exit) && Exit.hasInterrupts(exit))) discard(loan)
        else loan.client.release()
      })

    const withClient = <A, E, R>(
      f: (client: ClientQuery) => Effect.Effect<A, E, R>
    ): Effect.Effect<A, E | PgQueryError, R> =>
      Effect.acquireUseRelease(
        lend,
        (loan) => f(makeClientQuery(loan.client, loan)),
        giveBack
      )

    const transaction = <A, E, R>(
      f: (client: ClientQuery) => Effect.Effect<A, E, R>
    ): Effect.Effect<A, E | PgQueryError, R> =>
      Effect.acquireUseRelease(
        lend,
        (loan) =>
          Effect.uninterruptibleMask((restore) =>
            Effect.gen(function*() {
              const client = makeClientQuery(loan.client, loan)
              yield* restore(client.query("BEGIN"))
              const exit = yield* Effect.exit(restore(f(client)))
              if (Exit.isSuccess(exit)) {
                // Once the work is done, COMMIT is not interrupted: a cut at
                // this point must not turn finished work into a rollback.
                yield* client.query("COMMIT")
                return exit.value
              }
              // Interrupted: the connection is discarded (so the server rolls
              // back) rather than made to wait for a ROLLBACK.
              if (Exit.hasInterrupts(exit)) loan.discard = true
              else yield* client.query("ROLLBACK").pipe(Effect.catch(() => Effect.sync(() => void (loan.discard = true))))
              return yield* exit
            })
          ),
        giveBack
      )

    const managed: ManagedPool = {
      name,
      pool,
      query: <R extends pg.QueryResultRow>(text: string, values?: ReadonlyArray<unknown>) =>
        withClient((client) => client.query<R>(text, values)),
      withClient,
      transaction,
      ping: ping(pool, { name, timeout: pingTimeoutMs }),
      checkedOut: () => checkedOut.size
    }

    const release = Effect.gen(function*() {
      const lifecycle = yield* Lifecycle
      const remaining = Duration.toMillis(yield* lifecycle.remaining)
      const timeoutMs = millisOr(options.timeout)
      const sliceMs = Math.min(timeoutMs ?? Number.POSITIVE_INFINITY, remaining)
      const graceMs = Math.min(millisOr(options.cancelGrace, 1_000), sliceMs / 2)
      const startedAt = Date.now()
      const left = () => sliceMs - (Date.now() - startedAt)

      // 1. Stop handing out connections; idle ones close now.
      const ended = pool.ending ? Promise.resolve() : pool.end()
      // 2. Queries in flight get the slice, minus the grace.
      if (yield* awaitPromise(ended, sliceMs - graceMs)) return
      // 3. Cancel what is still running, from a separate connection.
      const pids = [...checkedOut].map(backendPid).filter((pid): pid is number => pid !== undefined)
      const activity = yield* Effect.tryPromise(() => cancelBackends(config, name, pids)).pipe(
        Effect.timeoutOption(Math.max(0, left() / 2)),
        Effect.map((option) => option._tag === "Some" ? option.value : []),
        Effect.catch((error) =>
          Effect.logError(`${name}: could not cancel running queries`, reasonOf(error)).pipe(Effect.as([]))
        )
      )
      const cancelled: Array<CancelledQuery> = activity
        .filter((row) => row.cancelled)
        .map((row) => ({ pid: row.pid, query: row.query ?? "", runningMs: Number(row.running_ms ?? 0) }))
      for (const query of cancelled) {
        yield* Effect.logWarning(
          `${name}: cancelled a query still running at the end of the release slice (pid ${query.pid}, running ${query.runningMs} ms)`,
          query.query
        )
      }
      let endedInTime = yield* awaitPromise(ended, left() - Math.min(100, graceMs / 4))
      // 4. Whatever is still checked out (a leaked client, an open
      //    transaction) is closed by force, so the pool can end.
      let forced = 0
      if (!endedInTime) {
        for (const client of [...checkedOut]) {
          forced++
          checkedOut.delete(client)
          try {
            client.release(new Error(`${name}: closed by force at the end of the release slice`))
          } catch {
            // already released in the meantime
          }
        }
        endedInTime = yield* awaitPromise(ended, left())
      }
      if (cancelled.length > 0 || forced > 0 || !endedInTime) {
        return yield* new PgPoolReleaseError({ name, cancelled, forced, ended: endedInTime })
      }
    }).pipe(
      Effect.ensuring(Effect.sync(() => {
        pool.off("acquire", onAcquire)
        pool.off("release", onRelease)
        pool.off("remove", onRemove)
      }))
    )

    return { managed, release }
  })

/**
 * Takes charge of an existing `pg.Pool` (the one your Express app already
 * uses): its release becomes a managed one (see the module docs).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Graceful } from "effect-graceful"
 * import * as Pg from "effect-graceful/Pg"
 * import pg from "pg"
 *
 * const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, application_name: "orders" })
 *
 * const program = Effect.gen(function*() {
 *   const db = yield* Pg.fromPool(pool, { timeout: "5 seconds" })
 *   // app.get("/orders", (req, res) => pool.query(...)) keeps working as it is
 *   return yield* Effect.never
 * })
 *
 * Effect.runFork(Graceful.run(program))
 * ```
 *
 * @since 0.1.0
 */
export const fromPool = (
  pool: pg.Pool,
  options: PoolOptions = {}
): Effect.Effect<ManagedPool, never, Lifecycle | Scope.Scope> =>
  Resource.make(
    options.name ?? "postgres",
    manage(pool, options),
    ({ release }) => release,
    // The release keeps its own slice; the core's deadline adds a little room
    // so that the cancel step, not the core, has the last word.
    { timeout: options.timeout === undefined ? undefined : Duration.sum(Duration.fromInputUnsafe(options.timeout), Duration.millis(250)) }
  ).pipe(Effect.map(({ managed }) => managed))

/**
 * Creates a `pg.Pool` from its configuration and manages it like
 * {@link fromPool}. Set `application_name` so that `pg_stat_activity` shows
 * whose connections they are.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Graceful, InFlight } from "effect-graceful"
 * import * as Pg from "effect-graceful/Pg"
 *
 * const program = Effect.gen(function*() {
 *   const db = yield* Pg.makePool(
 *     { connectionString: process.env.DATABASE_URL, application_name: "orders", max: 10 },
 *     { timeout: "5 seconds", cancelGrace: "1 second" }
 *   )
 *   yield* InFlight.track(
 *     db.transaction((tx) => tx.query("INSERT INTO orders (id) VALUES ($1)", [42])),
 *     { kind: "job", label: "order 42" }
 *   )
 *   return yield* Effect.never
 * })
 *
 * Effect.runFork(Graceful.run(program))
 * ```
 *
 * @since 0.1.0
 */
export const makePool = (
  config: pg.PoolConfig,
  options: PoolOptions = {}
): Effect.Effect<ManagedPool, never, Lifecycle | Scope.Scope> =>
  Effect.flatMap(loadPg, (pgModule) => fromPool(new pgModule.Pool(config), options))

/**
 * A managed `pg.Pool` as a `Layer` under your own tag.
 *
 * @example
 * ```ts
 * import { Context } from "effect"
 * import * as Pg from "effect-graceful/Pg"
 *
 * class Db extends Context.Service<Db, Pg.ManagedPool>()("app/Db") {}
 *
 * const DbLive = Pg.layerPool(Db, { connectionString: process.env.DATABASE_URL, application_name: "orders" })
 * ```
 *
 * @since 0.1.0
 */
export const layerPool = <I>(
  tag: Context.Key<I, ManagedPool>,
  config: pg.PoolConfig,
  options?: PoolOptions
): Layer.Layer<I, never, Lifecycle> => Layer.effect(tag, makePool(config, options))

/**
 * `SELECT 1` on the pool within `timeout` (default 1 second): a readiness
 * check. A pool with no free connection for that long counts as not ready.
 *
 * @example
 * ```ts
 * import * as Pg from "effect-graceful/Pg"
 * import pg from "pg"
 *
 * declare const pool: pg.Pool
 * const checks = [["postgres", Pg.ping(pool, { timeout: "1 second" })]] as const
 * ```
 *
 * @since 0.1.0
 */
export const ping = (
  pool: pg.Pool,
  options: { readonly name?: string | undefined; readonly timeout?: Duration.Input | undefined } = {}
): Effect.Effect<void, PgPingError> => {
  const name = options.name ?? "postgres"
  const timeoutMs = millisOr(options.timeout, 1_000)
  return Effect.tryPromise({
    try: () => pool.query("SELECT 1"),
    catch: (error) => new PgPingError({ name, reason: reasonOf(error) })
  }).pipe(
    Effect.timeoutOrElse({
      duration: timeoutMs,
      orElse: () => Effect.fail(new PgPingError({ name, reason: `no answer within ${timeoutMs} ms` }))
    }),
    Effect.asVoid
  )
}

// -----------------------------------------------------------------------------
// @effect/sql-pg
// -----------------------------------------------------------------------------

/**
 * Options of {@link layerManaged}.
 *
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
 * import * as Pg from "effect-graceful/Pg"
 *
 * const SqlLive = Pg.layerManaged(
 *   PgClient.layer({ url: Redacted.make(process.env.DATABASE_URL!), applicationName: "orders" }),
 *   { name: "postgres", timeout: "5 seconds" }
 * )
 * ```
 *
 * @since 0.1.0
 */
export const layerManaged = <ROut, E, RIn>(
  layer: Layer.Layer<ROut, E, RIn>,
  options: ManagedLayerOptions = {}
): Layer.Layer<ROut, E, RIn | Lifecycle> =>
  Layer.effectContext(
    Resource.make(
      options.name ?? "postgres",
      Effect.gen(function*() {
        const scope = yield* Scope.make()
        const context = yield* Layer.buildWithScope(layer, scope).pipe(
          Effect.onExit((exit) => Exit.isFailure(exit) ? Scope.close(scope, exit) : Effect.void)
        )
        return { scope, context }
      }),
      ({ scope }, exit) => Scope.close(scope, exit),
      { timeout: options.timeout }
    ).pipe(Effect.map(({ context }) => context))
  )

/**
 * `@effect/sql-pg`'s client layer (`PgClient` and `SqlClient`) with its
 * release managed by {@link layerManaged}.
 *
 * @example
 * ```ts
 * import { Redacted } from "effect"
 * import * as Pg from "effect-graceful/Pg"
 *
 * const SqlLive = Pg.layerClient(
 *   { url: Redacted.make(process.env.DATABASE_URL!), applicationName: "orders" },
 *   { timeout: "5 seconds" }
 * )
 * ```
 *
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
 * import * as Pg from "effect-graceful/Pg"
 *
 * const readiness = Pg.sqlPing({ timeout: "1 second" })
 * ```
 *
 * @since 0.1.0
 */
export const sqlPing = (
  options: { readonly name?: string | undefined; readonly timeout?: Duration.Input | undefined } = {}
): Effect.Effect<void, PgPingError, SqlClient.SqlClient> => {
  const name = options.name ?? "postgres"
  const timeoutMs = millisOr(options.timeout, 1_000)
  return SqlClient.SqlClient.use((sql) => sql`SELECT 1`).pipe(
    Effect.mapError((error) => new PgPingError({ name, reason: reasonOf(error) })),
    Effect.timeoutOrElse({
      duration: timeoutMs,
      orElse: () => Effect.fail(new PgPingError({ name, reason: `no answer within ${timeoutMs} ms` }))
    }),
    Effect.asVoid
  )
}
