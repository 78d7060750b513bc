/**
 * RabbitMQ (AMQP 0-9-1) as part of the shutdown, on `amqplib`: a consumer
 * that stops the broker's deliveries at Closing and hands back what it did
 * not finish, a publisher whose outstanding confirms are awaited before its
 * channel closes, and a connection released last.
 *
 * **Consumer** ({@link consume}). A channel of its own, with `prefetch`
 * unacknowledged messages at most (default: `concurrency`). Each delivery
 * runs `handler` as a tracked job (the generic `Worker`). In order:
 *
 * 1. **Closing**: the consumer is cancelled (`basic.cancel`), so the broker
 *    delivers nothing more to it; no job starts from now on. Deliveries that
 *    were already on the wire, or buffered here and not started, are
 *    `nack`ed with `requeue`: the broker hands them to another consumer at
 *    once.
 * 2. **Drain**: jobs in progress finish; each success is `ack`ed once.
 * 3. **Cut**: a job still running at the drain deadline is interrupted and
 *    `nack`ed with `requeue` (must-retry); the report lists it.
 * 4. **Releasing**: the channel closes (the broker requeues anything still
 *    unacknowledged), then, in reverse acquisition order, the connection.
 *
 * A handler that fails is `nack`ed with `requeue` too (default), or without
 * it (`onFailure: "reject"`, so a dead-letter exchange gets it). Delivery is
 * at least once: a message whose `ack` was lost with the connection comes
 * back with `redelivered` set, which {@link ConsumerStats} counts.
 *
 * **Publisher** ({@link publisher}). A confirm channel: each `publish`
 * completes when the broker confirms the message (or fails when it refuses
 * it). At Releasing, confirms still outstanding are awaited within the
 * release's slice, then the channel closes; messages never confirmed are
 * named in the report, never lost silently.
 *
 * **Connection** ({@link connect}). `amqp.connect` as a managed resource,
 * closed at Releasing after the channels made from it.
 *
 * What it does not handle: a connection lost while running is not reopened
 * here (amqplib's `recovery` option, or a restart, does that); messages a
 * lost channel held are requeued by the broker.
 *
 * `amqplib` is an optional peer dependency, loaded only by {@link connect}.
 *
 * @since 0.1.0
 */
import type * as amqp from "amqplib"
import * as Cause from "effect/Cause"
import * as Data from "effect/Data"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Queue from "effect/Queue"
import type * as Scope from "effect/Scope"
import type { InFlight } from "../InFlight.ts"
import { reasonOf } from "../internal/base/errors.ts"
import * as Lifecycle from "../Lifecycle.ts"
import * as Resource from "../Resource.ts"
import { OperationError } from "./internal/errors.ts"
import { releaseSliceMillis, settledWithin } from "./internal/slice.ts"
import * as Worker from "./Worker.ts"

// -----------------------------------------------------------------------------
// errors
// -----------------------------------------------------------------------------

/**
 * The broker could not be reached, or a channel could not be opened or set
 * up (prefetch, consume).
 *
 * @example
 * ```ts
 * import * as Amqp from "effect-graceful/Amqp"
 *
 * const error = new Amqp.AmqpError({ resource: "invoices", operation: "consume", reason: "NOT_FOUND - no queue 'invoices'" })
 * error.message // "invoices: consume failed: NOT_FOUND - no queue 'invoices'"
 * ```
 *
 * @category errors
 * @since 0.1.0
 */
export class AmqpError extends OperationError("AmqpError") {}

/**
 * The broker refused (`basic.nack`) a published message, or the channel
 * closed before it confirmed it.
 *
 * @example
 * ```ts
 * import * as Amqp from "effect-graceful/Amqp"
 *
 * const error = new Amqp.AmqpPublishError({ resource: "events", routingKey: "order.paid", reason: "message nacked" })
 * error.message // "events: publish to order.paid not confirmed: message nacked"
 * ```
 *
 * @category errors
 * @since 0.1.0
 */
export class AmqpPublishError extends Data.TaggedError("AmqpPublishError")<{
  readonly resource: string
  readonly routingKey: string
  readonly reason: string
}> {
  override get message(): string {
    return `${this.resource}: publish to ${this.routingKey} not confirmed: ${this.reason}`
  }
}

/**
 * Publisher confirms were still outstanding at the end of the publisher's
 * release slice: those messages may not have reached the broker. The
 * channel is closed all the same; this is what the report shows.
 *
 * @example
 * ```ts
 * import * as Amqp from "effect-graceful/Amqp"
 *
 * const error = new Amqp.AmqpUnconfirmedError({ resource: "events", outstanding: 3, waitedMs: 2000 })
 * error.message // "events: 3 published message(s) still unconfirmed after 2000 ms"
 * ```
 *
 * @category errors
 * @since 0.1.0
 */
export class AmqpUnconfirmedError extends Data.TaggedError("AmqpUnconfirmedError")<{
  readonly resource: string
  readonly outstanding: number
  readonly waitedMs: number
}> {
  override get message(): string {
    return `${this.resource}: ${this.outstanding} published message(s) still unconfirmed after ${this.waitedMs} ms`
  }
}

// -----------------------------------------------------------------------------
// connection and channels
// -----------------------------------------------------------------------------

/**
 * What this module needs of an amqplib connection (`amqp.connect(...)`'s
 * result).
 *
 * @category models
 * @since 0.1.0
 */
export interface Connection {
  createChannel(): Promise<amqp.Channel>
  createConfirmChannel(): Promise<amqp.ConfirmChannel>
  close(): Promise<void>
  on(event: "error", listener: (error: Error) => void): unknown
}

/**
 * Options of {@link connect}.
 *
 * @category models
 * @since 0.1.0
 */
export interface ConnectOptions {
  /** Names the connection in logs and in the report. Default `rabbitmq`. */
  readonly name?: string | undefined
  /** The close's deadline. Default: what is left of the budget. */
  readonly timeout?: Duration.Input | undefined
  /** Passed to `amqp.connect` (heartbeat, TLS, client properties). */
  readonly socketOptions?: amqp.SocketOptions | undefined
}

/**
 * Opens a connection (`amqp.connect(url)`) as a managed resource: closed at
 * Releasing, after everything acquired later (channels, consumers,
 * publishers) has been released.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import * as Amqp from "effect-graceful/Amqp"
 *
 * const program = Effect.gen(function*() {
 *   const connection = yield* Amqp.connect("amqp://guest:guest@127.0.0.1:5672", { name: "rabbitmq" })
 * })
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const connect = (
  url: string | amqp.Options.Connect,
  options: ConnectOptions = {}
): Effect.Effect<amqp.ChannelModel, AmqpError, Lifecycle.Lifecycle | Scope.Scope> => {
  const name = options.name ?? "rabbitmq"
  return Effect.gen(function*() {
    const runFork = Effect.runForkWith(yield* Effect.context<never>())
    return yield* Resource.make(
      name,
      Effect.tryPromise({
        try: async () => {
          const { default: amqplib } = await import("amqplib")
          const connection = await amqplib.connect(url, options.socketOptions)
          // Without an `error` listener a lost connection would crash the process.
          connection.on("error", (error: Error) => {
            runFork(Effect.logWarning(`${name}: connection error`, reasonOf(error)))
          })
          return connection
        },
        catch: (error) => new AmqpError({ resource: name, operation: "connect", reason: reasonOf(error) })
      }),
      (connection) => closeQuietly(() => connection.close()),
      { timeout: options.timeout }
    )
  })
}

/** Closes a channel or connection; one that is already closed is fine. */
const closeQuietly = (close: () => Promise<void>) =>
  Effect.tryPromise(close).pipe(
    Effect.catch((error) => /closed/i.test(reasonOf(error.cause)) ? Effect.void : Effect.fail(error))
  )

/** A channel of its own, closed at Releasing; its errors are logged, never thrown. */
const managedChannel = <C extends amqp.Channel>(
  name: string,
  open: () => Promise<C>,
  release: (channel: C) => Effect.Effect<void, unknown, Lifecycle.Lifecycle>,
  timeout: Duration.Input | undefined
) =>
  Effect.gen(function*() {
    const runFork = Effect.runForkWith(yield* Effect.context<never>())
    const state = { closed: false }
    const channel = yield* Resource.make(
      name,
      Effect.tryPromise({
        try: open,
        catch: (error) => new AmqpError({ resource: name, operation: "open channel", reason: reasonOf(error) })
      }).pipe(Effect.tap((channel) =>
        Effect.sync(() => {
          channel.on("error", (error: Error) => {
            runFork(Effect.logWarning(`${name}: channel error`, reasonOf(error)))
          })
          channel.on("close", () => {
            state.closed = true
          })
        })
      )),
      (channel) => state.closed ? Effect.void : release(channel),
      { timeout }
    )
    return { channel, state }
  })

// -----------------------------------------------------------------------------
// consumer
// -----------------------------------------------------------------------------

/**
 * Options of {@link consume}.
 *
 * @category models
 * @since 0.1.0
 */
export interface ConsumeOptions<R> {
  /** The connection to open the consumer's channel on. */
  readonly connection: Connection
  /** The queue to consume (it must exist: assert it beforehand if needed). */
  readonly queue: string
  /** Processes one message; it is acknowledged only if this succeeds. */
  readonly handler: (message: amqp.ConsumeMessage) => Effect.Effect<unknown, unknown, R>
  /** How many messages are processed at once. Default: `prefetch`, else 1. */
  readonly concurrency?: number | undefined
  /** How many unacknowledged messages the broker may push (`basic.qos`). Default: `concurrency`. */
  readonly prefetch?: number | undefined
  /** What a failed handler's message gets: `requeue` (default) or `reject` (dead-lettered, or dropped). */
  readonly onFailure?: "requeue" | "reject" | undefined
  /** Names the channel, the hook and the jobs. Default `rabbitmq <queue>`. */
  readonly name?: string | undefined
  /** How a message is named in logs and in the report's cut list. Default: its `messageId`, else its delivery tag. */
  readonly label?: ((message: amqp.ConsumeMessage) => string) | undefined
  /** Deadline of the channel's close. */
  readonly timeout?: Duration.Input | undefined
}

/**
 * Counters of a consumer: the worker's, plus deliveries the broker marked
 * `redelivered`, and deliveries handed back unstarted at Closing.
 *
 * @category models
 * @since 0.1.0
 */
export interface ConsumerStats extends Worker.WorkerStats {
  readonly delivered: number
  readonly redelivered: number
  readonly handedBack: number
}

/**
 * A running consumer.
 *
 * @category models
 * @since 0.1.0
 */
export interface Consumer {
  /** The broker's tag for this consumer. */
  readonly consumerTag: string
  readonly stats: Effect.Effect<ConsumerStats>
  /** Cancel the consumer and hand back unstarted deliveries now (the Closing hook does this by itself). */
  readonly stop: Effect.Effect<void>
}

const defaultLabel = (message: amqp.ConsumeMessage): string =>
  typeof message.properties.messageId === "string" && message.properties.messageId !== ""
    ? message.properties.messageId
    : `delivery ${message.fields.deliveryTag}`

/** What the parts of a consumer share. */
interface ConsumerState {
  readonly name: string
  readonly channel: amqp.Channel
  /** `closed` is set once the channel closed (the broker closed it, or the release did). */
  readonly channelState: { readonly closed: boolean }
  /** Deliveries not yet taken by a worker. */
  readonly inbox: Queue.Queue<amqp.ConsumeMessage>
  readonly counters: { delivered: number; redelivered: number; handedBack: number }
  /** Cleared at Closing, or when the broker cancels the consumer. */
  taking: boolean
}

/** One call on the channel, its failure an {@link AmqpError} naming the operation. */
const channelCall = <A>(name: string, operation: string, run: () => Promise<A>): Effect.Effect<A, AmqpError> =>
  Effect.tryPromise({
    try: run,
    catch: (error) => new AmqpError({ resource: name, operation, reason: reasonOf(error) })
  })

// A nack on a closed channel throws: the broker requeues such a message
// by itself, so there is nothing left to do.
const handBack = (state: ConsumerState, message: amqp.ConsumeMessage, requeue: boolean): void => {
  if (state.channelState.closed) return
  try {
    state.channel.nack(message, false, requeue)
  } catch {
    // the channel closed in the meantime
  }
}

/** The consumer's callback: into the inbox, or back to the queue once the consumer stopped taking. */
const onDelivery = (state: ConsumerState) => (message: amqp.ConsumeMessage | null): void => {
  if (message === null) {
    // The broker cancelled the consumer (its queue was deleted).
    state.taking = false
    return
  }
  const { counters } = state
  counters.delivered++
  if (message.fields.redelivered) counters.redelivered++
  if (!state.taking) {
    // Already on the wire when the consumer was cancelled.
    counters.handedBack++
    handBack(state, message, true)
    return
  }
  Queue.offerUnsafe(state.inbox, message)
}

/** Stops the worker, cancels the consumer, and hands back what was delivered and not started. */
const stopConsumer = (state: ConsumerState, worker: Worker.Worker, consumerTag: string): Effect.Effect<void> =>
  Effect.gen(function*() {
    if (!state.taking) return
    state.taking = false
    yield* worker.stop
    // basic.cancel: the broker stops delivering to this consumer.
    if (!state.channelState.closed) {
      yield* channelCall(state.name, "cancel", () => state.channel.cancel(consumerTag)).pipe(
        Effect.catchCause((cause) => Effect.logWarning(`${state.name}: cancel failed`, Cause.pretty(cause)))
      )
    }
    // Delivered but never started: straight back to the queue.
    const unstarted = yield* Queue.clear(state.inbox)
    for (const message of unstarted) handBack(state, message, true)
    state.counters.handedBack += unstarted.length
  })

/**
 * Consumes a queue on a channel of its own (see the module docs): up to
 * `concurrency` messages at once as tracked jobs, `prefetch` unacknowledged
 * at most; cancelled at Closing; each success acknowledged once; failed and
 * cut messages requeued.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Graceful } from "effect-graceful"
 * import * as Amqp from "effect-graceful/Amqp"
 *
 * const program = Effect.gen(function*() {
 *   const connection = yield* Amqp.connect(process.env.AMQP_URL ?? "amqp://127.0.0.1")
 *   yield* Amqp.consume({
 *     connection,
 *     queue: "invoices",
 *     concurrency: 8,
 *     handler: (message) => sendInvoice(JSON.parse(message.content.toString()))
 *   })
 *   return yield* Effect.never
 * })
 *
 * declare const sendInvoice: (invoice: unknown) => Effect.Effect<void, Error>
 *
 * Effect.runFork(Graceful.run(program))
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const consume = <R>(
  options: ConsumeOptions<R>
): Effect.Effect<Consumer, AmqpError, R | Lifecycle.Lifecycle | InFlight | Scope.Scope> =>
  Effect.gen(function*() {
    const name = options.name ?? `rabbitmq ${options.queue}`
    const concurrency = Math.max(1, Math.floor(options.concurrency ?? options.prefetch ?? 1))
    const prefetch = Math.max(1, Math.floor(options.prefetch ?? concurrency))
    const requeueFailed = (options.onFailure ?? "requeue") === "requeue"
    const { channel, state: channelState } = yield* managedChannel(
      `${name} (channel)`,
      () => options.connection.createChannel(),
      (channel) => closeQuietly(() => channel.close()),
      options.timeout
    )
    yield* channelCall(name, "prefetch", () => channel.prefetch(prefetch))
    const state: ConsumerState = {
      name,
      channel,
      channelState,
      inbox: yield* Queue.unbounded<amqp.ConsumeMessage>(),
      counters: { delivered: 0, redelivered: 0, handedBack: 0 },
      taking: true
    }
    const { consumerTag } = yield* channelCall(
      name,
      "consume",
      () => channel.consume(options.queue, onDelivery(state), { noAck: false })
    )

    const worker = yield* Worker.make({
      name,
      concurrency,
      take: Queue.take(state.inbox),
      process: options.handler,
      label: options.label ?? defaultLabel,
      kind: "message",
      ack: (message) => Effect.try(() => channel.ack(message)),
      nack: (message, reason) =>
        Effect.sync(() => handBack(state, message, reason._tag === "Interrupted" || requeueFailed))
    })

    const stop = stopConsumer(state, worker, consumerTag)
    yield* Lifecycle.addHook(`${name}: cancel consumer`, "Closing", stop)

    return {
      consumerTag,
      stats: Effect.map(worker.stats, (stats) => ({ ...stats, ...state.counters })),
      stop
    }
  })

// -----------------------------------------------------------------------------
// publisher
// -----------------------------------------------------------------------------

/**
 * Options of {@link publisher}.
 *
 * @category models
 * @since 0.1.0
 */
export interface PublisherOptions {
  readonly connection: Connection
  /** Names the channel in logs and in the report. Default `rabbitmq publisher`. */
  readonly name?: string | undefined
  /** The release slice: how long outstanding confirms are awaited, plus the close. Default: what is left of the budget. */
  readonly timeout?: Duration.Input | undefined
}

/**
 * A publisher on a confirm channel.
 *
 * @category models
 * @since 0.1.0
 */
export interface Publisher {
  /** Publishes and waits for the broker's confirm. */
  readonly publish: (
    exchange: string,
    routingKey: string,
    content: Buffer,
    options?: amqp.Options.Publish
  ) => Effect.Effect<void, AmqpPublishError>
  /** Publishes to a queue through the default exchange and waits for the confirm. */
  readonly sendToQueue: (
    queue: string,
    content: Buffer,
    options?: amqp.Options.Publish
  ) => Effect.Effect<void, AmqpPublishError>
  /** Messages published and not confirmed yet. */
  readonly outstanding: () => number
  /** The confirm channel itself. */
  readonly channel: amqp.ConfirmChannel
}

/**
 * Opens a publisher on a confirm channel of its own. At Releasing it waits
 * for the confirms still outstanding (within its slice), then closes the
 * channel; a message still unconfirmed at the end of the slice fails the
 * release with {@link AmqpUnconfirmedError}, so the report says so.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import * as Amqp from "effect-graceful/Amqp"
 *
 * const program = Effect.gen(function*() {
 *   const connection = yield* Amqp.connect("amqp://127.0.0.1")
 *   const events = yield* Amqp.publisher({ connection, name: "events", timeout: "2 seconds" })
 *   yield* events.publish("orders", "order.paid", Buffer.from(JSON.stringify({ id: 42 })), { persistent: true })
 * })
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const publisher = (
  options: PublisherOptions
): Effect.Effect<Publisher, AmqpError, Lifecycle.Lifecycle | Scope.Scope> =>
  Effect.gen(function*() {
    const name = options.name ?? "rabbitmq publisher"
    let outstanding = 0
    const { channel } = yield* managedChannel(
      name,
      () => options.connection.createConfirmChannel(),
      (channel) =>
        Effect.gen(function*() {
          const sliceMs = yield* releaseSliceMillis(options.timeout)
          // Most of the slice for the confirms, the rest for the close.
          const waitMs = Math.max(0, sliceMs - Math.min(500, sliceMs / 4))
          const confirmed = outstanding === 0 || (yield* settledWithin(channel.waitForConfirms(), waitMs))
          const left = outstanding
          yield* closeQuietly(() => channel.close()).pipe(Effect.ignore)
          if (!confirmed && left > 0) {
            return yield* new AmqpUnconfirmedError({ resource: name, outstanding: left, waitedMs: Math.round(waitMs) })
          }
        }),
      options.timeout
    )

    const send = (routingKey: string, start: (callback: (error: unknown) => void) => void) =>
      Effect.callback<void, AmqpPublishError>((resume) => {
        outstanding++
        try {
          start((error) => {
            outstanding--
            resume(
              error === null || error === undefined
                ? Effect.void
                : Effect.fail(new AmqpPublishError({ resource: name, routingKey, reason: reasonOf(error) }))
            )
          })
        } catch (error) {
          outstanding--
          resume(Effect.fail(new AmqpPublishError({ resource: name, routingKey, reason: reasonOf(error) })))
        }
      })

    return {
      channel,
      outstanding: () => outstanding,
      publish: (exchange, routingKey, content, publishOptions) =>
        send(routingKey, (callback) => channel.publish(exchange, routingKey, content, publishOptions, callback)),
      sendToQueue: (queue, content, publishOptions) =>
        send(queue, (callback) => channel.sendToQueue(queue, content, publishOptions, callback))
    }
  })
