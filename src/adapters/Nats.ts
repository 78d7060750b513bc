/**
 * NATS as part of the shutdown, on the NATS maintainers' current JavaScript
 * client (`@nats-io/transport-node` and `@nats-io/jetstream`, v3; the older
 * all-in-one `nats` package is the v2 line they no longer develop): a
 * JetStream pull consumer that stops fetching at Closing and hands back
 * what it did not finish, core subscriptions that unsubscribe at Closing,
 * and a connection released with NATS's own `drain()`.
 *
 * **JetStream** ({@link consume}). A durable pull consumer, fetched on
 * demand: a batch is requested only for workers that are free, so no more
 * than `concurrency` messages wait here unstarted, and none sits in a local
 * buffer while its `ack_wait` runs out. Each message runs `handler` as a
 * tracked job (the generic `Worker`). In order:
 *
 * 1. **Closing**: no new pull request; a message fetched and not started,
 *    or one that the last request still brings, is `nak`ed, so the server
 *    redelivers it at once (to another consumer, or to the next process).
 *    That last request is not closed early: the server cannot withdraw it,
 *    and would deliver to an inbox nobody reads (those messages would wait
 *    out their `ack_wait`); it is awaited at Releasing (it ends within
 *    `expires`).
 * 2. **Drain**: jobs in progress finish; each success is acknowledged with a
 *    confirmed ack (`ackAck`): the server has recorded it before the job
 *    counts as done.
 * 3. **Cut**: a job still running at the drain deadline is interrupted and
 *    `nak`ed (must-retry); the report lists it.
 * 4. **Releasing**: the last pull request has ended, then the connection
 *    (see {@link connect}) drains and closes.
 *
 * A failed handler's message is `nak`ed too, after `nakDelay` when given.
 * Delivery is at least once: a message whose ack was lost comes back after
 * `ack_wait` with `redelivered` set, which {@link ConsumerStats} counts.
 *
 * **Core NATS** ({@link subscribe}). Each message runs `handler` as tracked
 * work. At Closing the subscription unsubscribes: no handler starts from
 * then on (a message already on its way is dropped, and counted); handlers
 * already running finish within the drain. Core NATS delivers at most once:
 * use JetStream for work that must not be lost.
 *
 * **Connection** ({@link connect}). `connect()` as a managed resource. At
 * Releasing, after everything acquired later: `drain()`, which
 * unsubscribes whatever is left, lets the messages already received be
 * processed, flushes what was published, and closes; bounded by the
 * release's deadline, after which the connection is closed outright.
 *
 * `@nats-io/transport-node` and `@nats-io/jetstream` are optional peer
 * dependencies, loaded when used.
 *
 * @since 0.1.0
 */
import type { Consumer as JsConsumer, ConsumerMessages, JsMsg } from "@nats-io/jetstream"
import type { Msg, NatsConnection, Subscription as NatsSubscription } from "@nats-io/transport-node"
import type { NodeConnectionOptions } from "@nats-io/transport-node"
import * as Cause from "effect/Cause"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberSet from "effect/FiberSet"
import * as Queue from "effect/Queue"
import type * as Scope from "effect/Scope"
import type * as Adapter from "../Adapter.ts"
import { InFlight } from "../InFlight.ts"
import { millisOr } from "../internal/base/duration.ts"
import { reasonOf } from "../internal/base/errors.ts"
import * as Lifecycle from "../Lifecycle.ts"
import * as Resource from "../Resource.ts"
import { OperationError } from "./internal/errors.ts"
import { releaseSliceMillis, settledWithin } from "./internal/slice.ts"
import * as Worker from "./Worker.ts"

const DEFAULT_PULL_EXPIRES = Duration.seconds(2)
const DEFAULT_ACK_TIMEOUT = Duration.seconds(5)

// -----------------------------------------------------------------------------
// errors
// -----------------------------------------------------------------------------

/**
 * A NATS operation failed: connecting, looking up a JetStream consumer,
 * fetching.
 *
 * @example
 * ```ts
 * import * as Nats from "effect-graceful/Nats"
 *
 * const error = new Nats.NatsError({ resource: "orders", operation: "consumer lookup", reason: "consumer not found" })
 * error.message // "orders: consumer lookup failed: consumer not found"
 * ```
 *
 * @category errors
 * @since 0.1.0
 */
export class NatsError extends OperationError("NatsError") {}

/**
 * The server did not confirm an acknowledgement: the message will be
 * delivered again after its `ack_wait`.
 *
 * @example
 * ```ts
 * import * as Nats from "effect-graceful/Nats"
 *
 * const error = new Nats.NatsAckError({ resource: "orders", seq: 42, reason: "timeout" })
 * error.message // "orders: ack of stream sequence 42 not confirmed: timeout"
 * ```
 *
 * @category errors
 * @since 0.1.0
 */
export class NatsAckError extends Data.TaggedError("NatsAckError")<{
  readonly resource: string
  readonly seq: number
  readonly reason: string
}> {
  override get message(): string {
    return `${this.resource}: ack of stream sequence ${this.seq} not confirmed: ${this.reason}`
  }
}

/**
 * The connection did not finish its `drain()` within the release's slice
 * and was closed outright.
 *
 * @example
 * ```ts
 * import * as Nats from "effect-graceful/Nats"
 *
 * const error = new Nats.NatsDrainTimeoutError({ resource: "nats", waitedMs: 3000 })
 * error.message // "nats: drain did not finish within 3000 ms; the connection was closed"
 * ```
 *
 * @category errors
 * @since 0.1.0
 */
export class NatsDrainTimeoutError extends Data.TaggedError("NatsDrainTimeoutError")<{
  readonly resource: string
  readonly waitedMs: number
}> {
  override get message(): string {
    return `${this.resource}: drain did not finish within ${this.waitedMs} ms; the connection was closed`
  }
}

// -----------------------------------------------------------------------------
// connection
// -----------------------------------------------------------------------------

/**
 * Options of {@link connect}.
 *
 * @category models
 * @since 0.1.0
 */
export interface ConnectOptions {
  /** Names the connection in logs and in the report. Default `nats`. */
  readonly name?: string | undefined
  /** The release slice: how long `drain()` may take. Default: what is left of the budget. */
  readonly timeout?: Duration.Input | undefined
}

/**
 * Connects (`@nats-io/transport-node`'s `connect`) as a managed resource,
 * released at Releasing with `drain()` within its slice (see the module
 * docs).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import * as Nats from "effect-graceful/Nats"
 *
 * const program = Effect.gen(function*() {
 *   const nc = yield* Nats.connect({ servers: "127.0.0.1:4222", name: "orders" }, { timeout: "3 seconds" })
 * })
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const connect = (
  connectionOptions: NodeConnectionOptions,
  options: ConnectOptions = {}
): Effect.Effect<NatsConnection, NatsError, Lifecycle.Lifecycle | Scope.Scope> => {
  const name = options.name ?? "nats"
  return Resource.make(
    name,
    Effect.tryPromise({
      try: () => import("@nats-io/transport-node").then((nats) => nats.connect(connectionOptions)),
      catch: (error) => new NatsError({ resource: name, operation: "connect", reason: reasonOf(error) })
    }),
    (nc) => release(name, nc, options.timeout),
    { timeout: options.timeout }
  )
}

/**
 * What the release needs of a connection.
 *
 * @category models
 * @since 0.1.0
 */
export type DrainableConnection = Pick<NatsConnection, "drain" | "close" | "closed" | "isClosed" | "isDraining">

/**
 * Takes charge of a connection you opened yourself: it is released at
 * Releasing with `drain()` within its slice, like {@link connect}'s.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import * as Nats from "effect-graceful/Nats"
 * import { connect } from "@nats-io/transport-node"
 *
 * const program = Effect.gen(function*() {
 *   const nc = yield* Effect.promise(() => connect({ servers: "127.0.0.1:4222", user: "app", pass: "secret" }))
 *   yield* Nats.fromConnection(nc, { name: "nats", timeout: "3 seconds" })
 * })
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const fromConnection = <C extends DrainableConnection>(
  nc: C,
  options: ConnectOptions = {}
): Effect.Effect<C, never, Lifecycle.Lifecycle | Scope.Scope> => {
  const name = options.name ?? "nats"
  return Resource.make(name, Effect.succeed(nc), (nc) => release(name, nc, options.timeout), {
    timeout: options.timeout
  })
}

const release = (name: string, nc: DrainableConnection, timeout: Duration.Input | undefined) =>
  Effect.gen(function*() {
    if (nc.isClosed()) return
    const sliceMs = yield* releaseSliceMillis(timeout)
    // Keep a little of the slice for closing outright.
    const waitMs = Math.max(0, sliceMs - Math.min(250, sliceMs / 4))
    const drained = yield* settledWithin(nc.isDraining() ? nc.closed() : nc.drain(), waitMs)
    if (drained) return
    yield* settledWithin(nc.close(), sliceMs - waitMs)
    return yield* new NatsDrainTimeoutError({ resource: name, waitedMs: Math.round(waitMs) })
  })

// -----------------------------------------------------------------------------
// JetStream
// -----------------------------------------------------------------------------

/**
 * Options of {@link consume}.
 *
 * @category models
 * @since 0.1.0
 */
export interface ConsumeOptions<R> {
  readonly connection: NatsConnection
  /** The stream. */
  readonly stream: string
  /** The durable pull consumer on it (create it beforehand, e.g. with `jetstreamManager`). */
  readonly consumer: string
  /** Processes one message; it is acknowledged only if this succeeds. */
  readonly handler: (message: JsMsg) => Effect.Effect<unknown, unknown, R>
  /** How many messages are processed at once (and fetched at most). Default 1. */
  readonly concurrency?: number | undefined
  /**
   * Longest wait of one pull request. At shutdown the last request is left to
   * end by itself, so this also bounds how long the release waits. Default 2
   * seconds (at least 1 second).
   */
  readonly expires?: Duration.Input | undefined
  /** Deadline of the release that waits for the last pull request. */
  readonly timeout?: Duration.Input | undefined
  /** How long the server waits before redelivering a failed message. Default: at once. */
  readonly nakDelay?: Duration.Input | undefined
  /** Names the hook and the jobs. Default `nats <stream>/<consumer>`. */
  readonly name?: string | undefined
  /** How a message is named in logs and in the report's cut list. Default: its stream sequence. */
  readonly label?: ((message: JsMsg) => string) | undefined
  /** Longest wait for the server to confirm an ack. Default 5 seconds. */
  readonly ackTimeout?: Duration.Input | undefined
}

/**
 * Counters of a JetStream consumer: the worker's, plus messages received,
 * received again (`redelivered`), and handed back unstarted at Closing.
 *
 * @category models
 * @since 0.1.0
 */
export interface ConsumerStats extends Worker.ConsumerStats {}

/**
 * A running JetStream consumer.
 *
 * @category models
 * @since 0.1.0
 */
export interface Consumer {
  readonly stats: Effect.Effect<ConsumerStats>
  /** Stop fetching and hand back unstarted messages now (the Closing hook does this by itself). */
  readonly stop: Effect.Effect<void>
}

/** What the parts of a JetStream consumer share. */
interface PullState {
  readonly name: string
  readonly consumer: JsConsumer
  readonly expiresMs: number
  /** Messages fetched and not yet taken by a worker. */
  readonly inbox: Queue.Queue<JsMsg>
  readonly counters: { received: number; redelivered: number; handedBack: number }
  readonly runFork: <A, E>(effect: Effect.Effect<A, E>) => unknown
  /** Takers waiting now: what the next pull request asks for. */
  demand: number
  /** Set at Closing (or by `stop`): no new pull request. */
  stopped: boolean
  /** The pull request in progress, if any. */
  current: ConsumerMessages | undefined
  /** Wakes the fetch loop while it waits for demand. */
  wake: (() => void) | undefined
}

const nakQuietly = (message: JsMsg, delayMs?: number): void => {
  try {
    if (delayMs === undefined) message.nak()
    else message.nak(delayMs)
  } catch {
    // the connection is closed: the server redelivers after ack_wait
  }
}

const lookupConsumer = (
  connection: NatsConnection,
  stream: string,
  consumer: string,
  name: string
): Effect.Effect<JsConsumer, NatsError> =>
  Effect.tryPromise({
    try: async () => {
      const { jetstream } = await import("@nats-io/jetstream")
      return jetstream(connection).consumers.get(stream, consumer)
    },
    catch: (error) => new NatsError({ resource: name, operation: "consumer lookup", reason: reasonOf(error) })
  })

/** Reads one pull request to its end: into the inbox, or `nak`ed once the consumer is stopped. */
const receiveBatch = async (state: PullState, batch: ConsumerMessages): Promise<void> => {
  const { counters } = state
  for await (const message of batch) {
    counters.received++
    if (message.redelivered) counters.redelivered++
    if (state.stopped) {
      counters.handedBack++
      nakQuietly(message)
    } else {
      Queue.offerUnsafe(state.inbox, message)
    }
  }
}

/** Fetches for the workers that wait, as long as the consumer runs. */
const fetchLoop = async (state: PullState): Promise<void> => {
  let backoffMs = 100
  while (!state.stopped) {
    const want = state.demand - Queue.sizeUnsafe(state.inbox)
    if (want <= 0) {
      await new Promise<void>((resolve) => {
        state.wake = resolve
      })
      state.wake = undefined
      continue
    }
    try {
      const batch = await state.consumer.fetch({ max_messages: want, expires: state.expiresMs })
      state.current = batch
      await receiveBatch(state, batch)
      backoffMs = 100
    } catch (error) {
      if (state.stopped) break
      state.runFork(Effect.logWarning(`${state.name}: fetch failed; retrying in ${backoffMs} ms`, reasonOf(error)))
      await new Promise((resolve) => setTimeout(resolve, backoffMs))
      backoffMs = Math.min(5_000, backoffMs * 2)
    } finally {
      state.current = undefined
    }
  }
}

/** Takes the next message; while it waits, it counts as demand for the fetch loop. */
const takeMessage = (state: PullState): Effect.Effect<JsMsg> =>
  Effect.acquireUseRelease(
    Effect.sync(() => {
      state.demand++
      state.wake?.()
    }),
    () => Queue.take(state.inbox),
    () => Effect.sync(() => void state.demand--)
  )

/** A confirmed ack: the server has recorded it before the job counts as done. */
const ackConfirmed = (name: string, ackTimeoutMs: number) => (message: JsMsg): Effect.Effect<void, NatsAckError> =>
  Effect.tryPromise({
    try: () => message.ackAck({ timeout: ackTimeoutMs }),
    catch: (error) => new NatsAckError({ resource: name, seq: message.seq, reason: reasonOf(error) })
  }).pipe(
    Effect.flatMap((confirmed) =>
      confirmed
        ? Effect.void
        : Effect.fail(new NatsAckError({ resource: name, seq: message.seq, reason: "not confirmed" }))
    )
  )

/** Stops fetching and the worker, then hands back what was fetched and not started. */
const stopPulling = (state: PullState, worker: Worker.Worker): Effect.Effect<void> =>
  Effect.gen(function*() {
    if (state.stopped) return
    state.stopped = true
    state.wake?.()
    yield* worker.stop
    const unstarted = yield* Queue.clear(state.inbox)
    for (const message of unstarted) nakQuietly(message)
    state.counters.handedBack += unstarted.length
  })

/**
 * A pull request cannot be withdrawn: the server delivers to it until it
 * is filled or expires, and a message sent to an inbox nobody listens to
 * any more would wait out its `ack_wait`. So the last request is left to
 * end by itself (within `expires`), and whatever it still brings is
 * nak'ed; only when the release's slice runs out is it dropped.
 */
const awaitLastPull = (
  state: PullState,
  fetching: Promise<void>,
  timeout: Duration.Input | undefined
): Effect.Effect<void, NatsError, Lifecycle.Lifecycle> =>
  Effect.gen(function*() {
    state.stopped = true
    state.wake?.()
    const sliceMs = yield* releaseSliceMillis(timeout)
    if (yield* settledWithin(fetching, sliceMs - Math.min(100, sliceMs / 4))) return
    state.current?.stop()
    return yield* new NatsError({
      resource: state.name,
      operation: "release",
      reason: "the last pull request did not end within the release slice"
    })
  })

/**
 * Consumes a JetStream durable pull consumer (see the module docs): fetches
 * only for free workers, up to `concurrency` jobs at once, stops at Closing,
 * acknowledges each success once (confirmed), `nak`s failed, cut and
 * unstarted messages.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Graceful } from "effect-graceful"
 * import * as Nats from "effect-graceful/Nats"
 *
 * const program = Effect.gen(function*() {
 *   const connection = yield* Nats.connect({ servers: process.env.NATS_URL ?? "127.0.0.1:4222" })
 *   yield* Nats.consume({
 *     connection,
 *     stream: "ORDERS",
 *     consumer: "mailer",
 *     concurrency: 8,
 *     handler: (message) => sendReceipt(message.json<{ readonly id: string }>())
 *   })
 *   return yield* Effect.never
 * })
 *
 * declare const sendReceipt: (order: { readonly id: string }) => Effect.Effect<void, Error>
 *
 * Effect.runFork(Graceful.run(program))
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const consume = <R>(
  options: ConsumeOptions<R>
): Effect.Effect<Consumer, NatsError, R | Lifecycle.Lifecycle | InFlight | Scope.Scope> =>
  Effect.gen(function*() {
    const name = options.name ?? `nats ${options.stream}/${options.consumer}`
    const nakDelayMs = millisOr(options.nakDelay)
    const state: PullState = {
      name,
      consumer: yield* lookupConsumer(options.connection, options.stream, options.consumer, name),
      expiresMs: Math.max(1_000, millisOr(options.expires, DEFAULT_PULL_EXPIRES)),
      inbox: yield* Queue.unbounded<JsMsg>(),
      counters: { received: 0, redelivered: 0, handedBack: 0 },
      runFork: Effect.runForkWith(yield* Effect.context<never>()),
      demand: 0,
      stopped: false,
      current: undefined,
      wake: undefined
    }
    const fetching = fetchLoop(state)

    const worker = yield* Worker.make({
      name,
      concurrency: Math.max(1, Math.floor(options.concurrency ?? 1)),
      take: takeMessage(state),
      process: options.handler,
      kind: "message",
      label: options.label ?? ((message: JsMsg) => `seq ${message.seq}`),
      ack: ackConfirmed(name, millisOr(options.ackTimeout, DEFAULT_ACK_TIMEOUT)),
      nack: (message, reason) =>
        Effect.sync(() => nakQuietly(message, reason._tag === "Failed" ? nakDelayMs : undefined))
    })

    const stop = stopPulling(state, worker)
    yield* Lifecycle.addHook(`${name}: stop fetching`, "Closing", stop)
    yield* Resource.addFinalizer(`${name} (pull request)`, awaitLastPull(state, fetching, options.timeout), {
      timeout: options.timeout
    })

    return {
      stats: Effect.map(worker.stats, (stats) => ({ ...stats, ...state.counters })),
      stop
    }
  })

// -----------------------------------------------------------------------------
// core NATS
// -----------------------------------------------------------------------------

/**
 * Options of {@link subscribe}.
 *
 * @category models
 * @since 0.1.0
 */
export interface SubscribeOptions<R> {
  readonly connection: NatsConnection
  /** The subject (wildcards allowed). */
  readonly subject: string
  /** A queue group: each message goes to one member of the group. */
  readonly queue?: string | undefined
  /** Runs for each message, as tracked work. A failure is logged and counted. */
  readonly handler: (message: Msg) => Effect.Effect<unknown, unknown, R>
  /** Names the hook and the work. Default `nats <subject>`. */
  readonly name?: string | undefined
}

/**
 * Counters of a core subscription: messages received, handled
 * (successfully), failed, dropped (arrived after Closing), running now.
 *
 * @category models
 * @since 0.1.0
 */
export interface SubscriptionStats extends Adapter.SubscriptionStats {}

/**
 * A running core subscription.
 *
 * @category models
 * @since 0.1.0
 */
export interface Subscription {
  readonly stats: Effect.Effect<SubscriptionStats>
  /** Unsubscribe now (the Closing hook does this by itself). */
  readonly unsubscribe: Effect.Effect<void>
  /** Whether messages still start handlers. */
  readonly isSubscribed: () => boolean
}

/**
 * Subscribes to a subject and runs `handler` for each message as tracked
 * work; unsubscribes at Closing (see the module docs).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Graceful } from "effect-graceful"
 * import * as Nats from "effect-graceful/Nats"
 *
 * const program = Effect.gen(function*() {
 *   const connection = yield* Nats.connect({ servers: "127.0.0.1:4222" })
 *   yield* Nats.subscribe({
 *     connection,
 *     subject: "cache.invalidate.>",
 *     handler: (message) => Effect.log(`invalidate ${message.subject}`)
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
export const subscribe = <R>(
  options: SubscribeOptions<R>
): Effect.Effect<Subscription, never, R | Lifecycle.Lifecycle | InFlight | Scope.Scope> =>
  Effect.gen(function*() {
    const name = options.name ?? `nats ${options.subject}`
    const lifecycle = yield* Lifecycle.Lifecycle
    const inFlight = yield* InFlight
    const run = yield* FiberSet.makeRuntime<R>()
    const stats = { received: 0, handled: 0, failed: 0, dropped: 0, running: 0 }
    let subscribed = true

    const onMessage = (error: Error | null, message: Msg) => {
      if (error !== null) return
      stats.received++
      // Checked on every message: once the program is Closing no handler
      // starts, even before the hook has run.
      if (!subscribed || Lifecycle.isAtLeast(lifecycle.phaseUnsafe(), "Closing")) {
        stats.dropped++
        return
      }
      stats.running++
      // `run` starts the fiber synchronously: the work is in the in-flight
      // set before this callback returns.
      run(inFlight.track(
        options.handler(message).pipe(
          Effect.matchCauseEffect({
            onSuccess: () => Effect.sync(() => void stats.handled++),
            onFailure: (cause) =>
              Effect.sync(() => void stats.failed++).pipe(
                Effect.andThen(
                  Cause.hasInterruptsOnly(cause)
                    ? Effect.void
                    : Effect.logError(
                      `${name}: handler failed for a message on ${message.subject}`,
                      Cause.pretty(cause)
                    )
                )
              )
          }),
          Effect.ensuring(Effect.sync(() => void stats.running--))
        ),
        { kind: "message", label: message.subject }
      ))
    }

    const subscription: NatsSubscription = options.connection.subscribe(options.subject, {
      ...(options.queue === undefined ? {} : { queue: options.queue }),
      callback: onMessage
    })

    const unsubscribe = Effect.sync(() => {
      if (!subscribed) return
      subscribed = false
      if (!subscription.isClosed()) subscription.unsubscribe()
    })

    yield* Lifecycle.addHook(`${name}: unsubscribe`, "Closing", unsubscribe)
    yield* Effect.addFinalizer(() => unsubscribe)

    return {
      stats: Effect.sync(() => ({ ...stats })),
      unsubscribe,
      isSubscribed: () => subscribed
    }
  })
