/**
 * Redis as part of the shutdown, on `redis` (node-redis): pub/sub
 * subscriptions and Streams consumer groups that stop taking messages at
 * Closing, let the ones in progress finish, and lose nothing that Redis can
 * keep.
 *
 * **Pub/sub** ({@link subscribe}). A dedicated connection (a `duplicate()` of
 * your client) subscribes to channels or patterns; each message runs its
 * handler as tracked work (`InFlight`, kind `message`). At Closing the
 * subscription stops: from that moment no handler starts (a message that
 * arrives before Redis confirms the UNSUBSCRIBE is dropped, and counted);
 * handlers already running finish within the drain. At Releasing the
 * connection closes. Pub/sub delivers at most once: a message published
 * while nobody listens is gone, so use Streams for work that must not be
 * lost.
 *
 * **Streams** ({@link consume}). A consumer in a consumer group: it reads
 * with `XREADGROUP` on a dedicated blocking connection, runs each entry's
 * handler as a tracked job, and acknowledges it (`XACK`, on a second
 * connection) once, after the handler succeeded. At Closing it stops
 * reading; jobs in progress finish within the drain. A job cut at the drain
 * deadline, or whose handler failed, is *not* acknowledged: it stays in the
 * group's pending list, and `XAUTOCLAIM` hands it to a consumer (this one
 * later, another one, or the next process) once it has been idle for
 * `claimIdle`. On start the consumer first re-reads its own pending entries
 * (with a stable consumer name, a restart retries them at once), then
 * reclaims stale entries of other consumers, and keeps reclaiming every
 * `claimEvery`. Delivery is at least once; each successful run is
 * acknowledged exactly once. It is built on the generic `Worker`.
 *
 * **Connecting** ({@link connect}; `subscribe` and `consume` connect the same
 * way). node-redis retries a refused or dropped connection forever and
 * reports each failure only as an `error` event. Here each failed attempt is
 * logged, connecting is bounded by `connectTimeout` (default 10 seconds;
 * at the deadline the connection is destroyed and the acquisition fails with
 * a {@link RedisConnectError} carrying the last error), and a signal during
 * the retries stops the start-up at once.
 *
 * `redis` is an optional peer dependency: this module uses only the client
 * you pass in.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberSet from "effect/FiberSet"
import type * as Scope from "effect/Scope"
import { hostname } from "node:os"
import type * as Adapter from "../Adapter.ts"
import { InFlight, type InFlightSet } from "../InFlight.ts"
import { millisOr } from "../internal/base/duration.ts"
import { reasonOf } from "../internal/base/errors.ts"
import * as Lifecycle from "../Lifecycle.ts"
import * as Resource from "../Resource.ts"
import * as Worker from "./Worker.ts"

const DEFAULT_CONNECT_TIMEOUT = Duration.seconds(10)
const DEFAULT_CLAIM_IDLE = Duration.minutes(1)
const DEFAULT_BLOCK = Duration.seconds(2)

// -----------------------------------------------------------------------------
// clients and errors
// -----------------------------------------------------------------------------

/**
 * What this module needs of a node-redis connection. A client from
 * `createClient()` (connected or not) fits; the module only uses its
 * `duplicate()`s, never the client itself.
 *
 * @category clients
 * @since 0.1.0
 */
export interface Connection {
  connect(): Promise<unknown>
  close(): Promise<unknown>
  destroy(): void
  on(event: "error", listener: (error: Error) => void): unknown
}

/**
 * A node-redis client that pub/sub connections can be duplicated from.
 *
 * @category clients
 * @since 0.1.0
 */
export interface PubSubClient {
  duplicate(): PubSubConnection
}

/**
 * @category clients
 * @since 0.1.0
 */
export interface PubSubConnection extends Connection {
  subscribe(channels: string | Array<string>, listener: (message: string, channel: string) => unknown): Promise<unknown>
  pSubscribe(
    patterns: string | Array<string>,
    listener: (message: string, channel: string) => unknown
  ): Promise<unknown>
  unsubscribe(): Promise<unknown>
  pUnsubscribe(): Promise<unknown>
}

/**
 * A node-redis client that Streams connections can be duplicated from.
 *
 * @category clients
 * @since 0.1.0
 */
export interface StreamsClient {
  duplicate(): StreamsConnection
}

/**
 * @category clients
 * @since 0.1.0
 */
export interface StreamsConnection extends Connection {
  xGroupCreate(key: string, group: string, id: string, options?: { MKSTREAM?: boolean }): Promise<unknown>
  xReadGroup(
    group: string,
    consumer: string,
    streams: { key: string; id: string },
    options?: { COUNT?: number; BLOCK?: number }
  ): Promise<unknown>
  xAutoClaim(
    key: string,
    group: string,
    consumer: string,
    minIdleTime: number,
    start: string,
    options?: { COUNT?: number }
  ): Promise<unknown>
  xAck(key: string, group: string, id: string): Promise<number>
}

/**
 * A dedicated Redis connection could not be opened.
 *
 * @example
 * ```ts
 * import * as Redis from "effect-graceful/Redis"
 *
 * const error = new Redis.RedisConnectError({ resource: "orders subscriber", reason: "connect ECONNREFUSED 127.0.0.1:6379" })
 * error.message // "orders subscriber: cannot connect to Redis: connect ECONNREFUSED 127.0.0.1:6379"
 * ```
 *
 * @category errors
 * @since 0.1.0
 */
export class RedisConnectError extends Data.TaggedError("RedisConnectError")<{
  /** The resource's name, as in logs and in the report (not `Error.name`, which stays the tag). */
  readonly resource: string
  readonly reason: string
}> {
  override get message(): string {
    return `${this.resource}: cannot connect to Redis: ${this.reason}`
  }
}

/**
 * A Redis command failed (subscribing, creating the group, reading,
 * reclaiming).
 *
 * @example
 * ```ts
 * import * as Redis from "effect-graceful/Redis"
 *
 * const error = new Redis.RedisCommandError({ resource: "orders", command: "XREADGROUP", reason: "NOGROUP No such key" })
 * error.message // "orders: XREADGROUP failed: NOGROUP No such key"
 * ```
 *
 * @category errors
 * @since 0.1.0
 */
export class RedisCommandError extends Data.TaggedError("RedisCommandError")<{
  /** The resource's name, as in logs and in the report (not `Error.name`, which stays the tag). */
  readonly resource: string
  readonly command: string
  readonly reason: string
}> {
  override get message(): string {
    return `${this.resource}: ${this.command} failed: ${this.reason}`
  }
}

const command = <A>(name: string, commandName: string, run: () => Promise<A>) =>
  Effect.tryPromise({
    try: run,
    catch: (error) => new RedisCommandError({ resource: name, command: commandName, reason: reasonOf(error) })
  })

/** node-redis 5 throws when destroying a client that is not open. */
const destroyQuietly = (connection: Connection): void => {
  try {
    connection.destroy()
  } catch {
    // already closed
  }
}

/**
 * Options of {@link connect}.
 *
 * @category models
 * @since 0.2.0
 */
export interface ConnectOptions {
  /** Names the connection in logs, errors and the report. Default `redis`. */
  readonly name?: string | undefined
  /**
   * How long connecting may take, retries included. Default 10 seconds.
   * node-redis retries a refused or dropped connection forever; each failed
   * attempt is logged, and at this deadline the connection is destroyed and
   * the acquisition fails with a {@link RedisConnectError} that carries the
   * last error.
   */
  readonly connectTimeout?: Duration.Input | undefined
  /** Deadline of the connection's release. */
  readonly timeout?: Duration.Input | undefined
  /**
   * Destroy the connection at release instead of closing it gracefully (a
   * connection blocked in a read cannot finish its last command). Default
   * `false`: `close()`, destroyed if it does not finish within 2 seconds.
   */
  readonly destroy?: boolean | undefined
}

/** Where connecting stands: what the `error` listener records, and the deadline's message reads. */
interface ConnectState {
  readonly name: string
  readonly connectTimeoutMs: number
  connected: boolean
  attempts: number
  lastError: string | undefined
}

/**
 * Logs the connection's errors: each failed attempt while connecting
 * (recorded for the deadline's error), each error once it is up. A client
 * with no `error` listener would crash the process on the first one.
 */
const watchErrors = (
  connection: Connection,
  state: ConnectState,
  runFork: <A, E>(effect: Effect.Effect<A, E>) => unknown
): void => {
  connection.on("error", (error) => {
    const reason = reasonOf(error)
    if (state.connected) {
      // node-redis reconnects by itself; say so once per error.
      runFork(Effect.logWarning(`${state.name}: Redis connection error`, reason))
      return
    }
    state.attempts++
    state.lastError = reason
    runFork(
      Effect.logWarning(`${state.name}: cannot connect to Redis (attempt ${state.attempts}): ${reason}; retrying`)
    )
  })
}

/** Connects within `connectTimeoutMs`; a failure, the deadline or an interrupt destroys the connection. */
const openConnection = (connection: Connection, state: ConnectState): Effect.Effect<void, RedisConnectError> =>
  Effect.callback<void, RedisConnectError>((resume) => {
    let abandoned = false
    connection.connect().then(
      () => {
        state.connected = true
        if (!abandoned) resume(Effect.void)
      },
      (error: unknown) => {
        if (!abandoned) resume(Effect.fail(new RedisConnectError({ resource: state.name, reason: reasonOf(error) })))
      }
    )
    return Effect.sync(() => {
      abandoned = true
    })
  }).pipe(
    Effect.timeoutOrElse({
      duration: state.connectTimeoutMs,
      orElse: () =>
        Effect.fail(
          new RedisConnectError({
            resource: state.name,
            reason: `no connection within ${state.connectTimeoutMs} ms` +
              (state.lastError === undefined
                ? ""
                : ` (${state.attempts} failed attempts; last error: ${state.lastError})`)
          })
        )
    }),
    // Failed, timed out or interrupted: stop node-redis' retries.
    Effect.onExit((exit) => Exit.isSuccess(exit) ? Effect.void : Effect.sync(() => destroyQuietly(connection)))
  )

/** Closes the connection at release: destroyed at once, or closed gracefully and destroyed if that fails or hangs. */
const releaseConnection = (connection: Connection, destroy: boolean): Effect.Effect<void> =>
  destroy
    ? Effect.sync(() => connection.destroy())
    : Effect.tryPromise(() => connection.close()).pipe(
      // a close that cannot finish (the server is gone) must not hang the release
      Effect.timeoutOrElse({ duration: "2 seconds", orElse: () => Effect.sync(() => connection.destroy()) }),
      Effect.asVoid,
      Effect.catch(() => Effect.sync(() => connection.destroy()))
    )

/**
 * Opens `connection` as a managed resource: connected now, closed at
 * Releasing, in reverse acquisition order with everything else.
 *
 * Connecting is bounded by `connectTimeout`, logs each failed attempt
 * (node-redis keeps retrying by itself), and can be interrupted at any
 * moment: a signal during start-up stops it at once (the connection is
 * destroyed). Errors after the connection is up are logged too: a client
 * with no `error` listener would crash the process on the first one.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Graceful } from "effect-graceful"
 * import * as Redis from "effect-graceful/Redis"
 * import { createClient } from "redis"
 *
 * const program = Effect.gen(function*() {
 *   const client = yield* Redis.connect(createClient({ url: process.env.REDIS_URL ?? "redis://127.0.0.1:6379" }), {
 *     name: "cache",
 *     connectTimeout: "5 seconds",
 *     timeout: "2 seconds"
 *   })
 *   yield* Effect.promise(() => client.set("started", String(process.pid)))
 *   return yield* Effect.never
 * })
 *
 * Effect.runFork(Graceful.run(program))
 * ```
 *
 * @category constructors
 * @since 0.2.0
 */
export const connect = <C extends Connection>(
  connection: C,
  options: ConnectOptions = {}
): Effect.Effect<C, RedisConnectError, Lifecycle.Lifecycle | Scope.Scope> =>
  Effect.gen(function*() {
    const name = options.name ?? "redis"
    const state: ConnectState = {
      name,
      connectTimeoutMs: Math.max(1, millisOr(options.connectTimeout, DEFAULT_CONNECT_TIMEOUT)),
      connected: false,
      attempts: 0,
      lastError: undefined
    }
    watchErrors(connection, state, Effect.runForkWith(yield* Effect.context<never>()))
    // Connected outside the resource's acquisition, which is not
    // interruptible; registered as a resource the moment it is up.
    return yield* Effect.uninterruptibleMask((restore) =>
      restore(openConnection(connection, state)).pipe(
        Effect.andThen(Resource.make(
          name,
          Effect.succeed(connection),
          (connection) => releaseConnection(connection, options.destroy === true),
          { timeout: options.timeout }
        ))
      )
    )
  })

// -----------------------------------------------------------------------------
// pub/sub
// -----------------------------------------------------------------------------

/**
 * One pub/sub message: the channel it came on, its payload, and the pattern
 * that matched it (for pattern subscriptions).
 *
 * @category models
 * @since 0.1.0
 */
export interface Message {
  readonly channel: string
  readonly message: string
  readonly pattern: string | undefined
}

/**
 * Options of {@link subscribe}.
 *
 * @category models
 * @since 0.1.0
 */
export interface SubscribeOptions<R> {
  /** The client to duplicate the subscriber connection from. */
  readonly client: PubSubClient
  readonly channels?: ReadonlyArray<string> | undefined
  readonly patterns?: ReadonlyArray<string> | undefined
  /** Runs for each message, as tracked work. A failure is logged and counted. */
  readonly handler: (message: Message) => Effect.Effect<unknown, unknown, R>
  /** Names the connection, the hook and the release. Default `redis subscriber`. */
  readonly name?: string | undefined
  /** Deadline of the connection's release. */
  readonly timeout?: Duration.Input | undefined
  /** How long connecting may take, retries included (see {@link connect}). Default 10 seconds. */
  readonly connectTimeout?: Duration.Input | undefined
}

/**
 * Counters of a subscription: messages received, handled (successfully),
 * failed, and dropped (arrived after Closing).
 *
 * @category models
 * @since 0.1.0
 */
export interface SubscriptionStats extends Adapter.SubscriptionStats {}

/**
 * A running subscription.
 *
 * @category models
 * @since 0.1.0
 */
export interface Subscription {
  readonly stats: Effect.Effect<SubscriptionStats>
  /** Stop taking messages now (the Closing hook does this by itself). */
  readonly unsubscribe: Effect.Effect<void, RedisCommandError>
  /** Whether messages still start handlers. */
  readonly isSubscribed: () => boolean
}

/** What the parts of a running subscription share. */
interface SubscriptionState<R> {
  readonly name: string
  readonly handler: SubscribeOptions<R>["handler"]
  readonly lifecycle: Lifecycle.LifecycleService
  readonly inFlight: InFlightSet
  readonly connection: PubSubConnection
  readonly channels: ReadonlyArray<string>
  readonly patterns: ReadonlyArray<string>
  /** Starts a handler's fiber, synchronously, in the subscription's scope. */
  readonly run: (effect: Effect.Effect<void, never, R>) => unknown
  readonly stats: { received: number; handled: number; failed: number; dropped: number; running: number }
  subscribed: boolean
}

/** One message's handler, counted and logged however it ends. */
const handleMessage = <R>(state: SubscriptionState<R>, message: Message): Effect.Effect<void, never, R> => {
  const { name, stats } = state
  return state.handler(message).pipe(
    Effect.matchCauseEffect({
      onSuccess: () => Effect.sync(() => void stats.handled++),
      onFailure: (cause) =>
        Effect.sync(() => void stats.failed++).pipe(
          Effect.andThen(
            Cause.hasInterruptsOnly(cause)
              ? Effect.void
              : Effect.logError(`${name}: handler failed for a message on ${message.channel}`, Cause.pretty(cause))
          )
        )
    }),
    Effect.ensuring(Effect.sync(() => void stats.running--))
  )
}

const onMessage = <R>(state: SubscriptionState<R>, message: string, channel: string, pattern: string | undefined) => {
  const { stats } = state
  stats.received++
  // Checked on every message, not only by the hook: once the program is
  // Closing, no handler starts, even before the hook has run.
  if (!state.subscribed || Lifecycle.isAtLeast(state.lifecycle.phaseUnsafe(), "Closing")) {
    stats.dropped++
    return
  }
  stats.running++
  // `run` starts the fiber synchronously, so the work is in the
  // in-flight set before this callback returns.
  state.run(state.inFlight.track(
    handleMessage(state, { channel, message, pattern }),
    { kind: "message", label: pattern === undefined ? channel : `${pattern} (${channel})` }
  ))
}

const subscribeAll = <R>(state: SubscriptionState<R>): Effect.Effect<void, RedisCommandError> =>
  Effect.gen(function*() {
    const { channels, connection, name } = state
    if (channels.length > 0) {
      yield* command(
        name,
        "SUBSCRIBE",
        () => connection.subscribe([...channels], (message, channel) => onMessage(state, message, channel, undefined))
      )
    }
    for (const pattern of state.patterns) {
      yield* command(
        name,
        "PSUBSCRIBE",
        () => connection.pSubscribe(pattern, (message, channel) => onMessage(state, message, channel, pattern))
      )
    }
  })

/** Stops taking messages; does nothing the second time. */
const unsubscribeAll = <R>(state: SubscriptionState<R>): Effect.Effect<void, RedisCommandError> =>
  Effect.suspend(() => {
    if (!state.subscribed) return Effect.void
    state.subscribed = false
    const { connection, name } = state
    return Effect.all([
      state.channels.length > 0 ? command(name, "UNSUBSCRIBE", () => connection.unsubscribe()) : Effect.void,
      state.patterns.length > 0 ? command(name, "PUNSUBSCRIBE", () => connection.pUnsubscribe()) : Effect.void
    ], { discard: true })
  })

/**
 * Subscribes to channels and/or patterns on a dedicated connection, and runs
 * `handler` for each message as tracked work. Stops at Closing; the
 * connection is released at Releasing. See the module docs.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Graceful } from "effect-graceful"
 * import * as Redis from "effect-graceful/Redis"
 * import { createClient } from "redis"
 *
 * const client = createClient({ url: process.env.REDIS_URL ?? "redis://localhost:6379" })
 *
 * const program = Effect.gen(function*() {
 *   yield* Redis.subscribe({
 *     client,
 *     channels: ["cache-invalidation"],
 *     handler: ({ message }) => Effect.log(`invalidate ${message}`)
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
): Effect.Effect<
  Subscription,
  RedisConnectError | RedisCommandError,
  R | Lifecycle.Lifecycle | InFlight | Scope.Scope
> =>
  Effect.gen(function*() {
    const name = options.name ?? "redis subscriber"
    const lifecycle = yield* Lifecycle.Lifecycle
    const inFlight = yield* InFlight
    const connection = yield* connect(options.client.duplicate(), {
      name,
      timeout: options.timeout,
      connectTimeout: options.connectTimeout
    })
    const state: SubscriptionState<R> = {
      name,
      handler: options.handler,
      lifecycle,
      inFlight,
      connection,
      channels: [...(options.channels ?? [])],
      patterns: [...(options.patterns ?? [])],
      // Handlers run in fibers of this scope; by the time it closes, the
      // drain has waited for them (or cut them).
      run: yield* FiberSet.makeRuntime<R>(),
      stats: { received: 0, handled: 0, failed: 0, dropped: 0, running: 0 },
      subscribed: true
    }
    yield* subscribeAll(state)
    const unsubscribe = unsubscribeAll(state)
    yield* Lifecycle.addHook(`${name}: unsubscribe`, "Closing", unsubscribe)

    return {
      stats: Effect.sync(() => ({ ...state.stats })),
      unsubscribe,
      isSubscribed: () => state.subscribed
    }
  })

// -----------------------------------------------------------------------------
// Streams
// -----------------------------------------------------------------------------

/**
 * One stream entry: its stream, its id and its fields.
 *
 * @category models
 * @since 0.1.0
 */
export interface StreamEntry {
  readonly stream: string
  readonly id: string
  readonly fields: Readonly<Record<string, string>>
}

/**
 * Options of {@link consume}.
 *
 * @category models
 * @since 0.1.0
 */
export interface ConsumeOptions<R> {
  /** The client to duplicate the two consumer connections from. */
  readonly client: StreamsClient
  readonly stream: string
  readonly group: string
  /**
   * This consumer's name in the group. Default: host, pid and a random
   * suffix. A stable name (a pod name) lets a restarted process retry its
   * own pending entries at once instead of after `claimIdle`.
   */
  readonly consumer?: string | undefined
  /** Processes one entry. It is acknowledged only if this succeeds. */
  readonly handler: (entry: StreamEntry) => Effect.Effect<unknown, unknown, R>
  /** How many entries are processed at once. Default 1. */
  readonly concurrency?: number | undefined
  /** Longest wait of one `XREADGROUP ... BLOCK`. Default 2 seconds. */
  readonly block?: Duration.Input | undefined
  /**
   * How long an entry must have been pending (delivered, not acknowledged)
   * before `XAUTOCLAIM` takes it from its consumer. Longer than your longest
   * job, or a slow job is run twice. Default 60 seconds.
   */
  readonly claimIdle?: Duration.Input | undefined
  /** How often to look for stale entries. Default: half of `claimIdle`. */
  readonly claimEvery?: Duration.Input | undefined
  /**
   * Create the group if it does not exist (with `MKSTREAM`), reading from
   * `"0"` (the whole stream, default) or `"$"` (new entries only); `false`:
   * the group must exist.
   */
  readonly createGroup?: "0" | "$" | false | undefined
  /** Names the connections, the hook and the releases. Default `redis stream <stream>`. */
  readonly name?: string | undefined
  /**
   * Called once per acknowledgement, uninterruptibly, after `XACK`:
   * `acknowledged` is `false` if the entry had already been acknowledged
   * (another consumer reclaimed and finished it first).
   */
  readonly onAck?: ((entry: StreamEntry, acknowledged: boolean) => Effect.Effect<void, never, R>) | undefined
  /** Deadline of each connection's release. */
  readonly timeout?: Duration.Input | undefined
  /** How long connecting may take, retries included (see {@link connect}). Default 10 seconds. */
  readonly connectTimeout?: Duration.Input | undefined
}

/**
 * Counters of a Streams consumer: the worker's, plus entries reclaimed from
 * other consumers and acknowledgements that found the entry already
 * acknowledged.
 *
 * @category models
 * @since 0.1.0
 */
export interface ConsumerStats extends Worker.WorkerStats {
  readonly reclaimed: number
  readonly alreadyAcknowledged: number
}

/**
 * A running Streams consumer.
 *
 * @category models
 * @since 0.1.0
 */
export interface Consumer {
  /** Its name in the group. */
  readonly consumer: string
  readonly stats: Effect.Effect<ConsumerStats>
  /** Stop reading now (the Closing hook does this by itself). */
  readonly stop: Effect.Effect<void>
}

/** Reads node-redis' (RESP2 and RESP3) stream replies into entries; skips deleted ones. */
const entriesOf = (
  stream: string,
  reply: unknown
): { entries: Array<StreamEntry>; deleted: Array<string>; last: string | undefined } => {
  const entries: Array<StreamEntry> = []
  const deleted: Array<string> = []
  // The last id in reply order, live or deleted: where the next page starts.
  let last: string | undefined
  const add = (message: unknown) => {
    if (typeof message !== "object" || message === null || !("id" in message)) return
    const id = String(message.id)
    last = id
    const fields = "message" in message ? message.message : null
    if (typeof fields !== "object" || fields === null) {
      deleted.push(id)
      return
    }
    const record: Record<string, string> = {}
    for (const [key, value] of Object.entries(fields)) record[key] = String(value)
    entries.push({ stream, id, fields: record })
  }
  if (Array.isArray(reply)) {
    // XREADGROUP: [{ name, messages: [...] }]
    for (const item of reply) {
      if (typeof item === "object" && item !== null && "messages" in item && Array.isArray(item.messages)) {
        for (const message of item.messages) add(message)
      }
    }
  } else if (typeof reply === "object" && reply !== null && "messages" in reply && Array.isArray(reply.messages)) {
    // XAUTOCLAIM: { nextId, messages, deletedMessages }
    for (const message of reply.messages) add(message)
  }
  return { entries, deleted, last }
}

const nextIdOf = (reply: unknown): string =>
  typeof reply === "object" && reply !== null && "nextId" in reply ? String(reply.nextId) : "0-0"

/** What the parts of a running Streams consumer share. */
interface ConsumerState<R> {
  readonly name: string
  readonly stream: string
  readonly group: string
  readonly consumer: string
  readonly concurrency: number
  readonly blockMs: number
  readonly claimIdleMs: number
  readonly claimEveryMs: number
  readonly onAck: ConsumeOptions<R>["onAck"]
  /** Acknowledges and reclaims; never blocks. */
  readonly commands: StreamsConnection
  /** Reads with `XREADGROUP ... BLOCK`. */
  readonly reader: StreamsConnection
  /** Read through Effect's clock, so TestClock drives the reclaim schedule. */
  readonly clock: Clock.Clock
  /** Creates the group if asked to (also after a NOGROUP: the stream was deleted). */
  readonly ensureGroup: Effect.Effect<unknown, RedisCommandError>
  readonly counters: { reclaimed: number; alreadyAcknowledged: number }
  /** Entries read and not yet taken by the worker. */
  readonly buffer: Array<StreamEntry>
  /** Entries buffered or being processed: a reclaim must not start them twice. */
  readonly mine: Set<string>
  /** Where re-reading this consumer's own pending entries stands; `undefined` once done. */
  ownCursor: string | undefined
  claimCursor: string
  nextClaimAt: number
  reading: Promise<void> | undefined
}

const ensureGroupOf = <R>(
  name: string,
  commands: StreamsConnection,
  options: ConsumeOptions<R>
): Effect.Effect<unknown, RedisCommandError> => {
  const createAt = options.createGroup ?? "0"
  return createAt === false ? Effect.void : command(
    name,
    "XGROUP CREATE",
    () =>
      commands.xGroupCreate(options.stream, options.group, createAt, { MKSTREAM: true }).catch((error: unknown) => {
        if (reasonOf(error).startsWith("BUSYGROUP")) return "exists"
        throw error
      })
  )
}

/** Buffers the entries not already buffered or in progress; returns how many. */
const accept = <R>(state: ConsumerState<R>, entries: ReadonlyArray<StreamEntry>): number => {
  let added = 0
  for (const entry of entries) {
    if (state.mine.has(entry.id)) continue
    state.mine.add(entry.id)
    state.buffer.push(entry)
    added++
  }
  return added
}

const acknowledge = <R>(state: ConsumerState<R>, id: string): Promise<number> =>
  state.commands.xAck(state.stream, state.group, id)

/** One round trip: own pending entries, else stale entries, else new ones. */
const readOnce = async <R>(state: ConsumerState<R>): Promise<void> => {
  const { clock, concurrency, consumer, group, reader, stream } = state
  if (state.ownCursor !== undefined) {
    const reply = await reader.xReadGroup(group, consumer, { key: stream, id: state.ownCursor }, { COUNT: concurrency })
    const { deleted, entries, last } = entriesOf(stream, reply)
    for (const id of deleted) await acknowledge(state, id)
    state.ownCursor = last
    accept(state, entries)
    return
  }
  if (clock.currentTimeMillisUnsafe() >= state.nextClaimAt) {
    const reply = await state.commands.xAutoClaim(stream, group, consumer, state.claimIdleMs, state.claimCursor, {
      COUNT: concurrency
    })
    state.claimCursor = nextIdOf(reply)
    if (state.claimCursor === "0-0") state.nextClaimAt = clock.currentTimeMillisUnsafe() + state.claimEveryMs
    state.counters.reclaimed += accept(state, entriesOf(stream, reply).entries)
    return
  }
  const block = Math.max(1, Math.min(state.blockMs, state.nextClaimAt - clock.currentTimeMillisUnsafe()))
  const reply = await reader.xReadGroup(group, consumer, { key: stream, id: ">" }, { COUNT: concurrency, BLOCK: block })
  accept(state, entriesOf(stream, reply).entries)
}

// The read runs to its end even if the worker stops waiting for it, so
// entries Redis delivered are never dropped on the floor here (if the
// worker has stopped, they stay pending and are reclaimed).
const startRead = <R>(state: ConsumerState<R>): Promise<void> => {
  state.reading ??= readOnce(state).finally(() => {
    state.reading = undefined
  })
  return state.reading
}

/** The worker's `take`: the next buffered entry, reading when the buffer is empty. */
const takeEntry = <R>(state: ConsumerState<R>): Effect.Effect<StreamEntry, RedisCommandError> => {
  const take: Effect.Effect<StreamEntry, RedisCommandError> = Effect.suspend(() => {
    const next = state.buffer.shift()
    if (next !== undefined) return Effect.succeed(next)
    return Effect.callback<void, RedisCommandError>((resume) => {
      startRead(state).then(
        () => resume(Effect.void),
        (error: unknown) =>
          resume(
            Effect.fail(new RedisCommandError({ resource: state.name, command: "XREADGROUP", reason: reasonOf(error) }))
          )
      )
    }).pipe(
      Effect.tapError((error) =>
        error.reason.startsWith("NOGROUP") ? state.ensureGroup.pipe(Effect.ignore) : Effect.void
      ),
      Effect.andThen(take)
    )
  })
  return take
}

/** The worker's `ack`: `XACK`, then `onAck`; an entry someone else acknowledged first is counted and logged. */
const ackEntry = <R>(state: ConsumerState<R>, entry: StreamEntry): Effect.Effect<void, RedisCommandError, R> =>
  command(state.name, "XACK", () => acknowledge(state, entry.id)).pipe(
    Effect.ensuring(Effect.sync(() => void state.mine.delete(entry.id))),
    Effect.flatMap((count) =>
      Effect.gen(function*() {
        const acknowledged = count === 1
        if (!acknowledged) {
          state.counters.alreadyAcknowledged++
          yield* Effect.logWarning(
            `${state.name}: ${entry.id} was already acknowledged (another consumer reclaimed and finished it)`
          )
        }
        if (state.onAck !== undefined) yield* state.onAck(entry, acknowledged)
      })
    )
  )

/**
 * Starts a consumer in a Streams consumer group (see the module docs): it
 * reads until Closing, processes up to `concurrency` entries at once as
 * tracked jobs, acknowledges each success once, and leaves failed or cut
 * entries pending for a retry. Reclaims stale pending entries on start and
 * every `claimEvery`.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Graceful } from "effect-graceful"
 * import * as Redis from "effect-graceful/Redis"
 * import { createClient } from "redis"
 *
 * const client = createClient({ url: process.env.REDIS_URL ?? "redis://localhost:6379" })
 *
 * const program = Effect.gen(function*() {
 *   yield* Redis.consume({
 *     client,
 *     stream: "emails",
 *     group: "mailers",
 *     consumer: process.env.POD_NAME,
 *     concurrency: 8,
 *     claimIdle: "5 minutes",
 *     handler: (entry) => sendEmail(entry.fields.to!, entry.fields.body!)
 *   })
 *   return yield* Effect.never
 * })
 *
 * declare const sendEmail: (to: string, body: string) => Effect.Effect<void, Error>
 *
 * Effect.runFork(Graceful.run(program))
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const consume = <R>(
  options: ConsumeOptions<R>
): Effect.Effect<Consumer, RedisConnectError | RedisCommandError, R | Lifecycle.Lifecycle | InFlight | Scope.Scope> =>
  Effect.gen(function*() {
    const name = options.name ?? `redis stream ${options.stream}`
    const claimIdleMs = millisOr(options.claimIdle, DEFAULT_CLAIM_IDLE)
    // Released in reverse: the blocking reader first (destroyed: its last
    // read cannot finish), then the connection that acknowledges.
    const commands = yield* connect(options.client.duplicate(), {
      name: `${name} (commands)`,
      timeout: options.timeout,
      connectTimeout: options.connectTimeout
    })
    const reader = yield* connect(options.client.duplicate(), {
      name: `${name} (reader)`,
      destroy: true,
      timeout: options.timeout,
      connectTimeout: options.connectTimeout
    })
    const state: ConsumerState<R> = {
      name,
      stream: options.stream,
      group: options.group,
      consumer: options.consumer ?? `${hostname()}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`,
      concurrency: Math.max(1, Math.floor(options.concurrency ?? 1)),
      blockMs: Math.max(1, millisOr(options.block, DEFAULT_BLOCK)),
      claimIdleMs,
      claimEveryMs: Math.max(10, millisOr(options.claimEvery, Duration.millis(claimIdleMs / 2))),
      onAck: options.onAck,
      commands,
      reader,
      clock: yield* Clock.Clock,
      ensureGroup: ensureGroupOf(name, commands, options),
      counters: { reclaimed: 0, alreadyAcknowledged: 0 },
      buffer: [],
      mine: new Set(),
      ownCursor: "0",
      claimCursor: "0-0",
      nextClaimAt: 0,
      reading: undefined
    }
    yield* state.ensureGroup

    const worker = yield* Worker.make({
      name,
      concurrency: state.concurrency,
      take: takeEntry(state),
      process: options.handler,
      label: (entry: StreamEntry) => entry.id,
      ack: (entry: StreamEntry) => ackEntry(state, entry),
      // Must-retry: the entry stays in the pending list, un-acknowledged.
      nack: (entry: StreamEntry) => Effect.sync(() => void state.mine.delete(entry.id))
    })

    return {
      consumer: state.consumer,
      stats: Effect.map(worker.stats, (stats) => ({ ...stats, ...state.counters })),
      stop: worker.stop
    }
  })
