/**
 * Postgres as part of the shutdown: a `pg.Pool` adapter that drains and then
 * cancels, survives connections that fail under it, and bounds every wait
 * for the server; and readiness pings.
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
 * **Faults.** A connection that fails while it is lent (the server restarts,
 * fails over, or resets the connection mid-query) fails the query running on
 * it with a {@link PgQueryError}; the connection is discarded and the service
 * keeps serving. Getting a connection is bounded by `connectTimeout` and can
 * be interrupted at any moment (a request cut at the drain deadline while it
 * waits for a connection to a frozen server lets the shutdown go on). On
 * acquisition the pool opens one connection, retrying connection failures
 * (each logged) for up to `connectTimeout`, and fails with a
 * {@link PgConnectError} that names the server if it cannot.
 *
 * **Readiness.** {@link ping} runs `SELECT 1` within a timeout and fails
 * with {@link PgPingError}: `Effect<void, PgPingError>`, the shape readiness
 * checks take.
 *
 * `pg` is an optional peer dependency, loaded when {@link makePool} runs.
 * This module names `pg`'s types only; for `@effect/sql-pg`, use
 * `effect-graceful/SqlPg`.
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
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import type * as pg from "pg"
import { millisOr } from "../internal/base/duration.ts"
import { reasonOf } from "../internal/base/errors.ts"
import * as Lifecycle from "../Lifecycle.ts"
import * as Resource from "../Resource.ts"
import { DEFAULT_PING_TIMEOUT } from "./internal/errors.ts"
import { PgPingError } from "./internal/pgPing.ts"
import { settledWithin, withCleanupMargin } from "./internal/slice.ts"

const DEFAULT_CANCEL_GRACE = Duration.seconds(1)
const DEFAULT_CONNECT_TIMEOUT = Duration.seconds(10)

export {
  /**
   * The readiness ping did not answer in time, or failed.
   *
   * @category errors
   * @since 0.1.0
   */
  PgPingError
} from "./internal/pgPing.ts"

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
 * @category errors
 * @since 0.1.0
 */
export class PgQueryError extends Data.TaggedError("PgQueryError")<{
  /** The resource's name, as in logs and in the report (not `Error.name`, which stays the tag). */
  readonly resource: string
  readonly reason: string
  readonly code: string | undefined
}> {
  override get message(): string {
    return `${this.resource}: ${this.reason}${this.code === undefined ? "" : ` (SQLSTATE ${this.code})`}`
  }
}

/**
 * The pool could not open its first connection at acquisition: connection
 * failures were retried (each logged) until `connectTimeout`, or the server
 * refused it for a reason a retry does not fix (authentication, an unknown
 * database). Names the server, never the password.
 *
 * @example
 * ```ts
 * import * as Pg from "effect-graceful/Pg"
 *
 * const error = new Pg.PgConnectError({
 *   resource: "postgres",
 *   endpoint: "db.internal:5432",
 *   attempts: 7,
 *   timeoutMs: 10000,
 *   reason: "connect ECONNREFUSED 10.0.0.7:5432"
 * })
 * error.message
 * // "postgres: cannot connect to Postgres at db.internal:5432 within 10000 ms (7 attempts; last error: connect ECONNREFUSED 10.0.0.7:5432)"
 * ```
 *
 * @category errors
 * @since 0.2.0
 */
export class PgConnectError extends Data.TaggedError("PgConnectError")<{
  /** The resource's name, as in logs and in the report (not `Error.name`, which stays the tag). */
  readonly resource: string
  /** `host:port` (or the socket path) of the server. */
  readonly endpoint: string
  readonly attempts: number
  /** The deadline that ran out; `undefined` when the server refused outright. */
  readonly timeoutMs: number | undefined
  /** The (last) error. */
  readonly reason: string
}> {
  override get message(): string {
    return this.timeoutMs === undefined
      ? `${this.resource}: cannot connect to Postgres at ${this.endpoint}: ${this.reason}`
      : `${this.resource}: cannot connect to Postgres at ${this.endpoint} within ${this.timeoutMs} ms (${this.attempts} ${
        this.attempts === 1 ? "attempt" : "attempts"
      }; last error: ${this.reason})`
  }
}

/**
 * A query cancelled at the end of the pool's release slice.
 *
 * @category models
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
 * A query of interrupted work that could not be cancelled on the server
 * (the server did not answer the cancel request, or refused it).
 *
 * @category models
 * @since 0.2.0
 */
export interface UncancelledQuery {
  /** The backend's process id. */
  readonly pid: number
  /** Why the cancel request failed. */
  readonly reason: string
}

/**
 * The pool had to cancel queries or force connections closed at the end of
 * its slice, could not cancel the queries of work interrupted during the
 * shutdown (the server did not answer), or did not end within its slice.
 * The pool is ended all the same; this error is what the shutdown report
 * shows for the release.
 *
 * @example
 * ```ts
 * import * as Pg from "effect-graceful/Pg"
 *
 * const error = new Pg.PgPoolReleaseError({
 *   resource: "postgres",
 *   cancelled: [{ pid: 4242, query: "SELECT pg_sleep(60)", runningMs: 2100 }],
 *   uncancelled: [],
 *   forced: 0,
 *   abandonedConnects: 0,
 *   ended: true
 * })
 * error.message
 * // 'postgres: cancelled 1 query still running at the end of the release slice: pid 4242 after 2100 ms: SELECT pg_sleep(60)'
 * ```
 *
 * @category errors
 * @since 0.1.0
 */
export class PgPoolReleaseError extends Data.TaggedError("PgPoolReleaseError")<{
  /** The resource's name, as in logs and in the report (not `Error.name`, which stays the tag). */
  readonly resource: string
  readonly cancelled: ReadonlyArray<CancelledQuery>
  /** Queries of interrupted work the server was not reached to cancel. */
  readonly uncancelled: ReadonlyArray<UncancelledQuery>
  /** Connections still checked out after the cancel grace, closed by force. */
  readonly forced: number
  /** Connections still being opened after the cancel grace (the server did not answer), abandoned. */
  readonly abandonedConnects: number
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
    if (this.uncancelled.length > 0) {
      const n = this.uncancelled.length
      parts.push(
        `could not cancel ${n} ${n === 1 ? "query" : "queries"} of interrupted work on the server (${
          this.uncancelled[0]!.reason
        }); the connection${n === 1 ? " was" : "s were"} closed`
      )
    }
    if (this.forced > 0) parts.push(`closed ${this.forced} checked-out connection(s) by force`)
    if (this.abandonedConnects > 0) {
      parts.push(`abandoned ${this.abandonedConnects} connection attempt(s) the server did not answer`)
    }
    if (!this.ended) parts.push("the pool did not end within its slice")
    return `${this.resource}: ${parts.join("; ")}`
  }
}

// -----------------------------------------------------------------------------
// pg.Pool
// -----------------------------------------------------------------------------

/**
 * Options of the `pg.Pool` adapter.
 *
 * @category models
 * @since 0.1.0
 */
export interface PoolOptions {
  /** Names the pool in logs and in the report. Default `postgres`. */
  readonly name?: string | undefined
  /**
   * The release slice. Default: what is left of the shutdown budget. The
   * engine's deadline for the release is this plus 250 ms, so the pool's own
   * cancel step finishes within the slice before the engine would cut it: the
   * report shows `deadlineMs: 5250` for `timeout: "5 seconds"`.
   */
  readonly timeout?: Duration.Input | undefined
  /**
   * The end of the slice kept for cancelling queries and ending the pool.
   * Default 1 second (at most half the slice).
   */
  readonly cancelGrace?: Duration.Input | undefined
  /** Timeout of {@link ManagedPool.ping}. Default 1 second. */
  readonly pingTimeout?: Duration.Input | undefined
  /**
   * How long getting a connection may take. Default 10 seconds.
   *
   * - At acquisition: how long the pool keeps retrying its first connection
   *   (each failure logged) before it fails with {@link PgConnectError}.
   * - Later: how long `query`, `withClient` and `transaction` wait for a
   *   connection (a new one, or a free one) before they fail with
   *   {@link PgQueryError}.
   * - A pool whose `connectionTimeoutMillis` is not set gets this value, so
   *   `pg` itself abandons a connection attempt the server never answers,
   *   and `pool.query` / `pool.connect` called directly (an Express
   *   handler) stop waiting for a free connection after it too.
   */
  readonly connectTimeout?: Duration.Input | undefined
}

/**
 * A `pg.Pool` whose release is part of the shutdown, with Effect wrappers
 * that cancel their query on the server when interrupted.
 *
 * @category models
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
 * @category models
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

/**
 * Whether a failure to connect may go away by itself: the network or the
 * server's start-up (no SQLSTATE, class 08, `57P03` cannot connect now),
 * as opposed to a refusal a retry does not fix (authentication, an unknown
 * database or role).
 */
const isTransient = (error: unknown): boolean => {
  const code = errorCode(error)
  return code === undefined || !/^[0-9A-Z]{5}$/.test(code) || code.startsWith("08") || code === "57P03"
}

/** `host:port` (or the socket) a pool connects to, without credentials. */
const endpointOf = (config: pg.ClientConfig): string => {
  let host = config.host
  let port: string | number | undefined = config.port
  if (config.connectionString !== undefined) {
    try {
      const url = new URL(config.connectionString)
      host ??= decodeURIComponent(url.hostname) || url.searchParams.get("host") || undefined
      port ??= url.port || undefined
    } catch {
      // not a URL (a libpq keyword string): fall back to the defaults
    }
  }
  host ??= process.env.PGHOST ?? "localhost"
  port ??= process.env.PGPORT ?? 5432
  return host.startsWith("/") ? host : `${host}:${port}`
}

/** pg sets `processID` from the server's BackendKeyData; @types/pg does not declare it. */
const backendPid = (client: pg.ClientBase): number | undefined => {
  const pid = (client as unknown as { readonly processID?: unknown }).processID
  return typeof pid === "number" ? pid : undefined
}

/**
 * Destroys a client's socket: the way to close a connection whose server
 * does not answer (a graceful `end()` waits for the server's side of the
 * close). pg keeps the socket on `client.connection.stream`, undeclared.
 */
const destroySocket = (client: pg.ClientBase): void => {
  const stream = (client as unknown as { readonly connection?: { readonly stream?: { destroy?: () => void } } })
    .connection?.stream
  stream?.destroy?.()
}

/**
 * Connections the pool is still opening. pg-pool keeps them in its private
 * `_clients` list and has no event for them; pg marks them `_connecting`.
 * Read defensively: another pg-pool version gives an empty list, and the
 * pool's own `connectionTimeoutMillis` still bounds them.
 */
const connectingClients = (pool: pg.Pool): ReadonlyArray<pg.ClientBase> => {
  const clients = (pool as unknown as { readonly _clients?: unknown })._clients
  if (!Array.isArray(clients)) return []
  return clients.filter((client: unknown): client is pg.ClientBase =>
    typeof client === "object" && client !== null && (client as { readonly _connecting?: unknown })._connecting === true
  )
}

const loadPg = Effect.promise(() => import("pg")).pipe(Effect.map((module) => module.default))

/** The client class a pool makes its connections with (pg-pool's `Client`, undeclared by @types/pg). */
type ClientClass = new(config: pg.ClientConfig) => pg.Client

const clientClassOf = (pool: pg.Pool): Promise<ClientClass> => {
  const own = (pool as unknown as { readonly Client?: unknown }).Client
  return typeof own === "function"
    ? Promise.resolve(own as ClientClass)
    : import("pg").then((module) => module.default.Client)
}

/**
 * Opens a connection of its own, with the pool's client class and
 * configuration, runs `SELECT 1` and closes it. Interruptible: the socket
 * is destroyed at once. Not through the pool, so that an attempt abandoned
 * at start-up leaves nothing for the pool's release to wait for.
 */
const probe = (
  pool: pg.Pool,
  config: pg.ClientConfig,
  onError: (error: unknown) => PgQueryError
): Effect.Effect<void, PgQueryError> =>
  Effect.callback<void, PgQueryError>((resume) => {
    let client: pg.Client | undefined
    let abandoned = false
    clientClassOf(pool).then(async (Client) => {
      if (abandoned) return
      client = new Client(config)
      client.on("error", () => {
        // errors reach the caller through connect and query
      })
      await client.connect()
      await client.query("SELECT 1")
    }).then(
      () => {
        void client?.end().catch(() => undefined)
        if (!abandoned) resume(Effect.void)
      },
      (error: unknown) => {
        if (client !== undefined) destroySocket(client)
        if (!abandoned) resume(Effect.fail(onError(error)))
      }
    )
    return Effect.sync(() => {
      abandoned = true
      if (client !== undefined) destroySocket(client)
    })
  })

/**
 * Runs `f` with a short-lived connection of its own (not from the pool),
 * all within `timeoutMs`: a server that does not answer gets its socket
 * destroyed, and the promise rejects.
 */
const withSideConnection = <A>(
  config: pg.ClientConfig,
  applicationName: string,
  timeoutMs: number,
  f: (client: pg.Client) => Promise<A>
): Promise<A> =>
  import("pg").then(async ({ default: pgModule }) => {
    const client = new pgModule.Client({
      ...config,
      application_name: applicationName,
      connectionTimeoutMillis: Math.max(1, Math.ceil(timeoutMs))
    })
    client.on("error", () => {
      // the side connection is ours alone; errors reach the caller through its promise
    })
    let timedOut = false
    const deadline = setTimeout(() => {
      timedOut = true
      destroySocket(client)
    }, timeoutMs)
    try {
      await client.connect()
      return await f(client)
    } catch (error) {
      throw timedOut ? new Error(`the server did not answer within ${Math.round(timeoutMs)} ms`) : error
    } finally {
      clearTimeout(deadline)
      // A graceful end waits for the server's half of the close: bounded too.
      const forceClose = setTimeout(() => destroySocket(client), 500)
      await client.end().catch(() => undefined)
      clearTimeout(forceClose)
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
  pids: ReadonlyArray<number>,
  timeoutMs: number
): Promise<ReadonlyArray<Activity>> =>
  pids.length === 0
    ? Promise.resolve([])
    : withSideConnection(
      config,
      `${String(config.application_name ?? name)} (cancel)`.slice(0, 63),
      timeoutMs,
      async (client) => {
        const result = await client.query<Activity>(CANCEL_SQL, [pids])
        return result.rows
      }
    )

/** The longest a cancel request (from the release, or after an interruption) may take. */
const CANCEL_TIMEOUT_MS = 2_000

/** Per loan: queries running now, and whether the connection must not go back to the pool. */
interface Loan {
  readonly client: pg.PoolClient
  count: number
  discard: boolean
}

/** What the parts of a managed pool share. */
interface PoolState {
  readonly name: string
  readonly pool: pg.Pool
  readonly config: pg.ClientConfig
  readonly connectTimeoutMs: number
  readonly lifecycle: Lifecycle.LifecycleService
  readonly runFork: <A, E>(effect: Effect.Effect<A, E>) => unknown
  /** Connections lent now (by the adapter or by code using the pool directly). */
  readonly checkedOut: Set<pg.PoolClient>
  /** Cancel requests for interrupted work that did not reach the server during the shutdown. */
  readonly uncancelled: Array<UncancelledQuery>
  readonly queryError: (error: unknown) => PgQueryError
}

/**
 * Follows the pool's connections: which are lent, and errors on idle and
 * lent ones. Returns what undoes it (the pool's `error` listener stays:
 * an idle connection can still fail after the release).
 */
const watchPool = (state: PoolState): () => void => {
  const { checkedOut, name, pool, runFork } = state
  // A lent connection that fails (a reset mid-query, the server going
  // away) makes pg fail the query running on it and then emit `error` on
  // the client; the pool listens only to idle clients, so without this
  // listener that `error` would be an uncaught exception. The pool discards
  // the client when it comes back (`_queryable` is false by then).
  const failed = new WeakSet<pg.PoolClient>()
  const onLentError = function(this: pg.PoolClient, error: Error) {
    if (failed.has(this)) return
    failed.add(this)
    runFork(
      Effect.logWarning(`${name}: a connection in use failed; its query fails and it is discarded`, reasonOf(error))
    )
  }
  const onAcquire = (client: pg.PoolClient) => {
    checkedOut.add(client)
    client.on("error", onLentError)
  }
  const onRelease = (_error: Error | undefined, client: pg.PoolClient) => {
    checkedOut.delete(client)
    client.off("error", onLentError)
  }
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
  return () => {
    pool.off("acquire", onAcquire)
    pool.off("release", onRelease)
    pool.off("remove", onRemove)
  }
}

/**
 * A pooled connection, within `connectTimeout`. Interruptible: if the
 * caller stops waiting (interrupted, timed out), the connection is
 * returned on arrival.
 */
const connectClient = (state: PoolState): Effect.Effect<pg.PoolClient, PgQueryError> => {
  const { connectTimeoutMs, name, pool, queryError } = state
  return Effect.callback<pg.PoolClient, PgQueryError>((resume) => {
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
  }).pipe(
    Effect.timeoutOrElse({
      duration: connectTimeoutMs,
      orElse: () =>
        Effect.fail(
          new PgQueryError({ resource: name, reason: `no connection within ${connectTimeoutMs} ms`, code: undefined })
        )
    })
  )
}

/** The `ClientQuery` handed to user code: each query counted on its loan while it runs. */
const makeClientQuery = (state: PoolState, loan: Loan): ClientQuery => {
  const { client } = loan
  return {
    client,
    query: <R extends pg.QueryResultRow>(text: string, values?: ReadonlyArray<unknown>) =>
      Effect.callback<pg.QueryResult<R>, PgQueryError>((resume) => {
        loan.count++
        client.query<R>(text, values as Array<unknown> | undefined).then(
          (result) => {
            loan.count--
            resume(Effect.succeed(result))
          },
          (error: unknown) => {
            loan.count--
            resume(Effect.fail(state.queryError(error)))
          }
        )
      })
  }
}

/**
 * Gets rid of a connection whose state is unknown (interrupted, or a
 * failed ROLLBACK): a query may still run on it, so cancel it on the
 * server first (within {@link CANCEL_TIMEOUT_MS}), then close the
 * connection (a transaction left open is rolled back). Until then it
 * stays checked out, so the pool's release waits for it.
 */
const discardLoan = (state: PoolState, loan: Loan): void => {
  const { config, lifecycle, name, runFork, uncancelled } = state
  const { client } = loan
  const pid = backendPid(client)
  void (loan.count > 0 && pid !== undefined
    ? cancelBackends(config, name, [pid], CANCEL_TIMEOUT_MS).then(
      () => undefined,
      (error: unknown) => {
        const reason = reasonOf(error)
        if (Lifecycle.isAtLeast(lifecycle.phaseUnsafe(), "Draining")) uncancelled.push({ pid, reason })
        runFork(Effect.logWarning(`${name}: could not cancel the query of interrupted work (pid ${pid})`, reason))
      }
    )
    : Promise.resolve()).then(() => {
      // A query still running on a server that does not answer: close the
      // socket itself, so nothing waits for the server's side of the close.
      if (loan.count > 0) destroySocket(client)
      client.release(new Error(`${name}: connection discarded after an interruption`))
    })
}

/** Back to the pool if the loan ended cleanly; discarded if its connection's state is unknown. */
const giveBack = (state: PoolState, loan: Loan, exit: Exit.Exit<unknown, unknown>): Effect.Effect<void> =>
  Effect.sync(() => {
    if (loan.discard || loan.count > 0 || (Exit.isFailure(exit) && Exit.hasInterrupts(exit))) discardLoan(state, loan)
    else loan.client.release()
  })

/**
 * Lends a connection to `use`, and gives it back however `use` ends.
 * Unlike `acquireUseRelease`, waiting for the connection stays
 * interruptible: a cut must not wait for a server that does not answer.
 */
const lend = <A, E, R>(
  state: PoolState,
  use: (loan: Loan) => Effect.Effect<A, E, R>
): Effect.Effect<A, E | PgQueryError, R> =>
  Effect.uninterruptibleMask((restore) =>
    Effect.flatMap(restore(connectClient(state)), (client) => {
      const loan: Loan = { client, count: 0, discard: false }
      return Effect.exit(restore(use(loan))).pipe(
        Effect.tap((exit) => giveBack(state, loan, exit)),
        Effect.flatten
      )
    })
  )

/**
 * `f` between BEGIN and COMMIT on a lent connection; ROLLBACK if `f`
 * fails. The connection is discarded if the transaction's end is unknown.
 */
const runTransaction = <A, E, R>(
  state: PoolState,
  loan: Loan,
  f: (client: ClientQuery) => Effect.Effect<A, E, R>
): Effect.Effect<A, E | PgQueryError, R> =>
  Effect.uninterruptibleMask((restore) =>
    Effect.gen(function*() {
      const client = makeClientQuery(state, loan)
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
  )

/** `withClient` and `transaction`: connections lent to Effects, given back however they end. */
const makeLending = (state: PoolState) => {
  const withClient = <A, E, R>(
    f: (client: ClientQuery) => Effect.Effect<A, E, R>
  ): Effect.Effect<A, E | PgQueryError, R> => lend(state, (loan) => f(makeClientQuery(state, loan)))

  const transaction = <A, E, R>(
    f: (client: ClientQuery) => Effect.Effect<A, E, R>
  ): Effect.Effect<A, E | PgQueryError, R> => lend(state, (loan) => runTransaction(state, loan, f))

  return { withClient, transaction }
}

/**
 * The first connection, at acquisition: connection failures are retried
 * with a backoff (each logged) until `connectTimeout`; a refusal a retry
 * does not fix fails at once.
 */
const checkConnection = (state: PoolState): Effect.Effect<void, PgConnectError> =>
  Effect.suspend(() => {
    const { config, connectTimeoutMs, name, pool, queryError } = state
    const endpoint = endpointOf(config)
    let attempts = 0
    let lastReason = "the server did not answer"
    const attempt = Effect.suspend(() => {
      attempts++
      return probe(pool, { ...config, connectionTimeoutMillis: connectTimeoutMs }, queryError)
    })
    return attempt.pipe(
      Effect.tapError((error) =>
        Effect.sync(() => {
          lastReason = error.reason
        }).pipe(
          Effect.andThen(
            isTransient(error)
              ? Effect.logWarning(
                `${name}: cannot connect to Postgres at ${endpoint} (attempt ${attempts}): ${error.reason}; retrying`
              )
              : Effect.void
          )
        )
      ),
      Effect.retry({
        schedule: Schedule.min([Schedule.exponential("200 millis", 2), Schedule.spaced("2 seconds")]),
        while: isTransient
      }),
      Effect.timeoutOrElse({
        duration: connectTimeoutMs,
        orElse: () =>
          Effect.fail(
            new PgConnectError({ resource: name, endpoint, attempts, timeoutMs: connectTimeoutMs, reason: lastReason })
          )
      }),
      Effect.catchTag("PgQueryError", (error) =>
        Effect.fail(
          new PgConnectError({ resource: name, endpoint, attempts, timeoutMs: undefined, reason: error.reason })
        )),
      Effect.asVoid
    )
  })

/**
 * The pool's release (see the module docs): end, give running queries the
 * slice minus the grace, cancel, force, report. Time is read through
 * Effect's `Clock`.
 */
const releasePool = (state: PoolState, options: PoolOptions): Effect.Effect<void, PgPoolReleaseError> =>
  Effect.gen(function*() {
    const { checkedOut, config, lifecycle, name, pool, uncancelled } = state
    const remaining = Duration.toMillis(yield* lifecycle.remaining)
    const sliceMs = Math.min(millisOr(options.timeout) ?? Number.POSITIVE_INFINITY, remaining)
    const graceMs = Math.min(millisOr(options.cancelGrace, DEFAULT_CANCEL_GRACE), sliceMs / 2)
    const clock = yield* Clock.Clock
    const startedAt = clock.currentTimeMillisUnsafe()
    const left = () => sliceMs - (clock.currentTimeMillisUnsafe() - startedAt)

    // 1. Stop handing out connections; idle ones close now.
    const ended = pool.ending ? Promise.resolve() : pool.end()
    // 2. Queries in flight get the slice, minus the grace.
    let endedInTime = yield* settledWithin(ended, sliceMs - graceMs)
    let cancelled: Array<CancelledQuery> = []
    let forced = 0
    let abandonedConnects = 0
    if (!endedInTime) {
      // 3. Cancel what is still running, from a separate connection.
      const pids = [...checkedOut].map(backendPid).filter((pid): pid is number => pid !== undefined)
      const activity = yield* Effect.tryPromise(() =>
        cancelBackends(config, name, pids, Math.min(CANCEL_TIMEOUT_MS, Math.max(1, left() / 2)))
      ).pipe(
        Effect.catch((error) =>
          Effect.logError(`${name}: could not cancel running queries`, reasonOf(error)).pipe(Effect.as([]))
        )
      )
      cancelled = activity
        .filter((row) => row.cancelled)
        .map((row) => ({ pid: row.pid, query: row.query ?? "", runningMs: Number(row.running_ms ?? 0) }))
      for (const query of cancelled) {
        yield* Effect.logWarning(
          `${name}: cancelled a query still running at the end of the release slice (pid ${query.pid}, running ${query.runningMs} ms)`,
          query.query
        )
      }
      endedInTime = yield* settledWithin(ended, left() - Math.min(100, graceMs / 4))
      if (!endedInTime) {
        // 4. Whatever is still checked out (a leaked client, an open
        //    transaction, a query on a server that does not answer) is
        //    closed by force, so the pool can end; connections still being
        //    opened (the server does not answer) are abandoned.
        const forcedClients = [...checkedOut]
        forced = forcedClients.length
        for (const client of forcedClients) destroySocket(client)
        // A client lent by `pool.query` is released by the pool's own query
        // callback once its query fails on the destroyed socket; releasing it
        // here first would make that callback's release throw (an uncaught
        // exception inside pg). A few turns of the loop for those callbacks,
        // then what is still checked out (a leaked client) is released here.
        for (let turn = 0; turn < 3 && checkedOut.size > 0; turn++) {
          yield* Effect.callback<void>((resume) => void setImmediate(() => resume(Effect.void)))
        }
        for (const client of forcedClients) {
          if (!checkedOut.has(client)) continue
          checkedOut.delete(client)
          try {
            client.release(new Error(`${name}: closed by force at the end of the release slice`))
          } catch {
            // already released in the meantime
          }
        }
        for (const client of connectingClients(pool)) {
          abandonedConnects++
          destroySocket(client)
        }
        endedInTime = yield* settledWithin(ended, left())
      }
    }
    if (cancelled.length > 0 || uncancelled.length > 0 || forced > 0 || abandonedConnects > 0 || !endedInTime) {
      return yield* new PgPoolReleaseError({
        resource: name,
        cancelled,
        uncancelled: [...uncancelled],
        forced,
        abandonedConnects,
        ended: endedInTime
      })
    }
  })

const manage = (pool: pg.Pool, options: PoolOptions) =>
  Effect.gen(function*() {
    const name = options.name ?? "postgres"
    const connectTimeoutMs = Math.max(1, millisOr(options.connectTimeout, DEFAULT_CONNECT_TIMEOUT))
    // pg reads the pool's options at each new connection: without a
    // connection timeout, an attempt the server never answers (a frozen
    // server, a port that is not Postgres) would hang forever, and with it
    // `pool.end()`.
    if (!pool.options.connectionTimeoutMillis) pool.options.connectionTimeoutMillis = connectTimeoutMs
    const state: PoolState = {
      name,
      pool,
      config: pool.options,
      connectTimeoutMs,
      lifecycle: yield* Lifecycle.Lifecycle,
      runFork: Effect.runForkWith(yield* Effect.context<never>()),
      checkedOut: new Set(),
      uncancelled: [],
      queryError: (error) => new PgQueryError({ resource: name, reason: reasonOf(error), code: errorCode(error) })
    }
    const unwatch = watchPool(state)
    const { transaction, withClient } = makeLending(state)
    const managed: ManagedPool = {
      name,
      pool,
      query: <R extends pg.QueryResultRow>(text: string, values?: ReadonlyArray<unknown>) =>
        withClient((client) => client.query<R>(text, values)),
      withClient,
      transaction,
      ping: ping(pool, { name, timeout: millisOr(options.pingTimeout, DEFAULT_PING_TIMEOUT) }),
      checkedOut: () => state.checkedOut.size
    }
    return {
      managed,
      release: releasePool(state, options).pipe(Effect.ensuring(Effect.sync(unwatch))),
      checkConnection: checkConnection(state)
    }
  })

/**
 * Takes charge of an existing `pg.Pool` (the one your Express app already
 * uses): its release becomes a managed one, and it opens its first
 * connection before this returns (see the module docs).
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
 *   const db = yield* Pg.fromPool(pool, { timeout: "5 seconds", connectTimeout: "10 seconds" })
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
  pool: pg.Pool,
  options: PoolOptions = {}
): Effect.Effect<ManagedPool, PgConnectError, Lifecycle.Lifecycle | Scope.Scope> =>
  Resource.make(
    options.name ?? "postgres",
    manage(pool, options),
    ({ release }) => release,
    // The release keeps its own slice; the core's deadline adds a named
    // margin so that the cancel step, not the core, has the last word.
    { timeout: withCleanupMargin(options.timeout) }
  ).pipe(
    // The release is registered first, then the first connection is made
    // outside the acquisition, so that a signal during start-up interrupts
    // it at once and the pool is still released.
    Effect.tap(({ checkConnection }) => checkConnection),
    Effect.map(({ managed }) => managed)
  )

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
 * @category constructors
 * @since 0.1.0
 */
export const makePool = (
  config: pg.PoolConfig,
  options: PoolOptions = {}
): Effect.Effect<ManagedPool, PgConnectError, Lifecycle.Lifecycle | Scope.Scope> =>
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
 * @category layers
 * @since 0.1.0
 */
export const layerPool = <I>(
  tag: Context.Key<I, ManagedPool>,
  config: pg.PoolConfig,
  options?: PoolOptions
): Layer.Layer<I, PgConnectError, Lifecycle.Lifecycle> => Layer.effect(tag, makePool(config, options))

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
 * @category readiness
 * @since 0.1.0
 */
export const ping = (
  pool: pg.Pool,
  options: { readonly name?: string | undefined; readonly timeout?: Duration.Input | undefined } = {}
): Effect.Effect<void, PgPingError> => {
  const name = options.name ?? "postgres"
  const timeoutMs = millisOr(options.timeout, DEFAULT_PING_TIMEOUT)
  return Effect.tryPromise({
    try: () => pool.query("SELECT 1"),
    catch: (error) => new PgPingError({ resource: name, reason: reasonOf(error) })
  }).pipe(
    Effect.timeoutOrElse({
      duration: timeoutMs,
      orElse: () => Effect.fail(new PgPingError({ resource: name, reason: `no answer within ${timeoutMs} ms` }))
    }),
    Effect.asVoid
  )
}
