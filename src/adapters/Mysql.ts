/**
 * MySQL and MariaDB as part of the shutdown, on `mysql2`: a pool that ends
 * only after the work using it is done, stops a query past its slice with
 * `KILL QUERY` from a side connection and says so, and leaves no
 * connection behind.
 *
 * **Pool** ({@link makePool}, {@link fromPool}, {@link layerPool}). The
 * `mysql2/promise` pool is a managed resource. Its release (in the
 * Releasing phase, in reverse acquisition order, so after the drain):
 *
 * 1. refuses new work through the adapter (`query`, `withConnection` and
 *    `transaction` fail with {@link MysqlQueryError});
 * 2. waits, for the release's slice minus `killGrace`, until no connection
 *    is checked out: a query or transaction that was not tracked (an
 *    Express handler, a background job) finishes. `mysql2`'s own
 *    `pool.end()` would not wait: it quits every connection at once and a
 *    transaction between two statements would be rolled back;
 * 3. then stops each query still running with `KILL QUERY <id>` from a side
 *    connection (the connection survives, the client gets
 *    `ER_QUERY_INTERRUPTED`), and logs it; a connection still checked out
 *    after that (a leaked one, an open transaction) is destroyed, so the
 *    server rolls it back;
 * 4. ends the pool: its connections quit, and
 *    `information_schema.processlist` holds none of them.
 *
 * When anything had to be killed or destroyed, the release fails with a
 * {@link MysqlPoolReleaseError} that names each query, so the shutdown
 * report shows it and the exit code says so (1), as for Postgres. The slice
 * is the release's `timeout`, bounded by what is left of the budget.
 *
 * Work that uses the adapter's `query`, `withConnection` or `transaction`
 * and is cut at the drain deadline stops on the server at once: its query
 * is killed, the connection destroyed rather than returned to the pool (an
 * open transaction is rolled back). A transaction whose work has finished
 * commits even if the cut arrives during the `COMMIT`.
 *
 * **`@effect/sql-mysql2`** ({@link layerManaged}). Gives any client layer
 * (its `MysqlClient.layer(...)` once a release for Effect 4.1 is published:
 * `4.0.0-rc.111` imports modules 4.1 renamed) a name, a deadline and a line
 * in the report. {@link sqlPing} is a readiness check on any `SqlClient`.
 *
 * `mysql2` is an optional peer dependency, loaded when a pool is made.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import type * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import type * as SqlClient from "effect/sql/SqlClient"
import type * as mysql from "mysql2/promise"
import { millisOr } from "../internal/base/duration.ts"
import { reasonOf } from "../internal/base/errors.ts"
import type { Lifecycle } from "../Lifecycle.ts"
import * as Resource from "../Resource.ts"
import { DEFAULT_PING_TIMEOUT, PingError } from "./internal/errors.ts"
import { managedLayer } from "./internal/managedLayer.ts"
import { releaseSliceMillis, settledWithin, withCleanupMargin } from "./internal/slice.ts"
import { sqlPing as sqlPingWith } from "./internal/sqlPing.ts"

const DEFAULT_KILL_GRACE = Duration.seconds(1)

// -----------------------------------------------------------------------------
// errors
// -----------------------------------------------------------------------------

/**
 * A query through the adapter failed, or the pool is closing. `code` is
 * mysql2's error code when there is one (`ER_QUERY_INTERRUPTED`: killed).
 *
 * @example
 * ```ts
 * import * as Mysql from "effect-graceful/Mysql"
 *
 * const error = new Mysql.MysqlQueryError({ resource: "mysql", reason: "Query execution was interrupted", code: "ER_QUERY_INTERRUPTED" })
 * error.message // "mysql: Query execution was interrupted (ER_QUERY_INTERRUPTED)"
 * ```
 *
 * @category errors
 * @since 0.1.0
 */
export class MysqlQueryError extends Data.TaggedError("MysqlQueryError")<{
  readonly resource: string
  readonly reason: string
  readonly code: string | undefined
}> {
  override get message(): string {
    return `${this.resource}: ${this.reason}${this.code === undefined ? "" : ` (${this.code})`}`
  }
}

/**
 * The readiness ping did not answer in time, or failed.
 *
 * @example
 * ```ts
 * import * as Mysql from "effect-graceful/Mysql"
 *
 * const error = new Mysql.MysqlPingError({ resource: "mysql", reason: "no answer within 1000 ms" })
 * error.message // "mysql: ping failed: no answer within 1000 ms"
 * ```
 *
 * @category errors
 * @since 0.1.0
 */
export class MysqlPingError extends PingError("MysqlPingError") {}

/**
 * A query stopped with `KILL QUERY` at the end of the pool's slice.
 *
 * @category models
 * @since 0.1.0
 */
export interface KilledQuery {
  /** The connection's id on the server (`CONNECTION_ID()`, the processlist's `ID`). */
  readonly id: number
  /** The statement (first 200 characters). */
  readonly query: string
  /** How long it had been running (the processlist's `TIME_MS`, or `TIME` in seconds on MySQL). */
  readonly runningMs: number
}

/**
 * The pool had to kill queries or destroy connections at the end of its
 * slice. The pool is ended all the same; this is what the report shows.
 *
 * @example
 * ```ts
 * import * as Mysql from "effect-graceful/Mysql"
 *
 * const error = new Mysql.MysqlPoolReleaseError({
 *   resource: "mysql",
 *   killed: [{ id: 42, query: "SELECT SLEEP(60)", runningMs: 1500 }],
 *   forced: 0,
 *   ended: true
 * })
 * error.message
 * // "mysql: killed 1 query still running at the end of the release slice: id 42 after 1500 ms: SELECT SLEEP(60)"
 * ```
 *
 * @category errors
 * @since 0.1.0
 */
export class MysqlPoolReleaseError extends Data.TaggedError("MysqlPoolReleaseError")<{
  readonly resource: string
  readonly killed: ReadonlyArray<KilledQuery>
  /** Connections still checked out after the kill grace, destroyed. */
  readonly forced: number
  /** Whether the pool ended within the slice. */
  readonly ended: boolean
}> {
  override get message(): string {
    const parts: Array<string> = []
    if (this.killed.length > 0) {
      const n = this.killed.length
      parts.push(
        `killed ${n} ${n === 1 ? "query" : "queries"} still running at the end of the release slice: ` +
          this.killed.map((q) => `id ${q.id} after ${q.runningMs} ms: ${q.query}`).join("; ")
      )
    }
    if (this.forced > 0) parts.push(`destroyed ${this.forced} checked-out connection(s)`)
    if (!this.ended) parts.push("the pool did not end within its slice")
    return `${this.resource}: ${parts.join("; ")}`
  }
}

// -----------------------------------------------------------------------------
// pool
// -----------------------------------------------------------------------------

/**
 * Options of the pool adapter.
 *
 * @category models
 * @since 0.1.0
 */
export interface PoolOptions {
  /** Names the pool in logs and in the report. Default `mysql`. */
  readonly name?: string | undefined
  /**
   * The release slice. Default: what is left of the shutdown budget. The
   * engine's deadline for the release is this plus 250 ms, so the pool's own
   * kill step finishes within the slice before the engine would cut it: the
   * report shows `deadlineMs: 5250` for `timeout: "5 seconds"`.
   */
  readonly timeout?: Duration.Input | undefined
  /** The end of the slice kept for killing queries and ending the pool. Default 1 second (at most half the slice). */
  readonly killGrace?: Duration.Input | undefined
  /** Timeout of {@link ManagedPool.ping}. Default 1 second. */
  readonly pingTimeout?: Duration.Input | undefined
}

/**
 * A connection lent by {@link ManagedPool.withConnection}: its queries as
 * Effects, and the connection itself.
 *
 * @category models
 * @since 0.1.0
 */
export interface ConnectionQuery {
  readonly connection: mysql.PoolConnection
  readonly query: <T extends mysql.QueryResult = mysql.RowDataPacket[]>(
    sql: string,
    values?: ReadonlyArray<unknown>
  ) => Effect.Effect<T, MysqlQueryError>
}

/**
 * A `mysql2/promise` pool whose release is part of the shutdown, with Effect
 * wrappers that kill their query on the server when interrupted.
 *
 * @category models
 * @since 0.1.0
 */
export interface ManagedPool {
  readonly name: string
  /** The pool itself, for code that uses it directly. */
  readonly pool: mysql.Pool
  /** Runs one statement on a pooled connection; returns the rows (or the `ResultSetHeader`). */
  readonly query: <T extends mysql.QueryResult = mysql.RowDataPacket[]>(
    sql: string,
    values?: ReadonlyArray<unknown>
  ) => Effect.Effect<T, MysqlQueryError>
  /** Lends a connection to `f`; it goes back to the pool when `f` ends. */
  readonly withConnection: <A, E, R>(
    f: (connection: ConnectionQuery) => Effect.Effect<A, E, R>
  ) => Effect.Effect<A, E | MysqlQueryError, R>
  /** Runs `f` in a transaction: COMMIT when it succeeds, ROLLBACK when it fails. */
  readonly transaction: <A, E, R>(
    f: (connection: ConnectionQuery) => Effect.Effect<A, E, R>
  ) => Effect.Effect<A, E | MysqlQueryError, R>
  /** `SELECT 1` within the ping timeout: a readiness check. */
  readonly ping: Effect.Effect<void, MysqlPingError>
  /** How many connections are checked out now. */
  readonly checkedOut: () => number
}

/** What the adapter reads of mysql2's callback-style pool and connections (`pool.pool`). */
interface CorePool {
  on(event: "acquire" | "release", listener: (connection: CoreConnection) => void): unknown
  off(event: "acquire" | "release", listener: (connection: CoreConnection) => void): unknown
  readonly config: { readonly connectionConfig: Readonly<Record<string, unknown>> }
}

interface CoreConnection {
  readonly threadId: number | null
  readonly stream?: { readonly destroyed?: boolean } | undefined
  destroy(): void
}

const errorCode = (error: unknown): string | undefined =>
  typeof error === "object" && error !== null && "code" in error && typeof error.code === "string"
    ? error.code
    : undefined

/** The connection options a side connection needs, from the pool's own. */
const sideConfig = (core: CorePool): mysql.ConnectionOptions => {
  const config = core.config.connectionConfig
  const picked: Record<string, unknown> = {}
  for (const key of ["host", "port", "user", "password", "database", "socketPath"] as const) {
    if (config[key] !== undefined) picked[key] = config[key]
  }
  if (typeof config.ssl === "object" && config.ssl !== null) picked.ssl = config.ssl
  return picked as mysql.ConnectionOptions
}

interface ProcessRow {
  readonly ID: number
  readonly COMMAND: string
  readonly TIME: number
  readonly TIME_MS?: number | string | undefined
  readonly INFO: string | null
}

/** Kills the statements the given connections are running, from a connection of its own; returns what they were. */
const killQueries = async (
  config: mysql.ConnectionOptions,
  ids: ReadonlyArray<number>
): Promise<Array<KilledQuery>> => {
  if (ids.length === 0) return []
  const { createConnection } = await import("mysql2/promise")
  const side = await createConnection(config)
  try {
    const [rows] = await side.query<Array<ProcessRow & mysql.RowDataPacket>>(
      "SELECT * FROM information_schema.PROCESSLIST WHERE ID IN (?)",
      [ids]
    )
    const killed: Array<KilledQuery> = []
    for (const row of rows) {
      if (row.COMMAND !== "Query") continue
      await side.query("KILL QUERY ?", [row.ID])
      killed.push({
        id: Number(row.ID),
        query: (row.INFO ?? "").slice(0, 200),
        runningMs: Math.round(row.TIME_MS !== undefined ? Number(row.TIME_MS) : Number(row.TIME) * 1000)
      })
    }
    return killed
  } finally {
    await side.end().catch(() => side.destroy())
  }
}

/** What the parts of a managed pool share. */
interface PoolState {
  readonly name: string
  readonly pool: mysql.Pool
  readonly core: CorePool
  /** The options of the side connection that kills queries. */
  readonly config: mysql.ConnectionOptions
  /** Connections checked out now (by the adapter or by code using the pool directly). */
  readonly checkedOut: Set<CoreConnection>
  /** Set when the release starts: the adapter lends no more connections. */
  closing: boolean
  /** Resolved once no connection is checked out. */
  idleWaiters: Array<() => void>
}

/** Connections destroyed while checked out never come back as `release`. */
const prune = (state: PoolState): void => {
  for (const connection of state.checkedOut) {
    if (connection.stream?.destroyed === true) state.checkedOut.delete(connection)
  }
}

const notifyIdle = (state: PoolState): void => {
  prune(state)
  if (state.checkedOut.size > 0) return
  const waiters = state.idleWaiters
  state.idleWaiters = []
  for (const resolve of waiters) resolve()
}

/** Settles once no connection is checked out. */
const idle = (state: PoolState): Promise<void> =>
  new Promise((resolve) => {
    state.idleWaiters.push(resolve)
    notifyIdle(state)
  })

/** Follows which connections are checked out; returns what undoes it. */
const watchPool = (state: PoolState): () => void => {
  const onAcquire = (connection: CoreConnection) => void state.checkedOut.add(connection)
  const onRelease = (connection: CoreConnection) => {
    state.checkedOut.delete(connection)
    notifyIdle(state)
  }
  state.core.on("acquire", onAcquire)
  state.core.on("release", onRelease)
  return () => {
    state.core.off("acquire", onAcquire)
    state.core.off("release", onRelease)
  }
}

const queryError = (name: string, error: unknown) =>
  new MysqlQueryError({ resource: name, reason: reasonOf(error), code: errorCode(error) })

/** Per loan: statements running now, and whether the connection must not go back to the pool. */
interface Loan {
  readonly connection: mysql.PoolConnection
  running: number
  discard: boolean
}

/** A pooled connection; if the caller stops waiting, it is returned on arrival. */
const lend = (state: PoolState): Effect.Effect<Loan, MysqlQueryError> =>
  Effect.callback<Loan, MysqlQueryError>((resume) => {
    if (state.closing) {
      resume(Effect.fail(new MysqlQueryError({ resource: state.name, reason: "the pool is closing", code: undefined })))
      return
    }
    let abandoned = false
    state.pool.getConnection().then(
      (connection) =>
        abandoned ? connection.release() : resume(Effect.succeed({ connection, running: 0, discard: false })),
      (error: unknown) => {
        if (!abandoned) resume(Effect.fail(queryError(state.name, error)))
      }
    )
    return Effect.sync(() => {
      abandoned = true
    })
  })

const queryOn = (name: string, loan: Loan): ConnectionQuery["query"] => (sql, values) =>
  Effect.callback((resume) => {
    loan.running++
    loan.connection.query(sql, values as Array<unknown> | undefined).then(
      ([result]) => {
        loan.running--
        resume(Effect.succeed(result as never))
      },
      (error: unknown) => {
        loan.running--
        resume(Effect.fail(queryError(name, error)))
      }
    )
  })

/**
 * Gets rid of a connection whose state is unknown (interrupted, or a
 * failed ROLLBACK): kills what it runs, then destroys it (the server
 * rolls back an open transaction). It stays checked out until then, so
 * the pool's release waits for it.
 */
const discard = (state: PoolState, loan: Loan): void => {
  const core = loan.connection.connection as unknown as CoreConnection
  const id = loan.connection.threadId
  void (loan.running > 0 && typeof id === "number"
    ? killQueries(state.config, [id]).then(() => undefined, () => undefined)
    : Promise.resolve()).then(() => {
      core.destroy()
      state.checkedOut.delete(core)
      notifyIdle(state)
    })
}

const giveBack = (state: PoolState) => (loan: Loan, exit: Exit.Exit<unknown, unknown>) =>
  Effect.sync(() => {
    if (loan.discard || loan.running > 0 || (Exit.isFailure(exit) && Exit.hasInterrupts(exit))) discard(state, loan)
    else loan.connection.release()
  })

const withConnection = <A, E, R>(
  state: PoolState,
  f: (connection: ConnectionQuery) => Effect.Effect<A, E, R>
): Effect.Effect<A, E | MysqlQueryError, R> =>
  Effect.acquireUseRelease(
    lend(state),
    (loan) => f({ connection: loan.connection, query: queryOn(state.name, loan) }),
    giveBack(state)
  )

const transaction = <A, E, R>(
  state: PoolState,
  f: (connection: ConnectionQuery) => Effect.Effect<A, E, R>
): Effect.Effect<A, E | MysqlQueryError, R> =>
  Effect.acquireUseRelease(
    lend(state),
    (loan) =>
      Effect.uninterruptibleMask((restore) =>
        Effect.gen(function*() {
          const lent: ConnectionQuery = { connection: loan.connection, query: queryOn(state.name, loan) }
          yield* restore(lent.query("BEGIN"))
          const exit = yield* Effect.exit(restore(f(lent)))
          if (Exit.isSuccess(exit)) {
            // Once the work is done, COMMIT is not interrupted: a cut now
            // must not turn finished work into a rollback.
            yield* lent.query("COMMIT")
            return exit.value
          }
          if (Exit.hasInterrupts(exit)) loan.discard = true
          else yield* lent.query("ROLLBACK").pipe(Effect.catch(() => Effect.sync(() => void (loan.discard = true))))
          return yield* exit
        })
      ),
    giveBack(state)
  )

/**
 * Steps 2 and 3 of the release, once the slice minus the grace is over:
 * kills what is still running, from a side connection, then destroys what
 * is still checked out. `left` reads the milliseconds left of the slice.
 */
const stopStragglers = (
  state: PoolState,
  left: Effect.Effect<number>,
  graceMs: number
): Effect.Effect<{ readonly killed: ReadonlyArray<KilledQuery>; readonly forced: number }> =>
  Effect.gen(function*() {
    const { checkedOut, config, name } = state
    prune(state)
    const ids = [...checkedOut].map((connection) => connection.threadId).filter((id): id is number =>
      typeof id === "number"
    )
    const killed = yield* Effect.tryPromise(() => killQueries(config, ids)).pipe(
      Effect.timeoutOption(Math.max(0, (yield* left) / 2)),
      Effect.map((option): ReadonlyArray<KilledQuery> => option._tag === "Some" ? option.value : []),
      Effect.catch((error) =>
        Effect.logError(`${name}: could not kill running queries`, reasonOf(error.cause)).pipe(Effect.as([]))
      )
    )
    for (const query of killed) {
      yield* Effect.logWarning(
        `${name}: killed a query still running at the end of the release slice (id ${query.id}, running ${query.runningMs} ms)`,
        query.query
      )
    }
    let forced = 0
    // What is still checked out (a leaked connection, an open transaction)
    // is destroyed: the server rolls it back.
    if (!(yield* settledWithin(idle(state), (yield* left) - Math.min(100, graceMs / 4)))) {
      prune(state)
      for (const connection of [...checkedOut]) {
        forced++
        checkedOut.delete(connection)
        connection.destroy()
      }
    }
    return { killed, forced }
  })

/** The pool's release: the four steps of the module docs. */
const releasePool = (state: PoolState, options: PoolOptions): Effect.Effect<void, MysqlPoolReleaseError, Lifecycle> =>
  Effect.gen(function*() {
    state.closing = true
    const sliceMs = yield* releaseSliceMillis(options.timeout)
    const graceMs = Math.min(millisOr(options.killGrace, DEFAULT_KILL_GRACE), sliceMs / 2)
    const startedAt = yield* Clock.currentTimeMillis
    const left = Effect.map(Clock.currentTimeMillis, (now) => sliceMs - (now - startedAt))

    // 1. Work still using a connection gets the slice, minus the grace.
    const idleInTime = yield* settledWithin(idle(state), sliceMs - graceMs)
    // 2, 3. Kill what is still running, destroy what is still checked out.
    const { forced, killed } = idleInTime ? { killed: [], forced: 0 } : yield* stopStragglers(state, left, graceMs)
    // 4. End the pool: every connection quits.
    const ended = yield* settledWithin(state.pool.end(), Math.max(1, yield* left))
    if (killed.length > 0 || forced > 0 || !ended) {
      return yield* new MysqlPoolReleaseError({ resource: state.name, killed, forced, ended })
    }
  })

const manage = (pool: mysql.Pool, options: PoolOptions) =>
  Effect.sync(() => {
    const name = options.name ?? "mysql"
    const core = pool.pool as unknown as CorePool
    const state: PoolState = {
      name,
      pool,
      core,
      config: sideConfig(core),
      checkedOut: new Set(),
      closing: false,
      idleWaiters: []
    }
    const unwatch = watchPool(state)
    const managed: ManagedPool = {
      name,
      pool,
      query: (sql, values) => withConnection(state, (connection) => connection.query(sql, values)),
      withConnection: (f) => withConnection(state, f),
      transaction: (f) => transaction(state, f),
      ping: ping(pool, { name, timeout: options.pingTimeout }),
      checkedOut: () => {
        prune(state)
        return state.checkedOut.size
      }
    }
    return { managed, release: releasePool(state, options).pipe(Effect.ensuring(Effect.sync(unwatch))) }
  })

/**
 * Takes charge of an existing `mysql2/promise` pool: its release becomes a
 * managed one (see the module docs).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Graceful } from "effect-graceful"
 * import * as Mysql from "effect-graceful/Mysql"
 * import mysql from "mysql2/promise"
 *
 * const pool = mysql.createPool({ uri: process.env.DATABASE_URL!, connectionLimit: 10 })
 *
 * const program = Effect.gen(function*() {
 *   const db = yield* Mysql.fromPool(pool, { timeout: "5 seconds" })
 *   // app.get("/orders", (req, res) => pool.query(...)) keeps working as it is
 *   return yield* Effect.never
 * })
 *
 * Effect.runFork(Graceful.run(program))
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const fromPool = (
  pool: mysql.Pool,
  options: PoolOptions = {}
): Effect.Effect<ManagedPool, never, Lifecycle | Scope.Scope> =>
  Resource.make(
    options.name ?? "mysql",
    manage(pool, options),
    ({ release }) => release,
    // The release keeps its own slice; the core's deadline adds a named
    // margin so that the kill step, not the core, has the last word.
    { timeout: withCleanupMargin(options.timeout) }
  ).pipe(Effect.map(({ managed }) => managed))

/**
 * Creates a `mysql2/promise` pool from its options and manages it like
 * {@link fromPool}.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Graceful, InFlight } from "effect-graceful"
 * import * as Mysql from "effect-graceful/Mysql"
 *
 * const program = Effect.gen(function*() {
 *   const db = yield* Mysql.makePool(
 *     { host: "127.0.0.1", user: "app", database: "shop", connectionLimit: 10 },
 *     { timeout: "5 seconds", killGrace: "1 second" }
 *   )
 *   yield* InFlight.track(
 *     db.transaction((tx) => tx.query("INSERT INTO orders (id) VALUES (?)", [42])),
 *     { kind: "job", label: "order 42" }
 *   )
 *   return yield* Effect.never
 * })
 *
 * Effect.runFork(Graceful.run(program))
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const makePool = (
  config: mysql.PoolOptions,
  options: PoolOptions = {}
): Effect.Effect<ManagedPool, never, Lifecycle | Scope.Scope> =>
  Effect.flatMap(
    Effect.promise(() => import("mysql2/promise")),
    (module) => fromPool(module.createPool(config), options)
  )

/**
 * A managed pool as a `Layer` under your own tag.
 *
 * @example
 * ```ts
 * import { Context } from "effect"
 * import * as Mysql from "effect-graceful/Mysql"
 *
 * class Db extends Context.Service<Db, Mysql.ManagedPool>()("app/Db") {}
 *
 * const DbLive = Mysql.layerPool(Db, { host: "127.0.0.1", user: "app", database: "shop" })
 * ```
 *
 * @category layers
 * @since 0.1.0
 */
export const layerPool = <I>(
  tag: Context.Key<I, ManagedPool>,
  config: mysql.PoolOptions,
  options?: PoolOptions
): Layer.Layer<I, never, Lifecycle> => Layer.effect(tag, makePool(config, options))

/**
 * `SELECT 1` on the pool within `timeout` (default 1 second): a readiness
 * check.
 *
 * @example
 * ```ts
 * import * as Mysql from "effect-graceful/Mysql"
 * import type mysql from "mysql2/promise"
 *
 * declare const pool: mysql.Pool
 * const checks = [["mysql", Mysql.ping(pool, { timeout: "1 second" })]] as const
 * ```
 *
 * @category readiness
 * @since 0.1.0
 */
export const ping = (
  pool: mysql.Pool,
  options: { readonly name?: string | undefined; readonly timeout?: Duration.Input | undefined } = {}
): Effect.Effect<void, MysqlPingError> => {
  const name = options.name ?? "mysql"
  const timeoutMs = millisOr(options.timeout, DEFAULT_PING_TIMEOUT)
  return Effect.tryPromise({
    try: () => pool.query("SELECT 1"),
    catch: (error) => new MysqlPingError({ resource: name, reason: reasonOf(error) })
  }).pipe(
    Effect.timeoutOrElse({
      duration: timeoutMs,
      orElse: () => Effect.fail(new MysqlPingError({ resource: name, reason: `no answer within ${timeoutMs} ms` }))
    }),
    Effect.asVoid
  )
}

// -----------------------------------------------------------------------------
// SQL client layers
// -----------------------------------------------------------------------------

/**
 * Builds `layer` (an `@effect/sql-mysql2` client layer, or any layer) in a
 * scope of its own and closes it as a named, budgeted release: in reverse
 * acquisition order with everything else, within its deadline, recorded in
 * the report.
 *
 * @example
 * ```ts
 * import { Layer } from "effect"
 * import * as Mysql from "effect-graceful/Mysql"
 *
 * // MysqlClient.layer({ url: Redacted.make(process.env.DATABASE_URL!) }) from @effect/sql-mysql2
 * declare const MysqlLive: Layer.Layer<never>
 *
 * const SqlLive = Mysql.layerManaged(MysqlLive, { name: "mysql", timeout: "5 seconds" })
 * ```
 *
 * @category layers
 * @since 0.1.0
 */
export const layerManaged = <ROut, E, RIn>(
  layer: Layer.Layer<ROut, E, RIn>,
  options: { readonly name?: string | undefined; readonly timeout?: Duration.Input | undefined } = {}
): Layer.Layer<ROut, E, RIn | Lifecycle> => managedLayer(layer, options.name ?? "mysql", options.timeout)

/**
 * `SELECT 1` through the current `SqlClient` within `timeout` (default 1
 * second): a readiness check.
 *
 * @example
 * ```ts
 * import * as Mysql from "effect-graceful/Mysql"
 *
 * const readiness = Mysql.sqlPing({ timeout: "1 second" })
 * ```
 *
 * @category readiness
 * @since 0.1.0
 */
export const sqlPing = (
  options: { readonly name?: string | undefined; readonly timeout?: Duration.Input | undefined } = {}
): Effect.Effect<void, MysqlPingError, SqlClient.SqlClient> =>
  sqlPingWith(options.name ?? "mysql", options.timeout, (fields) => new MysqlPingError(fields))
