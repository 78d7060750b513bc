/**
 * The subscription: each completed `/work` request is published on the
 * `work.completed` channel, and the service subscribes to it (as a fleet of
 * instances would, to invalidate caches or update counters).
 *
 * The subscriber is the library's Redis pub/sub subscriber
 * (`effect-graceful/Redis`): each message's handler is tracked work, no
 * handler starts once the service is Closing, and the connection is released
 * in the Releasing phase. With `REDIS_URL` it talks to a real Redis; without,
 * to {@link LocalBroker}, an in-process broker with the same interface.
 */
import { Config, Context, Duration, Effect, Layer, Option } from "effect"
import { EventEmitter } from "node:events"
import * as Redis from "../../src/adapters/Redis.ts"
import * as ShutdownConfig from "../../src/ShutdownConfig.ts"
import { ServiceConfig } from "./Config.ts"

/** The channel completed work is announced on. */
export const channel = "work.completed"

/**
 * Publishing, and what the subscriber has seen.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Events } from "./Events.ts"
 *
 * const announce = Events.use((events) => events.publish(JSON.stringify({ id: "w-1" })))
 * ```
 */
export class Events extends Context.Service<Events, {
  readonly kind: "in-process" | "redis"
  /** Publishes a message on {@link channel}; never fails the caller (a lost announcement is logged). */
  readonly publish: (message: string) => Effect.Effect<void>
  /** Messages the subscriber has handled. */
  readonly received: () => number
}>()("service/Events") {}

const globToRegExp = (pattern: string) =>
  new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".")}$`)

/**
 * An in-process pub/sub broker that speaks the part of node-redis's client
 * interface the subscriber uses (`duplicate`, `subscribe`, `pSubscribe`,
 * `unsubscribe`, `close`), so the same subscriber code runs with or without
 * a Redis server. Delivery is asynchronous, as over a socket.
 *
 * @example
 * ```ts
 * import { LocalBroker } from "./Events.ts"
 *
 * const broker = new LocalBroker()
 * broker.publish("news", "hello") // 0 subscribers
 * ```
 */
export class LocalBroker implements Redis.PubSubClient {
  readonly #bus = new EventEmitter().setMaxListeners(0)
  /** Delivers `message` to every subscription matching `channel`; returns how many there were. */
  publish(channel: string, message: string): number {
    const count = this.#bus.listenerCount("message")
    if (count > 0) setImmediate(() => this.#bus.emit("message", channel, message))
    return count
  }
  duplicate(): Redis.PubSubConnection {
    const bus = this.#bus
    const listeners = new Set<(channel: string, message: string) => void>()
    const add = (match: (channel: string) => boolean, listener: (message: string, channel: string) => unknown) => {
      const onMessage = (channel: string, message: string) => {
        if (match(channel)) listener(message, channel)
      }
      listeners.add(onMessage)
      bus.on("message", onMessage)
    }
    const removeAll = () => {
      for (const listener of listeners) bus.off("message", listener)
      listeners.clear()
    }
    return {
      connect: async () => undefined,
      close: async () => removeAll(),
      destroy: removeAll,
      on: () => undefined,
      subscribe: async (channels, listener) => {
        const names = new Set(Array.isArray(channels) ? channels : [channels])
        add((channel) => names.has(channel), listener)
      },
      pSubscribe: async (patterns, listener) => {
        const regexps = (Array.isArray(patterns) ? patterns : [patterns]).map(globToRegExp)
        add((channel) => regexps.some((regexp) => regexp.test(channel)), listener)
      },
      unsubscribe: async () => removeAll(),
      pUnsubscribe: async () => removeAll()
    }
  }
}

const local = Effect.sync(() => {
  const broker = new LocalBroker()
  return {
    client: broker as Redis.PubSubClient,
    connectTimeout: undefined,
    publish: (message: string) => Effect.sync(() => void broker.publish(channel, message))
  }
})

const redis = (url: string) =>
  Effect.gen(function*() {
    const { createClient } = yield* Effect.promise(() => import("redis"))
    // How long connecting may take at start-up, retries included: a Redis
    // that is down (node-redis retries forever) fails the start-up with the
    // reason instead of hanging it; each retry is logged.
    const connectTimeout = yield* ShutdownConfig.duration("REDIS_CONNECT_TIMEOUT").pipe(
      Config.withDefault(Duration.seconds(10))
    )
    // The publisher connection, released after the subscriber (acquired first).
    const client = yield* Redis.connect(createClient({ url }), {
      name: "redis publisher",
      connectTimeout,
      timeout: "2 seconds"
    })
    return {
      client: client as unknown as Redis.PubSubClient,
      connectTimeout,
      publish: (message: string) =>
        Effect.tryPromise(() => client.publish(channel, message)).pipe(
          Effect.asVoid,
          Effect.catch((error) => Effect.logWarning(`publish on ${channel} failed`, error))
        )
    }
  })

/**
 * The broker for the configuration (Redis when `REDIS_URL` is set), and the
 * subscription to {@link channel}.
 *
 * @example
 * ```ts
 * import { Layer } from "effect"
 * import { EventsLive } from "./Events.ts"
 *
 * declare const ApiLive: Layer.Layer<never, never, import("./Events.ts").Events>
 * const Live = ApiLive.pipe(Layer.provide(EventsLive))
 * ```
 */
export const EventsLive = Layer.effect(
  Events,
  Effect.gen(function*() {
    const config = yield* ServiceConfig
    const broker = Option.isSome(config.redisUrl) ? yield* redis(config.redisUrl.value) : yield* local
    let received = 0
    yield* Redis.subscribe({
      client: broker.client,
      connectTimeout: broker.connectTimeout,
      channels: [channel],
      name: "subscription",
      timeout: "2 seconds",
      handler: () => Effect.sync(() => void received++)
    })
    yield* Effect.addFinalizer(() => Effect.log(`subscription: ${received} messages handled`))
    const kind = Option.isSome(config.redisUrl) ? "redis" : "in-process"
    yield* Effect.log(`subscription: ${kind} pub/sub on ${channel}`)
    return Events.of({ kind, publish: broker.publish, received: () => received })
  })
)
