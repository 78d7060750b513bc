/**
 * BullMQ (Redis) as part of the shutdown, on `bullmq`: a worker whose jobs
 * finish within the drain and whose cut jobs go straight back to the wait
 * list, and a producer whose pending `add`s are awaited before it closes.
 *
 * **Worker** ({@link worker}). A `bullmq` `Worker` whose processor runs
 * `handler` as a tracked job. In order:
 *
 * 1. **Closing**: the worker is paused (`worker.pause(true)`): it fetches no
 *    more jobs. A job fetched in the meantime (the fetch was on the wire, or
 *    came back with the previous job's completion) is not started: it is
 *    moved back to the wait list (`job.moveToWait(token)`).
 * 2. **Drain**: jobs in progress finish within the drain; each success is
 *    completed by BullMQ as usual, each failure failed (its `attempts` and
 *    `backoff` apply).
 * 3. **Cut**: a job still running at the drain deadline is interrupted and
 *    moved back to the wait list with its lock token, at the head of the
 *    list: another worker takes it at once, not after `lockDuration` and the
 *    stalled-job check. Its `attemptsMade` is not increased (BullMQ counts
 *    it in `attemptsStarted` only). The report lists it as a cut `job`
 *    labelled `<queue> <job id> <job name>`, with its age.
 * 4. **Releasing**: `worker.close()` within the release's slice (it waits
 *    for the completions and hand-backs still on the wire), which closes
 *    the Redis connections the worker opened. The client you pass in is
 *    yours: open it before the worker (`effect-graceful/Redis`'s `connect`),
 *    and it closes after it, last.
 *
 * Compared with `worker.close(true)` by hand: a job abandoned that way keeps
 * its lock until `lockDuration` (30 s by default) expires and the stalled
 * checker moves it back, counting a stall (`maxStalledCount`, default 1:
 * a second stall fails the job).
 *
 * **Producer** ({@link queue}). A `bullmq` `Queue`; each `add` is tracked,
 * and at Releasing the adds still pending are awaited within the slice
 * before the queue closes.
 *
 * `bullmq` is an optional peer dependency, loaded only when a worker or a
 * queue starts.
 *
 * @since 0.2.0
 */
import type * as bullmq from "bullmq"
import * as Cause from "effect/Cause"
import * as Data from "effect/Data"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Fiber from "effect/Fiber"
import type * as Scope from "effect/Scope"
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
 * A worker or a queue could not be started, or a release did not finish
 * within its slice.
 *
 * @example
 * ```ts
 * import * as BullMQ from "effect-graceful/BullMQ"
 *
 * const error = new BullMQ.BullMQError({ resource: "bullmq emails", operation: "close", reason: "not closed within 2000 ms" })
 * error.message // "bullmq emails: close failed: not closed within 2000 ms"
 * ```
 *
 * @category errors
 * @since 0.2.0
 */
export class BullMQError extends Data.TaggedError("BullMQError")<{
  readonly resource: string
  readonly operation: string
  readonly reason: string
}> {
  override get message(): string {
    return `${this.resource}: ${this.operation} failed: ${this.reason}`
  }
}

/**
 * A job could not be added to a queue.
 *
 * @example
 * ```ts
 * import * as BullMQ from "effect-graceful/BullMQ"
 *
 * const error = new BullMQ.BullMQAddError({ queue: "emails", jobName: "welcome", reason: "Connection is closed." })
 * error.message // "emails: add welcome failed: Connection is closed."
 * ```
 *
 * @category errors
 * @since 0.2.0
 */
export class BullMQAddError extends Data.TaggedError("BullMQAddError")<{
  readonly queue: string
  readonly jobName: string
  readonly reason: string
}> {
  override get message(): string {
    return `${this.queue}: add ${this.jobName} failed: ${this.reason}`
  }
}

// -----------------------------------------------------------------------------
// worker
// -----------------------------------------------------------------------------

/**
 * Options of {@link worker}.
 *
 * @category models
 * @since 0.2.0
 */
export interface WorkerOptions<Data, R> {
  /** The queue's name. */
  readonly queue: string
  /**
   * A Redis client instance (node-redis or ioredis) you manage yourself:
   * BullMQ duplicates it for the worker's connections, which the worker's
   * release closes; yours is closed by its own release (open it before the
   * worker, e.g. with `effect-graceful/Redis`). Connection options work only
   * where BullMQ can `require` ioredis (CommonJS).
   */
  readonly connection: bullmq.ConnectionOptions
  /** Processes one job; its success is the job's return value. A failure fails the job (BullMQ's `attempts` apply). */
  readonly handler: (job: bullmq.Job<Data>) => Effect.Effect<unknown, unknown, R>
  /** How many jobs run at once. Default 1. */
  readonly concurrency?: number | undefined
  /** Names the worker in logs and in the report. Default `bullmq <queue>`. */
  readonly name?: string | undefined
  /** The close's deadline. Default: what is left of the budget. */
  readonly timeout?: Duration.Input | undefined
  /** Other `bullmq` worker options (`lockDuration`, `stalledInterval`, `prefix`, ...). */
  readonly workerOptions?: Omit<bullmq.WorkerOptions, "connection" | "concurrency" | "autorun"> | undefined
}

/**
 * Counters of a running {@link worker}.
 *
 * - `started`: handlers started.
 * - `completed` / `failed`: handlers that succeeded / failed.
 * - `cut`: handlers interrupted at the drain deadline, their jobs moved back.
 * - `handedBack`: jobs fetched after Closing, moved back without running.
 * - `handBackFailures`: moves back that Redis refused (the lock was lost):
 *   those jobs come back through the stalled-job check.
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
  readonly handBackFailures: number
}

/**
 * A running worker.
 *
 * @category models
 * @since 0.2.0
 */
export interface Worker<Data> {
  /** The `bullmq` worker itself. */
  readonly worker: bullmq.Worker<Data>
  readonly stats: Effect.Effect<WorkerStats>
  /** Stop fetching jobs now (the Closing hook does this by itself). */
  readonly stop: Effect.Effect<void>
}

/** What the parts of a worker share. */
interface WorkerState {
  readonly name: string
  readonly queue: string
  readonly registry: InFlightRegistryService
  readonly WaitingError: typeof bullmq.WaitingError
  readonly runFork: <A, E>(effect: Effect.Effect<A, E>) => Fiber.Fiber<A, E>
  readonly counters: {
    started: number
    completed: number
    failed: number
    cut: number
    handedBack: number
    handBackFailures: number
  }
  /** Cleared at Closing. */
  taking: boolean
}

/**
 * Moves a job back to the head of the wait list, with its lock token, and
 * tells BullMQ so (`WaitingError`: it neither completes nor fails the job).
 */
const moveBack = async (state: WorkerState, job: bullmq.Job, token: string | undefined): Promise<never> => {
  try {
    await job.moveToWait(token ?? "")
  } catch (error) {
    state.counters.handBackFailures++
    state.runFork(
      Effect.logWarning(`${state.name}: could not move job ${job.id} back; the stalled-job check will`, reasonOf(error))
    )
  }
  throw new state.WaitingError()
}

const failureOf = (cause: Cause.Cause<unknown>): Error => {
  const error = Cause.squash(cause)
  return error instanceof Error ? error : new Error(Cause.pretty(cause))
}

/** The worker's processor: a tracked handler, or the job straight back when the worker stopped taking. */
const makeProcessor = <Data, R>(
  state: WorkerState,
  handler: (job: bullmq.Job<Data>) => Effect.Effect<unknown, unknown, R>,
  runForkR: <A, E>(effect: Effect.Effect<A, E, R>) => Fiber.Fiber<A, E>
) =>
async (job: bullmq.Job<Data>, token?: string): Promise<unknown> => {
  const { counters } = state
  if (!state.taking) {
    counters.handedBack++
    return moveBack(state, job, token)
  }
  const item = new JobItem(state.queue, job.id ?? "?", job.name)
  const exit = await runTracked(state.registry, item, () => runForkR(Effect.suspend(() => handler(job))))
  if (exit === undefined) {
    counters.handedBack++
    return moveBack(state, job, token)
  }
  counters.started++
  if (Exit.isSuccess(exit)) {
    counters.completed++
    return exit.value
  }
  if (Cause.hasInterruptsOnly(exit.cause)) {
    counters.cut++
    state.runFork(Effect.logWarning(`${state.name}: ${item.label} cut; moved back to the wait list`))
    return moveBack(state, job, token)
  }
  counters.failed++
  throw failureOf(exit.cause)
}

/** Pauses the worker: it fetches nothing more; what it fetched meanwhile goes back. */
const stopWorker = (state: WorkerState, worker: bullmq.Worker): Effect.Effect<void> =>
  Effect.suspend(() => {
    if (!state.taking) return Effect.void
    state.taking = false
    return Effect.tryPromise(() => worker.pause(true)).pipe(
      Effect.catchCause((cause) => Effect.logWarning(`${state.name}: pause failed`, Cause.pretty(cause)))
    )
  })

/** `worker.close()` within the slice; past it, the close goes on and the report says so. */
const closeWorker = (name: string, worker: bullmq.Worker, timeout: Duration.Input | undefined) =>
  Effect.gen(function*() {
    const slice = yield* releaseSliceMillis(timeout)
    const closed = yield* settledWithin(worker.close(), slice)
    if (!closed) {
      return yield* new BullMQError({
        resource: name,
        operation: "close",
        reason: `not closed within ${Math.round(slice)} ms`
      })
    }
  })

/**
 * Runs a BullMQ worker under the lifecycle (see the module docs): it stops
 * fetching at Closing, its jobs finish within the drain, a job cut at the
 * deadline goes back to the head of the wait list at once with its attempt
 * not counted, and the worker (with its Redis connections) closes at
 * Releasing.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Graceful } from "effect-graceful"
 * import * as BullMQ from "effect-graceful/BullMQ"
 * import * as Redis from "effect-graceful/Redis"
 * import { createClient } from "redis"
 *
 * const program = Effect.gen(function*() {
 *   // opened first, so closed last
 *   const connection = yield* Redis.connect(createClient({ url: "redis://127.0.0.1:6379" }))
 *   yield* BullMQ.worker({
 *     queue: "emails",
 *     connection,
 *     concurrency: 8,
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
export const worker = <Data, R>(
  options: WorkerOptions<Data, R>
): Effect.Effect<Worker<Data>, BullMQError, R | Lifecycle.Lifecycle | InFlight | Scope.Scope> =>
  Effect.gen(function*() {
    const name = options.name ?? `bullmq ${options.queue}`
    const registry = yield* inFlightRegistry
    const runForkR = Effect.runForkWith(yield* Effect.context<R>())
    const runFork = Effect.runForkWith(yield* Effect.context<never>())
    let state: WorkerState | undefined
    const bullWorker = yield* Resource.make(
      name,
      Effect.tryPromise({
        try: async () => {
          const { Worker, WaitingError } = await import("bullmq")
          state = {
            name,
            queue: options.queue,
            registry,
            WaitingError,
            runFork,
            counters: { started: 0, completed: 0, failed: 0, cut: 0, handedBack: 0, handBackFailures: 0 },
            taking: true
          }
          const created = new Worker<Data>(options.queue, makeProcessor(state, options.handler, runForkR), {
            ...options.workerOptions,
            connection: options.connection,
            concurrency: Math.max(1, Math.floor(options.concurrency ?? 1)),
            autorun: true
          })
          // Without an `error` listener an emitted error would be thrown.
          created.on("error", (error: Error) => {
            runFork(Effect.logWarning(`${name}: worker error`, reasonOf(error)))
          })
          await created.waitUntilReady()
          return created
        },
        catch: (error) => new BullMQError({ resource: name, operation: "start", reason: reasonOf(error) })
      }),
      (created) => closeWorker(name, created, options.timeout),
      { timeout: options.timeout }
    )
    const workerState = state!
    const stop = stopWorker(workerState, bullWorker)
    yield* Lifecycle.addHook(`${name}: stop fetching jobs`, "Closing", stop)
    return {
      worker: bullWorker,
      stats: Effect.sync(() => ({ ...workerState.counters })),
      stop
    }
  })

// -----------------------------------------------------------------------------
// producer
// -----------------------------------------------------------------------------

/**
 * Options of {@link queue}.
 *
 * @category models
 * @since 0.2.0
 */
export interface QueueOptions {
  /** The queue's name. */
  readonly queue: string
  /** A Redis client instance you manage yourself (see {@link WorkerOptions.connection}); the queue uses it and never closes it. */
  readonly connection: bullmq.ConnectionOptions
  /** Names the queue in logs and in the report. Default `bullmq <queue> (producer)`. */
  readonly name?: string | undefined
  /** The release slice: pending adds are awaited, then the queue closes. Default: what is left of the budget. */
  readonly timeout?: Duration.Input | undefined
  /** Other `bullmq` queue options (`prefix`, `defaultJobOptions`, ...). */
  readonly queueOptions?: Omit<bullmq.QueueOptions, "connection"> | undefined
}

/**
 * A producer.
 *
 * @category models
 * @since 0.2.0
 */
export interface Producer<Data> {
  /** Adds a job; completes once Redis holds it. */
  readonly add: (
    jobName: string,
    data: Data,
    options?: bullmq.JobsOptions
  ) => Effect.Effect<bullmq.Job<Data>, BullMQAddError>
  /** Adds still waiting for Redis. */
  readonly pending: () => number
  /** The `bullmq` queue itself. */
  readonly queue: bullmq.Queue<Data>
}

/**
 * Opens a BullMQ queue to add jobs to. At Releasing the adds still pending
 * are awaited within the release's slice, then the queue (and its Redis
 * connection) closes; adds still pending at the end of the slice fail the
 * release, so the report names them.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import * as BullMQ from "effect-graceful/BullMQ"
 * import * as Redis from "effect-graceful/Redis"
 * import { createClient } from "redis"
 *
 * const program = Effect.gen(function*() {
 *   const connection = yield* Redis.connect(createClient({ url: "redis://127.0.0.1:6379" }))
 *   const emails = yield* BullMQ.queue<{ readonly to: string }>({
 *     queue: "emails",
 *     connection,
 *     timeout: "2 seconds"
 *   })
 *   yield* emails.add("welcome", { to: "ada@example.com" }, { attempts: 3 })
 * })
 * ```
 *
 * @category constructors
 * @since 0.2.0
 */
export const queue = <Data>(
  options: QueueOptions
): Effect.Effect<Producer<Data>, BullMQError, Lifecycle.Lifecycle | Scope.Scope> =>
  Effect.gen(function*() {
    const name = options.name ?? `bullmq ${options.queue} (producer)`
    const pending = new Set<Promise<unknown>>()
    const bullQueue = yield* Resource.make(
      name,
      Effect.tryPromise({
        try: async () => {
          const { Queue } = await import("bullmq")
          const created = new Queue<Data>(options.queue, { ...options.queueOptions, connection: options.connection })
          created.on("error", () => {
            // reported by the add that failed
          })
          await created.waitUntilReady()
          return created
        },
        catch: (error) => new BullMQError({ resource: name, operation: "start", reason: reasonOf(error) })
      }),
      (created) =>
        Effect.gen(function*() {
          const slice = yield* releaseSliceMillis(options.timeout)
          // Most of the slice for the adds, the rest for the close.
          const waitMs = Math.max(0, slice - Math.min(500, slice / 4))
          const settled = pending.size === 0 || (yield* settledWithin(Promise.allSettled([...pending]), waitMs))
          const left = pending.size
          yield* Effect.promise(() => created.close().catch(() => undefined))
          if (!settled && left > 0) {
            return yield* new BullMQError({
              resource: name,
              operation: "flush",
              reason: `${left} add(s) still pending after ${Math.round(waitMs)} ms`
            })
          }
        }),
      { timeout: options.timeout }
    )
    // `Queue.add`'s name type is generic over the queue's; this producer names jobs with plain strings.
    const addJob = bullQueue.add.bind(bullQueue) as unknown as (
      jobName: string,
      data: Data,
      options?: bullmq.JobsOptions
    ) => Promise<bullmq.Job<Data>>
    return {
      queue: bullQueue,
      pending: () => pending.size,
      add: (jobName, data, jobOptions) =>
        Effect.callback<bullmq.Job<Data>, BullMQAddError>((resume) => {
          const added = addJob(jobName, data, jobOptions)
          pending.add(added)
          added.then(
            (job) => {
              pending.delete(added)
              resume(Effect.succeed(job))
            },
            (error: unknown) => {
              pending.delete(added)
              resume(Effect.fail(new BullMQAddError({ queue: options.queue, jobName, reason: reasonOf(error) })))
            }
          )
        })
    }
  })
