/**
 * pg-boss (Postgres) as part of the shutdown, on `pg-boss`: a worker whose
 * jobs finish within the drain and whose cut jobs are available again at
 * once, and the `PgBoss` instance (with its pool) stopped last, within the
 * budget.
 *
 * **Instance** ({@link start}). `new PgBoss(options)` and `boss.start()` as a
 * managed resource. At Releasing, after every worker made from it:
 * `boss.stop({ graceful: true, close: true })` within the release's slice
 * (pg-boss's own `timeout` set to the slice, and the wait bounded by it
 * too), which stops maintenance and closes the pool.
 *
 * **Worker** ({@link work}). `concurrency` loops, each fetching one job at a
 * time (`boss.fetch`) and running `handler` as a tracked job. In order:
 *
 * 1. **Closing**: the loops stop fetching; a loop asleep between polls
 *    wakes and ends. A fetch already on the wire that returns a job after
 *    this point does not start it: the job is made available again.
 * 2. **Drain**: jobs in progress finish; each success is completed
 *    (`boss.complete`, fenced by the attempt it fetched), each failure
 *    failed (`boss.fail`: the queue's retry policy applies).
 * 3. **Cut**: a job still running at the drain deadline is interrupted and
 *    made available again at once: its row goes back to `created` with
 *    `started_on` cleared, as pg-boss's own `restore` does for jobs it
 *    fetched beyond a group's limit, so the next fetch does not count an
 *    attempt (`retry_count` unchanged) and no `expireInSeconds` wait
 *    applies. The update is fenced by state `active` and the fetched
 *    `retry_count`, like pg-boss's own settles. The report lists the job as
 *    a cut `job` labelled `<queue> <job id>`, with its age.
 * 4. **Releasing**: the loops are awaited, then the instance stops.
 *
 * Compared with `boss.stop()` by hand: its `timeout` (at least 1 s) runs on
 * its own timer, outside any shutdown budget, and a job still active when
 * it expires is failed (`pg-boss shut down while active`): it counts an
 * attempt, and a job cut `retryLimit` times is failed for good. A process
 * that exits before `stop()` finishes leaves its jobs `active` until
 * `expireInSeconds` (15 minutes by default) has passed.
 *
 * `pg-boss` is an optional peer dependency, loaded only by {@link start}.
 *
 * @since 0.2.0
 */
import * as Cause from "effect/Cause"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import type * as Scope from "effect/Scope"
import type * as pgBoss from "pg-boss"
import { inFlightRegistry, type InFlightRegistryService } from "../Adapter.ts"
import type { InFlight } from "../InFlight.ts"
import { reasonOf } from "../internal/base/errors.ts"
import * as Lifecycle from "../Lifecycle.ts"
import * as Resource from "../Resource.ts"
import { JobItem, runTracked } from "./internal/queueJobs.ts"
import { releaseSliceMillis, settledWithin } from "./internal/slice.ts"

// -----------------------------------------------------------------------------
// errors
// -----------------------------------------------------------------------------

/**
 * pg-boss could not be started, a worker could not be set up, or a release
 * did not finish within its slice.
 *
 * @example
 * ```ts
 * import * as PgBoss from "effect-graceful/PgBoss"
 *
 * const error = new PgBoss.PgBossError({ resource: "pg-boss", operation: "start", reason: "connect ECONNREFUSED 127.0.0.1:5432" })
 * error.message // "pg-boss: start failed: connect ECONNREFUSED 127.0.0.1:5432"
 * ```
 *
 * @category errors
 * @since 0.2.0
 */
export class PgBossError extends Data.TaggedError("PgBossError")<{
  readonly resource: string
  readonly operation: string
  readonly reason: string
}> {
  override get message(): string {
    return `${this.resource}: ${this.operation} failed: ${this.reason}`
  }
}

// -----------------------------------------------------------------------------
// instance
// -----------------------------------------------------------------------------

/**
 * Options of {@link start}.
 *
 * @category models
 * @since 0.2.0
 */
export interface StartOptions {
  /** A connection string, or pg-boss's constructor options (`connectionString`, `schema`, `max`, ...). */
  readonly options: string | pgBoss.ConstructorOptions
  /** Names the instance in logs and in the report. Default `pg-boss`. */
  readonly name?: string | undefined
  /** The stop's deadline. Default: what is left of the budget. */
  readonly timeout?: Duration.Input | undefined
}

/**
 * A started pg-boss instance, with the schema its tables live in.
 *
 * @category models
 * @since 0.2.0
 */
export interface Boss {
  readonly boss: pgBoss.PgBoss
  /** The schema pg-boss was started with (default `pgboss`). */
  readonly schema: string
  readonly name: string
}

/**
 * Starts pg-boss (`new PgBoss(options)`, `boss.start()`) as a managed
 * resource, stopped at Releasing after the workers made from it, within
 * its slice; the stop closes its pool.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import * as PgBoss from "effect-graceful/PgBoss"
 *
 * const program = Effect.gen(function*() {
 *   const boss = yield* PgBoss.start({ options: "postgres://127.0.0.1/app", timeout: "5 seconds" })
 *   yield* Effect.promise(() => boss.boss.createQueue("emails"))
 * })
 * ```
 *
 * @category constructors
 * @since 0.2.0
 */
export const start = (options: StartOptions): Effect.Effect<Boss, PgBossError, Lifecycle.Lifecycle | Scope.Scope> =>
  Effect.gen(function*() {
    const name = options.name ?? "pg-boss"
    const runFork = Effect.runForkWith(yield* Effect.context<never>())
    const constructorOptions: pgBoss.ConstructorOptions = typeof options.options === "string"
      ? { connectionString: options.options }
      : options.options
    const boss = yield* Resource.make(
      name,
      Effect.tryPromise({
        try: async () => {
          const { PgBoss } = await import("pg-boss")
          const created = new PgBoss(constructorOptions)
          // Without an `error` listener an emitted error would be thrown.
          created.on("error", (error: Error) => {
            runFork(Effect.logWarning(`${name}: error`, reasonOf(error)))
          })
          await created.start()
          return created
        },
        catch: (error) => new PgBossError({ resource: name, operation: "start", reason: reasonOf(error) })
      }),
      (created) =>
        Effect.gen(function*() {
          const slice = yield* releaseSliceMillis(options.timeout)
          const stopped = yield* settledWithin(
            created.stop({ graceful: true, close: true, timeout: Math.max(0, Math.floor(slice)) }),
            slice
          )
          if (!stopped) {
            return yield* new PgBossError({
              resource: name,
              operation: "stop",
              reason: `not stopped within ${Math.round(slice)} ms`
            })
          }
        }),
      { timeout: options.timeout }
    )
    return { boss, schema: constructorOptions.schema ?? "pgboss", name }
  })

// -----------------------------------------------------------------------------
// worker
// -----------------------------------------------------------------------------

/**
 * Options of {@link work}.
 *
 * @category models
 * @since 0.2.0
 */
export interface WorkOptions<Data, R> {
  /** The instance from {@link start}. */
  readonly boss: Boss
  /** The queue (it must exist: `boss.createQueue`). */
  readonly queue: string
  /** Processes one job; it is completed only if this succeeds. A failure fails the job (the queue's retry policy applies). */
  readonly handler: (job: pgBoss.Job<Data>) => Effect.Effect<unknown, unknown, R>
  /** How many jobs run at once. Default 1. */
  readonly concurrency?: number | undefined
  /** The wait between fetches that found nothing. Default 500 millis. */
  readonly pollInterval?: Duration.Input | undefined
  /** Names the worker in logs and in the report. Default `pg-boss <queue>`. */
  readonly name?: string | undefined
  /** The deadline of the worker's release (awaiting its loops). Default: what is left of the budget. */
  readonly timeout?: Duration.Input | undefined
}

/**
 * Counters of a running {@link work}er.
 *
 * - `started`, `completed`, `failed`: handlers started, succeeded, failed.
 * - `cut`: handlers interrupted at the drain deadline, their jobs made available again.
 * - `handedBack`: jobs fetched after Closing, made available without running.
 * - `settleFailures`: completes, fails and hand-backs Postgres refused or that
 *   found the job's attempt gone (it expired meanwhile).
 *
 * @category models
 * @since 0.2.0
 */
export interface WorkerStats {
  readonly started: number
  readonly completed: number
  readonly failed: number
  readonly cut: number
  readonly handedBack: number
  readonly settleFailures: number
}

/**
 * A running worker.
 *
 * @category models
 * @since 0.2.0
 */
export interface Worker {
  readonly stats: Effect.Effect<WorkerStats>
  /** Stop fetching now (the Closing hook does this by itself). */
  readonly stop: Effect.Effect<void>
}

/** What the loops of a worker share. */
interface WorkerState<Data, R> {
  readonly options: WorkOptions<Data, R>
  readonly name: string
  readonly registry: InFlightRegistryService
  readonly runForkR: <A, E>(effect: Effect.Effect<A, E, R>) => Fiber.Fiber<A, E>
  readonly pollMillis: number
  /** Done at Closing: sleeping loops wake. */
  readonly stopped: Deferred.Deferred<void>
  readonly counters: {
    started: number
    completed: number
    failed: number
    cut: number
    handedBack: number
    settleFailures: number
  }
  taking: boolean
}

/** One call to pg-boss or Postgres; a failure is counted and logged, never thrown. */
const settle = <Data, R>(state: WorkerState<Data, R>, what: string, run: () => Promise<unknown>) =>
  Effect.tryPromise(run).pipe(
    Effect.catchCause((cause) => {
      state.counters.settleFailures++
      return Effect.logWarning(`${state.name}: ${what} failed`, Cause.pretty(cause))
    })
  )

/**
 * Makes a fetched job available again at once, without counting an
 * attempt: pg-boss's `restore` (state `created`, `started_on` cleared),
 * fenced by the attempt this worker holds.
 */
const handBack = <Data, R>(state: WorkerState<Data, R>, job: pgBoss.Job<Data>) => {
  const { boss } = state.options
  const sql = `UPDATE "${boss.schema}".job
    SET state = 'created', started_on = NULL, heartbeat_on = NULL
    WHERE name = $1 AND id = $2 AND state = 'active' AND retry_count = $3`
  return settle(
    state,
    `making ${job.id} available again`,
    () => boss.boss.getDb().executeSql(sql, [state.options.queue, job.id, job.retryCount])
  )
}

/** Runs one fetched job to its end: completed, failed, or handed back. */
const runJob = <Data, R>(state: WorkerState<Data, R>, job: pgBoss.Job<Data>) =>
  Effect.gen(function*() {
    const { counters, options } = state
    const boss = options.boss.boss
    const attempt = { id: job.id, retryCount: job.retryCount }
    if (!state.taking) {
      counters.handedBack++
      return yield* handBack(state, job)
    }
    const item = new JobItem(options.queue, job.id, job.name === options.queue ? "" : job.name)
    const exit = yield* Effect.promise(() =>
      runTracked(state.registry, item, () => state.runForkR(Effect.suspend(() => options.handler(job))))
    )
    if (exit === undefined) {
      counters.handedBack++
      return yield* handBack(state, job)
    }
    counters.started++
    if (Exit.isSuccess(exit)) {
      counters.completed++
      return yield* settle(state, `complete ${job.id}`, () => boss.complete(options.queue, attempt))
    }
    if (Cause.hasInterruptsOnly(exit.cause)) {
      counters.cut++
      yield* Effect.logWarning(`${state.name}: ${item.label} cut; available again`)
      return yield* handBack(state, job)
    }
    counters.failed++
    const reason = Cause.pretty(exit.cause)
    yield* Effect.logError(`${state.name}: ${item.label} failed`, reason)
    return yield* settle(state, `fail ${job.id}`, () => boss.fail(options.queue, attempt, { message: reason }))
  })

/** One loop: fetch a job, run it, until Closing; asleep between empty fetches. */
const loop = <Data, R>(state: WorkerState<Data, R>): Effect.Effect<void> =>
  Effect.gen(function*() {
    const { options } = state
    while (state.taking) {
      const fetched = yield* Effect.tryPromise(() => options.boss.boss.fetch<Data>(options.queue, { batchSize: 1 }))
        .pipe(
          Effect.catchCause((cause) =>
            Effect.logWarning(`${state.name}: fetch failed`, Cause.pretty(cause)).pipe(Effect.as([]))
          )
        )
      if (fetched.length === 0) {
        yield* Effect.raceFirst(Effect.sleep(state.pollMillis), Deferred.await(state.stopped))
        continue
      }
      for (const job of fetched) yield* runJob(state, job)
    }
  })

/**
 * Works a pg-boss queue under the lifecycle (see the module docs): it stops
 * fetching at Closing, its jobs finish within the drain, and a job cut at
 * the deadline is available again at once, its attempt not counted.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Graceful } from "effect-graceful"
 * import * as PgBoss from "effect-graceful/PgBoss"
 *
 * const program = Effect.gen(function*() {
 *   const boss = yield* PgBoss.start({ options: process.env.DATABASE_URL ?? "postgres://127.0.0.1/app" })
 *   yield* Effect.promise(() => boss.boss.createQueue("emails"))
 *   yield* PgBoss.work({
 *     boss,
 *     queue: "emails",
 *     concurrency: 4,
 *     handler: (job: { readonly data: { readonly to: string } }) => sendEmail(job.data.to)
 *   })
 *   return yield* Effect.never
 * })
 *
 * declare const sendEmail: (to: string) => Effect.Effect<void, Error>
 *
 * Effect.runFork(Graceful.run(program))
 * ```
 *
 * @category constructors
 * @since 0.2.0
 */
export const work = <Data, R>(
  options: WorkOptions<Data, R>
): Effect.Effect<Worker, never, R | Lifecycle.Lifecycle | InFlight | Scope.Scope> =>
  Effect.gen(function*() {
    const name = options.name ?? `pg-boss ${options.queue}`
    const state: WorkerState<Data, R> = {
      options,
      name,
      registry: yield* inFlightRegistry,
      runForkR: Effect.runForkWith(yield* Effect.context<R>()),
      pollMillis: Duration.toMillis(Duration.fromInputUnsafe(options.pollInterval ?? "500 millis")),
      stopped: yield* Deferred.make<void>(),
      counters: { started: 0, completed: 0, failed: 0, cut: 0, handedBack: 0, settleFailures: 0 },
      taking: true
    }
    const concurrency = Math.max(1, Math.floor(options.concurrency ?? 1))
    const loops = yield* Resource.make(
      name,
      Effect.forEach(Array.from({ length: concurrency }), () => Effect.forkDetach(loop(state))),
      (fibers) =>
        Effect.gen(function*() {
          state.taking = false
          yield* Deferred.succeed(state.stopped, undefined)
          const slice = yield* releaseSliceMillis(options.timeout)
          const ended = yield* Effect.timeoutOption(Fiber.joinAll(fibers), slice)
          if (ended._tag === "None") {
            yield* Effect.forEach(fibers, Fiber.interrupt, { discard: true })
            return yield* new PgBossError({
              resource: name,
              operation: "stop",
              reason: `loops still busy after ${Math.round(slice)} ms`
            })
          }
        }),
      { timeout: options.timeout }
    )
    void loops
    const stop = Effect.suspend(() => {
      state.taking = false
      return Deferred.succeed(state.stopped, undefined)
    }).pipe(Effect.asVoid)
    yield* Lifecycle.addHook(`${name}: stop fetching jobs`, "Closing", stop)
    return { stats: Effect.sync(() => ({ ...state.counters })), stop }
  })
