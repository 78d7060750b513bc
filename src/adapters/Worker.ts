/**
 * A queue worker for any broker, with graceful shutdown built in: take a job,
 * process it, acknowledge it; on failure or on a cut, hand it back.
 *
 * You bring four functions:
 *
 * - `take`: wait for the next job. It must be safe to interrupt: when it is
 *   interrupted, no job may have been taken (`Queue.take` has this property).
 * - `process`: do the work.
 * - `ack`: tell the broker the job is done. Runs only after `process`
 *   succeeded, exactly once per job, and cannot be interrupted.
 * - `nack` (optional): tell the broker the job was not done, with the reason
 *   (`Failed`, or `Interrupted` when it was cut at the drain deadline). Leave
 *   it out when the broker redelivers un-acknowledged jobs by itself (Redis
 *   Streams' pending list, SQS visibility timeout).
 *
 * How it shuts down:
 *
 * - **Closing**: the worker stops taking jobs (the `take` in progress is
 *   interrupted); no new job starts after this point.
 * - **Drain**: jobs in progress are tracked in `InFlight`, so the drain waits
 *   for them; each one that finishes is acknowledged as usual.
 * - **Cut**: a job still running at the drain deadline is interrupted, left
 *   un-acknowledged and `nack`ed with `Interrupted`: the broker must deliver
 *   it again (must-retry). It is recorded in the shutdown report as a cut
 *   `job`.
 *
 * Delivery is at least once: a job whose process finished but whose `ack` was
 * lost (the broker went away) is delivered again. Make `process` idempotent.
 *
 * @example
 * ```ts
 * // RabbitMQ with amqplib: prefetch bounds how many messages the broker
 * // pushes; the consume callback feeds a local queue that `take` reads.
 * import { Effect, Queue } from "effect"
 * import { Resource } from "effect-graceful"
 * import * as Worker from "effect-graceful/Worker"
 * import amqp from "amqplib"
 *
 * const RabbitWorker = Effect.gen(function*() {
 *   const connection = yield* Resource.make(
 *     "rabbitmq",
 *     Effect.promise(() => amqp.connect("amqp://localhost")),
 *     (connection) => Effect.promise(() => connection.close())
 *   )
 *   const channel = yield* Effect.promise(() => connection.createChannel())
 *   yield* Effect.promise(() => channel.prefetch(10))
 *   const inbox = yield* Queue.unbounded<amqp.ConsumeMessage>()
 *   yield* Effect.promise(() =>
 *     channel.consume("invoices", (message) => {
 *       if (message !== null) Queue.offerUnsafe(inbox, message)
 *     })
 *   )
 *   return yield* Worker.make({
 *     name: "invoices",
 *     concurrency: 10,
 *     take: Queue.take(inbox),
 *     process: (message) => sendInvoice(JSON.parse(message.content.toString())),
 *     ack: (message) => Effect.sync(() => channel.ack(message)),
 *     // requeue: another consumer (or this one, after a restart) retries it
 *     nack: (message) => Effect.sync(() => channel.nack(message, false, true)),
 *     label: (message) => message.properties.messageId ?? "message"
 *   })
 * })
 *
 * declare const sendInvoice: (invoice: unknown) => Effect.Effect<void>
 * ```
 *
 * Messages still in the local queue when the worker stops were never started:
 * they stay un-acknowledged and RabbitMQ requeues them when the channel
 * closes (the `rabbitmq` release above).
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import type * as Scope from "effect/Scope"
import * as Semaphore from "effect/Semaphore"
import { InFlight, type InFlightSet } from "../InFlight.ts"
import { millisOr } from "../internal/base/duration.ts"
import * as Lifecycle from "../Lifecycle.ts"

const DEFAULT_SETTLE_TIMEOUT = Duration.seconds(5)
const DEFAULT_MAX_TAKE_BACKOFF = Duration.seconds(5)

/**
 * Why a job is handed back to the broker:
 *
 * - `Failed`: `process` failed or died; `cause` says how.
 * - `Interrupted`: the job was cut at the drain deadline (or its fiber was
 *   interrupted otherwise). It must be retried.
 *
 * @example
 * ```ts
 * import * as Worker from "effect-graceful/Worker"
 *
 * const requeue = (reason: Worker.NackReason) => reason._tag === "Interrupted"
 * ```
 *
 * @category models
 * @since 0.1.0
 */
export type NackReason =
  | { readonly _tag: "Failed"; readonly cause: Cause.Cause<unknown> }
  | { readonly _tag: "Interrupted" }

/**
 * The counters of a running worker.
 *
 * - `taken`: jobs taken from the broker.
 * - `acked`: jobs processed and acknowledged.
 * - `failed`: jobs whose `process` failed (handed back with `Failed`).
 * - `interrupted`: jobs cut or interrupted (handed back with `Interrupted`).
 * - `ackFailures`: acknowledgements that failed or timed out (the broker will
 *   deliver those jobs again).
 * - `inProgress`: jobs being processed now.
 *
 * @category models
 * @since 0.1.0
 */
export interface WorkerStats {
  readonly taken: number
  readonly acked: number
  readonly failed: number
  readonly interrupted: number
  readonly ackFailures: number
  readonly inProgress: number
}

/**
 * A broker consumer's counters: the worker's, plus messages received,
 * received again (`redelivered`: the broker's redelivery flag), and handed
 * back unstarted because they arrived after Closing. The MQTT and NATS
 * consumers report these.
 *
 * @example
 * ```ts
 * import type * as Worker from "effect-graceful/Worker"
 *
 * const stats: Worker.ConsumerStats = {
 *   taken: 10, acked: 9, failed: 0, interrupted: 1, ackFailures: 0, inProgress: 0,
 *   received: 12, redelivered: 1, handedBack: 2
 * }
 * ```
 *
 * @category models
 * @since 0.3.0
 */
export interface ConsumerStats extends WorkerStats {
  readonly received: number
  readonly redelivered: number
  readonly handedBack: number
}

/**
 * A running worker.
 *
 * @category models
 * @since 0.1.0
 */
export interface Worker {
  /** The worker's counters. */
  readonly stats: Effect.Effect<WorkerStats>
  /**
   * Stop taking jobs now (the `Closing` hook does this by itself). Jobs in
   * progress carry on. Completes once no job can be taken any more.
   */
  readonly stop: Effect.Effect<void>
  /** Whether the worker still takes jobs. */
  readonly isTaking: Effect.Effect<boolean>
}

/**
 * What {@link make} needs.
 *
 * @category models
 * @since 0.1.0
 */
export interface WorkerOptions<Job, R> {
  /** Names the worker in logs and in the report (its Closing hook). */
  readonly name: string
  /** Waits for the next job. Interrupting it must not lose a job. */
  readonly take: Effect.Effect<Job, unknown, R>
  /** Does the work. */
  readonly process: (job: Job) => Effect.Effect<unknown, unknown, R>
  /** Acknowledges a processed job. Runs once per job, uninterruptibly. */
  readonly ack: (job: Job) => Effect.Effect<unknown, unknown, R>
  /** Hands a job back. Runs uninterruptibly. Default: do nothing. */
  readonly nack?: ((job: Job, reason: NackReason) => Effect.Effect<unknown, unknown, R>) | undefined
  /** How many jobs run at once. Default 1. */
  readonly concurrency?: number | undefined
  /** How a job is named in logs and in the report's cut list. Default: its kind and a counter. */
  readonly label?: ((job: Job) => string) | undefined
  /** The kind of tracked work, as the report shows it. Default `job`. */
  readonly kind?: string | undefined
  /** Longest wait for `ack` or `nack`. Default 5 seconds. */
  readonly settleTimeout?: Duration.Input | undefined
  /** Longest pause between attempts when `take` keeps failing. Default 5 seconds. */
  readonly maxTakeBackoff?: Duration.Input | undefined
}

/**
 * A job that could not be acknowledged in time.
 *
 * @example
 * ```ts
 * import * as Worker from "effect-graceful/Worker"
 *
 * const error = new Worker.SettleTimeoutError({ worker: "invoices", job: "42", action: "ack", timeoutMs: 5000 })
 * error.message // "invoices: ack of 42 did not finish within 5000 ms"
 * ```
 *
 * @category errors
 * @since 0.1.0
 */
export class SettleTimeoutError extends Data.TaggedError("SettleTimeoutError")<{
  readonly worker: string
  readonly job: string
  readonly action: "ack" | "nack"
  readonly timeoutMs: number
}> {
  override get message(): string {
    return `${this.worker}: ${this.action} of ${this.job} did not finish within ${this.timeoutMs} ms`
  }
}

/** What the parts of a running worker share. */
interface WorkerState<Job, R> {
  readonly options: WorkerOptions<Job, R>
  readonly kind: string
  readonly settleTimeoutMs: number
  readonly maxBackoffMs: number
  /** One permit per job that may run at once; taken before `take`, released when the job ends. */
  readonly permits: Semaphore.Semaphore
  readonly inFlight: InFlightSet
  /** The worker's scope: jobs are forked into it, so they outlive the taker fiber. */
  readonly scope: Scope.Scope
  readonly stats: {
    taken: number
    acked: number
    failed: number
    interrupted: number
    ackFailures: number
    inProgress: number
  }
  /** Numbers jobs that have no label of their own. */
  counter: number
}

const labelOf = <Job, R>(state: WorkerState<Job, R>, job: Job): string => {
  if (state.options.label !== undefined) {
    try {
      return state.options.label(job)
    } catch {
      // fall through to the counter
    }
  }
  return `${state.kind} ${++state.counter}`
}

/** Runs `ack` or `nack` within `settleTimeout`; `false` (and logged) if it failed or timed out. */
const settle = <Job, R>(
  state: WorkerState<Job, R>,
  action: "ack" | "nack",
  label: string,
  effect: Effect.Effect<unknown, unknown, R>
): Effect.Effect<boolean, never, R> => {
  const { options, settleTimeoutMs } = state
  return effect.pipe(
    Effect.timeoutOrElse({
      duration: settleTimeoutMs,
      orElse: () =>
        Effect.fail(new SettleTimeoutError({ worker: options.name, job: label, action, timeoutMs: settleTimeoutMs }))
    }),
    Effect.as(true),
    Effect.catchCause((cause) =>
      Effect.logError(
        `${options.name}: ${action} of ${label} failed; the broker will deliver it again`,
        Cause.pretty(cause)
      )
        .pipe(Effect.as(false))
    )
  )
}

// One job, from its start to its acknowledgement (or hand-back). `process`
// is the only interruptible part: once it has succeeded, the ack happens.
const runJob = <Job, R>(state: WorkerState<Job, R>, job: Job, label: string): Effect.Effect<void, never, R> =>
  Effect.uninterruptibleMask((restore) =>
    Effect.gen(function*() {
      const { options, stats } = state
      stats.inProgress++
      const exit = yield* Effect.exit(restore(options.process(job)))
      stats.inProgress--
      if (Exit.isSuccess(exit)) {
        const acked = yield* settle(state, "ack", label, options.ack(job))
        if (acked) stats.acked++
        else stats.ackFailures++
        return
      }
      const reason: NackReason = Cause.hasInterruptsOnly(exit.cause)
        ? { _tag: "Interrupted" }
        : { _tag: "Failed", cause: exit.cause }
      if (reason._tag === "Interrupted") {
        stats.interrupted++
        yield* Effect.logWarning(`${options.name}: ${label} interrupted before it finished; left for retry`)
      } else {
        stats.failed++
        yield* Effect.logError(`${options.name}: ${label} failed; left for retry`, Cause.pretty(exit.cause))
      }
      if (options.nack !== undefined) yield* settle(state, "nack", label, options.nack(job, reason))
    })
  )

/** A job taken after the cut never runs: it is handed back as interrupted. */
const handBack = <Job, R>(state: WorkerState<Job, R>, job: Job, label: string): Effect.Effect<void, never, R> =>
  Effect.gen(function*() {
    const { options } = state
    state.stats.interrupted++
    yield* Effect.logWarning(`${options.name}: ${label} taken after the cut; left for retry`)
    if (options.nack !== undefined) yield* settle(state, "nack", label, options.nack(job, { _tag: "Interrupted" }))
  })

/** `take`, retried with exponential backoff (up to `maxTakeBackoff`) until it succeeds or is interrupted. */
const takeWithRetry = <Job, R>(state: WorkerState<Job, R>): Effect.Effect<Job, never, R> =>
  Effect.suspend(() => {
    const { maxBackoffMs, options } = state
    let backoffMs = 100
    const attempt: Effect.Effect<Job, never, R> = options.take.pipe(
      Effect.catchCause((cause) => {
        if (Cause.hasInterruptsOnly(cause)) return Effect.failCause(cause as Cause.Cause<never>)
        const wait = backoffMs
        backoffMs = Math.min(maxBackoffMs, backoffMs * 2)
        return Effect.logWarning(`${options.name}: taking a job failed; retrying in ${wait} ms`, Cause.pretty(cause))
          .pipe(Effect.andThen(Effect.sleep(wait)), Effect.andThen(attempt))
      })
    )
    return attempt
  })

// Takes a job and forks its tracked run as one step that cannot be split
// by an interrupt: either nothing was taken, or the job is running and
// registered in the in-flight set before the drain can look at it.
const takeOne = <Job, R>(state: WorkerState<Job, R>): Effect.Effect<void, never, R> =>
  Effect.uninterruptibleMask((restore) =>
    Effect.gen(function*() {
      const { inFlight, kind, permits, scope } = state
      yield* restore(permits.take(1))
      const taken = yield* Effect.exit(restore(takeWithRetry(state)))
      if (Exit.isFailure(taken)) {
        yield* permits.release(1)
        return yield* Effect.failCause(taken.cause)
      }
      const job = taken.value
      state.stats.taken++
      const label = labelOf(state, job)
      // Work tracked after the cut is interrupted on arrival, before
      // `runJob` starts: hand such a job back too.
      let started = false
      yield* Effect.forkIn(
        inFlight.track(
          Effect.suspend(() => {
            started = true
            return runJob(state, job, label)
          }),
          { kind, label }
        ).pipe(
          Effect.onExit(() => started ? Effect.void : handBack(state, job, label)),
          Effect.ensuring(permits.release(1))
        ),
        scope,
        { startImmediately: true }
      )
    })
  )

/**
 * Starts a worker in the current scope. It takes jobs until the program
 * reaches `Closing` (or {@link Worker.stop}), tracks each job in `InFlight`,
 * acknowledges each processed job once, and hands back (`nack`) each failed
 * or cut job. See the module docs for the shutdown sequence and a RabbitMQ
 * example.
 *
 * @example
 * ```ts
 * import { Effect, Queue } from "effect"
 * import { Graceful } from "effect-graceful"
 * import * as Worker from "effect-graceful/Worker"
 *
 * const program = Effect.gen(function*() {
 *   const jobs = yield* Queue.unbounded<number>()
 *   yield* Worker.make({
 *     name: "squares",
 *     concurrency: 4,
 *     take: Queue.take(jobs),
 *     process: (n) => Effect.log(n * n),
 *     ack: (n) => Effect.log(`done ${n}`),
 *     nack: (n) => Queue.offer(jobs, n)
 *   })
 *   return yield* Effect.never
 * })
 *
 * Effect.runFork(Graceful.run(program))
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = <Job, R>(
  options: WorkerOptions<Job, R>
): Effect.Effect<Worker, never, R | Lifecycle.Lifecycle | InFlight | Scope.Scope> =>
  Effect.gen(function*() {
    const state: WorkerState<Job, R> = {
      options,
      kind: options.kind ?? "job",
      settleTimeoutMs: millisOr(options.settleTimeout, DEFAULT_SETTLE_TIMEOUT),
      maxBackoffMs: millisOr(options.maxTakeBackoff, DEFAULT_MAX_TAKE_BACKOFF),
      permits: yield* Semaphore.make(Math.max(1, Math.floor(options.concurrency ?? 1))),
      inFlight: yield* InFlight,
      scope: yield* Effect.scope,
      stats: { taken: 0, acked: 0, failed: 0, interrupted: 0, ackFailures: 0, inProgress: 0 },
      counter: 0
    }
    let taking = true

    const taker = yield* Effect.forkIn(Effect.forever(takeOne(state)), state.scope, { startImmediately: true })

    const stop = Effect.suspend(() => {
      taking = false
      return Fiber.interrupt(taker)
    }).pipe(Effect.asVoid)

    yield* Lifecycle.addHook(`${options.name}: stop taking jobs`, "Closing", stop)

    return {
      stats: Effect.sync(() => ({ ...state.stats })),
      stop,
      isTaking: Effect.sync(() => taking && taker.pollUnsafe() === undefined)
    }
  })
