/**
 * MQTT as part of the shutdown, on `mqtt` (MQTT.js): a subscriber that
 * stops at Closing, acknowledges a QoS 1 message only once its handler has
 * finished, and leaves with a clean DISCONNECT, so the broker keeps the
 * session and does not publish the will of a planned stop.
 *
 * **Subscriber** ({@link consume}). The adapter creates the client itself,
 * because it must take over MQTT.js's `handleMessage` before the first
 * packet arrives (a persistent session delivers what was queued for it
 * right after CONNACK). Each message runs `handler` as a tracked job (the
 * generic `Worker`), one at a time: MQTT requires QoS 1 acknowledgements in
 * the order the messages came [MQTT-4.6.0-2], and MQTT.js reads the next
 * packet only after the previous one was handled. The `PUBACK` of a QoS 1
 * message is sent when its handler succeeded, never before. In order:
 *
 * 1. **Closing**: no message starts any more. With a clean session the
 *    subscriptions are dropped (`UNSUBSCRIBE`): the session ends with this
 *    process anyway. With a persistent session (`clean: false`) they are
 *    kept, so the broker queues what is published meanwhile for the next
 *    process; a message that arrives now is left unacknowledged, and the
 *    broker delivers it again when the session reconnects (`dup` set); no
 *    further packet is read until the release, so what follows stays queued
 *    for the session.
 * 2. **Drain**: the message in progress finishes and is acknowledged.
 * 3. **Cut**: a message still running at the drain deadline is interrupted
 *    and left unacknowledged (must-retry, with a persistent session); the
 *    report lists it.
 * 4. **Releasing**: `end()`: packets still in flight (the `UNSUBSCRIBE`,
 *    publishes) are completed, then a `DISCONNECT` is sent. A clean
 *    DISCONNECT tells the broker not to publish the will message. When the
 *    release's slice runs out, the connection is closed outright (the broker
 *    then publishes the will, as after a crash) and the release fails.
 *
 * A failed handler's message is left unacknowledged too (`onFailure:
 * "retry"`, default) or acknowledged anyway (`"drop"`): every message left
 * unacknowledged holds one place of the broker's in-flight window until the
 * session reconnects. QoS 0 messages run the same way; they have nothing to
 * acknowledge and are not redelivered.
 *
 * **Publisher** ({@link connect}). A client as a managed resource: at
 * Releasing its outgoing QoS 1 and 2 publishes are completed, then it
 * disconnects cleanly, within the slice.
 *
 * `mqtt` is an optional peer dependency, loaded when a client is made.
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Queue from "effect/Queue"
import type * as Scope from "effect/Scope"
import type { IClientOptions, IPublishPacket, MqttClient } from "mqtt"
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
 * An MQTT operation failed: connecting, subscribing.
 *
 * @example
 * ```ts
 * import * as Mqtt from "effect-graceful/Mqtt"
 *
 * const error = new Mqtt.MqttError({ resource: "sensors", operation: "connect", reason: "connect ECONNREFUSED 127.0.0.1:1883" })
 * error.message // "sensors: connect failed: connect ECONNREFUSED 127.0.0.1:1883"
 * ```
 *
 * @category errors
 * @since 0.1.0
 */
export class MqttError extends OperationError("MqttError") {}

/**
 * The client could not finish its in-flight packets and disconnect cleanly
 * within its slice; it was closed outright (the broker publishes its will).
 *
 * @example
 * ```ts
 * import * as Mqtt from "effect-graceful/Mqtt"
 *
 * const error = new Mqtt.MqttDisconnectError({ resource: "sensors", waitedMs: 2000 })
 * error.message // "sensors: no clean DISCONNECT within 2000 ms; the connection was closed outright"
 * ```
 *
 * @category errors
 * @since 0.1.0
 */
export class MqttDisconnectError extends Data.TaggedError("MqttDisconnectError")<{
  readonly resource: string
  readonly waitedMs: number
}> {
  override get message(): string {
    return `${this.resource}: no clean DISCONNECT within ${this.waitedMs} ms; the connection was closed outright`
  }
}

// -----------------------------------------------------------------------------
// client
// -----------------------------------------------------------------------------

/**
 * Options of the managed client.
 *
 * @category models
 * @since 0.1.0
 */
export interface ConnectOptions {
  /** Names the client in logs and in the report. Default `mqtt`. */
  readonly name?: string | undefined
  /** The release slice: in-flight packets and the DISCONNECT. Default: what is left of the budget. */
  readonly timeout?: Duration.Input | undefined
}

/** Ends the client cleanly within the slice; closes it outright after. */
const end = (name: string, client: MqttClient, timeout: Duration.Input | undefined) =>
  Effect.gen(function*() {
    if (client.disconnected) return
    const sliceMs = yield* releaseSliceMillis(timeout)
    const waitMs = Math.max(0, sliceMs - Math.min(250, sliceMs / 4))
    if (yield* settledWithin(client.endAsync(false), waitMs)) return
    yield* settledWithin(client.endAsync(true), sliceMs - waitMs)
    return yield* new MqttDisconnectError({ resource: name, waitedMs: Math.round(waitMs) })
  })

/** Creates a client, lets `prepare` set it up before it connects, and waits for CONNACK. */
const open = (
  name: string,
  url: string,
  clientOptions: IClientOptions,
  prepare: (client: MqttClient) => void
) =>
  Effect.gen(function*() {
    const runFork = Effect.runForkWith(yield* Effect.context<never>())
    const { default: mqtt } = yield* Effect.promise(() => import("mqtt"))
    const client = mqtt.connect(url, { ...clientOptions, manualConnect: true })
    prepare(client)
    return yield* Effect.callback<{ readonly client: MqttClient; readonly sessionPresent: boolean }, MqttError>(
      (resume) => {
        const onConnect = (connack: { readonly sessionPresent?: boolean }) => {
          client.off("error", onFirstError)
          // MQTT.js reconnects by itself; errors after the first CONNACK are logged.
          client.on("error", (error) => {
            runFork(Effect.logWarning(`${name}: MQTT error`, reasonOf(error)))
          })
          resume(Effect.succeed({ client, sessionPresent: connack.sessionPresent === true }))
        }
        const onFirstError = (error: Error) => {
          client.off("connect", onConnect)
          client.end(true)
          resume(Effect.fail(new MqttError({ resource: name, operation: "connect", reason: reasonOf(error) })))
        }
        client.once("connect", onConnect)
        client.once("error", onFirstError)
        client.connect()
        return Effect.sync(() => {
          client.off("connect", onConnect)
          client.off("error", onFirstError)
          client.end(true)
        })
      }
    )
  })

/**
 * Connects a client (for publishing) as a managed resource: at Releasing
 * its in-flight publishes are completed and it disconnects cleanly, within
 * its slice.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import * as Mqtt from "effect-graceful/Mqtt"
 *
 * const program = Effect.gen(function*() {
 *   const client = yield* Mqtt.connect("mqtt://127.0.0.1:1883", { clientId: "orders-api" }, { timeout: "2 seconds" })
 *   yield* Effect.promise(() => client.publishAsync("orders/paid", JSON.stringify({ id: 42 }), { qos: 1 }))
 * })
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const connect = (
  url: string,
  clientOptions: IClientOptions = {},
  options: ConnectOptions = {}
): Effect.Effect<MqttClient, MqttError, Lifecycle.Lifecycle | Scope.Scope> => {
  const name = options.name ?? "mqtt"
  return Resource.make(
    name,
    Effect.map(open(name, url, clientOptions, () => {}), ({ client }) => client),
    (client) => end(name, client, options.timeout),
    { timeout: options.timeout }
  )
}

// -----------------------------------------------------------------------------
// subscriber
// -----------------------------------------------------------------------------

/**
 * One message: its topic, payload, and the packet (QoS, `dup`, properties).
 *
 * @category models
 * @since 0.1.0
 */
export interface Message {
  readonly topic: string
  readonly payload: Buffer
  readonly packet: IPublishPacket
}

/**
 * Options of {@link consume}.
 *
 * @category models
 * @since 0.1.0
 */
export interface ConsumeOptions<R> {
  /** The broker, e.g. `mqtt://127.0.0.1:1883`. */
  readonly url: string
  /**
   * MQTT.js client options. For at-least-once delivery across restarts set a
   * stable `clientId` and `clean: false` (MQTT 5: a `sessionExpiryInterval`
   * too); a `will` is published by the broker only if the process dies
   * without a clean DISCONNECT.
   */
  readonly clientOptions?: IClientOptions | undefined
  /** Topic filters, with their QoS (default 1). */
  readonly topics: ReadonlyArray<string> | Readonly<Record<string, 0 | 1 | 2>>
  /** Processes one message; a QoS 1 message is acknowledged only if this succeeds. */
  readonly handler: (message: Message) => Effect.Effect<unknown, unknown, R>
  /** A failed handler's message: left unacknowledged for redelivery (`retry`, default) or acknowledged (`drop`). */
  readonly onFailure?: "retry" | "drop" | undefined
  /** UNSUBSCRIBE at Closing. Default: with a clean session only (see the module docs). */
  readonly unsubscribe?: boolean | undefined
  /** Names the client, the hook and the jobs. Default `mqtt`. */
  readonly name?: string | undefined
  /** How a message is named in logs and in the report's cut list. Default: topic and packet id. */
  readonly label?: ((message: Message) => string) | undefined
  /** The release slice: in-flight packets and the DISCONNECT. */
  readonly timeout?: Duration.Input | undefined
}

/**
 * Counters of a subscriber: the worker's, plus messages received, received
 * again (`dup`), and left unacknowledged because they arrived after Closing.
 *
 * @category models
 * @since 0.1.0
 */
export interface ConsumerStats extends Worker.ConsumerStats {}

/**
 * A running subscriber.
 *
 * @category models
 * @since 0.1.0
 */
export interface Consumer {
  /** The client, to publish on the same connection. */
  readonly client: MqttClient
  readonly stats: Effect.Effect<ConsumerStats>
  /** Stop now (the Closing hook does this by itself). */
  readonly stop: Effect.Effect<void>
}

interface Delivery {
  readonly message: Message
  /** MQTT.js's callback: without an error it sends the PUBACK and reads the next packet. */
  readonly done: (error?: Error) => void
}

const notHandled = new Error("not handled: left for redelivery")

/** What the parts of a subscriber share. */
interface SubscriberState {
  readonly name: string
  /** Messages received and not yet taken by the worker. */
  readonly inbox: Queue.Queue<Delivery>
  readonly counters: { received: number; redelivered: number; handedBack: number }
  /** Whether the subscriptions are dropped at Closing. */
  readonly unsubscribeAtClosing: boolean
  /** Cleared at Closing: a message that arrives from then on is not handled. */
  taking: boolean
  /** Set at Releasing: MQTT.js must read again. */
  releasing: boolean
  /** Acknowledgements of messages that arrived after Closing, held back until the release. */
  readonly held: Array<(error?: Error) => void>
}

/** The topic filters with their QoS (1 when not given), as `subscribeAsync` takes them. */
const topicsOf = (
  topics: ReadonlyArray<string> | Readonly<Record<string, 0 | 1 | 2>>
): Record<string, { qos: 0 | 1 | 2 }> => {
  const result: Record<string, { qos: 0 | 1 | 2 }> = {}
  if (Array.isArray(topics)) {
    for (const topic of topics as ReadonlyArray<string>) result[topic] = { qos: 1 }
  } else {
    for (const [topic, qos] of Object.entries(topics as Readonly<Record<string, 0 | 1 | 2>>)) result[topic] = { qos }
  }
  return result
}

/** The client's `handleMessage`: into the inbox, or left unacknowledged once the subscriber stopped taking. */
const receive = (state: SubscriberState): MqttClient["handleMessage"] => (packet, done) => {
  const { counters } = state
  counters.received++
  if (packet.dup) counters.redelivered++
  if (!state.taking) {
    // Arrived after Closing: no PUBACK, the broker delivers it again.
    counters.handedBack++
    // With the subscriptions kept, MQTT.js is left waiting on this
    // one until the release: it reads no further packet during the
    // drain, so what the broker sends next stays queued for the
    // session instead of bouncing back. After an UNSUBSCRIBE the
    // UNSUBACK must still be read.
    if (state.unsubscribeAtClosing || state.releasing) done(notHandled)
    else state.held.push(done)
    return
  }
  const payload = typeof packet.payload === "string" ? Buffer.from(packet.payload) : Buffer.from(packet.payload)
  Queue.offerUnsafe(state.inbox, { message: { topic: packet.topic, payload, packet }, done })
}

/** The client's release: lets MQTT.js read again, then ends it within the slice. */
const releaseSubscriber = (
  state: SubscriberState,
  client: MqttClient,
  timeout: Duration.Input | undefined
): Effect.Effect<void, MqttDisconnectError, Lifecycle.Lifecycle> =>
  Effect.suspend(() => {
    // `end()` waits for the replies to what is in flight (a SUBACK,
    // PUBACKs of publishes): let MQTT.js read again.
    state.releasing = true
    for (const done of state.held.splice(0)) done(notHandled)
    return end(state.name, client, timeout)
  })

/** SUBSCRIBE, failing when the broker refuses a filter. */
const subscribeTopics = (
  name: string,
  client: MqttClient,
  topics: Record<string, { qos: 0 | 1 | 2 }>
): Effect.Effect<void, MqttError> =>
  Effect.tryPromise({
    try: () => client.subscribeAsync(topics),
    catch: (error) => new MqttError({ resource: name, operation: "subscribe", reason: reasonOf(error) })
  }).pipe(
    Effect.flatMap((granted) => {
      const refused = granted.filter((grant) => grant.qos === 128).map((grant) => grant.topic)
      return refused.length === 0
        ? Effect.void
        : Effect.fail(
          new MqttError({ resource: name, operation: "subscribe", reason: `refused for ${refused.join(", ")}` })
        )
    })
  )

/** Stops the worker, leaves unstarted messages unacknowledged, and unsubscribes if asked to. */
const stopSubscriber = (
  state: SubscriberState,
  worker: Worker.Worker,
  client: MqttClient,
  topics: Record<string, { qos: 0 | 1 | 2 }>
): Effect.Effect<void> =>
  Effect.gen(function*() {
    if (!state.taking) return
    state.taking = false
    yield* worker.stop
    const unstarted = yield* Queue.clear(state.inbox)
    for (const { done } of unstarted) done(notHandled)
    state.counters.handedBack += unstarted.length
    if (state.unsubscribeAtClosing && client.connected) {
      // Not awaited: the UNSUBACK is read after the message in progress;
      // the release's `end()` completes it before the DISCONNECT.
      client.unsubscribeAsync(Object.keys(topics)).catch(() => undefined)
    }
  })

/**
 * Connects, subscribes, and runs `handler` for each message as a tracked
 * job, acknowledging a QoS 1 message once its handler succeeded; stops at
 * Closing and disconnects cleanly at Releasing (see the module docs).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Graceful } from "effect-graceful"
 * import * as Mqtt from "effect-graceful/Mqtt"
 *
 * const program = Effect.gen(function*() {
 *   yield* Mqtt.consume({
 *     url: process.env.MQTT_URL ?? "mqtt://127.0.0.1:1883",
 *     clientOptions: { clientId: "meter-ingest", clean: false, will: { topic: "status/meter-ingest", payload: Buffer.from("offline"), qos: 1, retain: false } },
 *     topics: { "meters/+/reading": 1 },
 *     handler: ({ topic, payload }) => storeReading(topic, payload.toString())
 *   })
 *   return yield* Effect.never
 * })
 *
 * declare const storeReading: (topic: string, value: string) => Effect.Effect<void, Error>
 *
 * Effect.runFork(Graceful.run(program))
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const consume = <R>(
  options: ConsumeOptions<R>
): Effect.Effect<Consumer, MqttError, R | Lifecycle.Lifecycle | InFlight | Scope.Scope> =>
  Effect.gen(function*() {
    const name = options.name ?? "mqtt"
    const clientOptions = options.clientOptions ?? {}
    const topics = topicsOf(options.topics)
    const state: SubscriberState = {
      name,
      inbox: yield* Queue.unbounded<Delivery>(),
      counters: { received: 0, redelivered: 0, handedBack: 0 },
      unsubscribeAtClosing: options.unsubscribe ?? clientOptions.clean !== false,
      taking: true,
      releasing: false,
      held: []
    }

    const { client, sessionPresent } = yield* Resource.make(
      name,
      open(name, options.url, clientOptions, (client) => {
        client.handleMessage = receive(state)
      }),
      ({ client }) => releaseSubscriber(state, client, options.timeout),
      { timeout: options.timeout }
    )

    const dropFailed = options.onFailure === "drop"
    const worker = yield* Worker.make({
      name,
      // One at a time: acknowledgements go out in the order messages came.
      concurrency: 1,
      take: Queue.take(state.inbox),
      process: ({ message }: Delivery) => options.handler(message),
      kind: "message",
      label: ({ message }: Delivery) =>
        options.label?.(message) ??
          `${message.topic}${message.packet.messageId === undefined ? "" : ` #${message.packet.messageId}`}`,
      ack: ({ done }: Delivery) => Effect.sync(() => done()),
      nack: ({ done }: Delivery, reason) =>
        Effect.sync(() => done(reason._tag === "Failed" && dropFailed ? undefined : notHandled))
    })

    // After the worker runs: a resumed session's queued messages come before
    // the SUBACK, and MQTT.js reads it only once they are handled. Such a
    // session has its subscriptions already, so its SUBACK is not waited
    // for (a refusal is logged); a new session's SUBACK comes at once.
    const subscribe = subscribeTopics(name, client, topics)
    if (sessionPresent) {
      yield* Effect.forkScoped(subscribe.pipe(Effect.catch((error) => Effect.logError(error.message))))
    } else {
      yield* subscribe
    }

    const stop = stopSubscriber(state, worker, client, topics)
    yield* Lifecycle.addHook(`${name}: stop`, "Closing", stop)

    return {
      client,
      stats: Effect.map(worker.stats, (stats) => ({ ...stats, ...state.counters })),
      stop
    }
  })
