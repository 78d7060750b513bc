/**
 * Effect Cluster runners (`effect/cluster`, runner and message storage in
 * SQL) under the lifecycle.
 *
 * A runner's sharding layer closes its scope on its own clocks: entities get
 * `entityTerminationTimeout` (15 s by default), the handoff force-stops the
 * entities whatever they are doing, nothing bounds the whole, nothing is
 * reported, readiness does not move. {@link layer} runs the sharding layer
 * as one named, budgeted step of the shutdown:
 *
 * 1. **Start-up**: the layer is built only once the runner has registered in
 *    the runner storage (the lifecycle stays Starting, readiness 503, until
 *    then), and a readiness check follows the registration.
 * 2. **Draining, Closing**: readiness 503 (what Kubernetes runner health
 *    reads), HTTP and other in-flight work drain while the entities keep
 *    serving: entity calls made by draining requests are answered.
 * 3. **Releasing**, in reverse acquisition order, within its slice
 *    (`timeout`): callers waiting on this runner for a persisted reply are
 *    sent to read it from storage, and so is every later one (the runner
 *    serves nothing new); entity handlers wrapped with {@link handler} stop
 *    starting and the ones running finish (the quiesce); then the sharding
 *    scope closes: the runner unregisters and hands its shards off; entities
 *    still resident are stopped. The SQL client, acquired before, closes
 *    after.
 * 4. **Report**: the handoff (shards held and released, entities active,
 *    terminated, handlers cut, persisted messages left for the next owner)
 *    is logged as one `cluster handoff` line and given to `onHandoff`;
 *    handlers cut at the slice's deadline are cut items of the report. The
 *    release itself is a line of the report's `releases`.
 *
 * Why the handoff waits for the drain, and for the handlers: a handler
 * interrupted by the handoff leaves the caller with an interrupt, which the
 * caller turns into a stored `Interrupt` envelope; the next owner replays
 * the request, applies the interrupt, and stores `Failure(Interrupt)` as its
 * reply: the message counts as processed and never runs. Handing off at
 * Closing would do that to every call the draining requests still make.
 * For the same reason a caller waiting on this runner is never answered
 * with an interrupt once the handoff starts (Effect's own shutdown would):
 * see the notes on the reply waiters in the source.
 *
 * @since 0.2.0
 */
import * as Clock from "effect/Clock"
import { EntityNotAssignedToRunner } from "effect/cluster/ClusterError"
import * as ClusterMetrics from "effect/cluster/ClusterMetrics"
import { MessageStorage } from "effect/cluster/MessageStorage"
import { RunnerAddress } from "effect/cluster/RunnerAddress"
import * as ShardId from "effect/cluster/ShardId"
import { Sharding } from "effect/cluster/Sharding"
import type * as ShardingConfig from "effect/cluster/ShardingConfig"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Latch from "effect/Latch"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import * as SqlClient from "effect/sql/SqlClient"
import * as Adapter from "../Adapter.ts"
import * as Health from "../Health.ts"
import type { InFlight } from "../InFlight.ts"
import * as Lifecycle from "../Lifecycle.ts"
import * as PlatformCheck from "../PlatformCheck.ts"
import * as Report from "../Report.ts"
import * as ShutdownConfig from "../ShutdownConfig.ts"

/**
 * Where a runner listens for other runners.
 *
 * @category models
 * @since 0.2.0
 */
export interface RunnerAddressInput {
  readonly host: string
  readonly port: number
}

/**
 * The part of `ShardingConfig` this module reads, with the runner's address
 * required. Passed to the layer builder of {@link layer} with
 * `entityTerminationTimeout` replaced by the slice's share.
 *
 * @category models
 * @since 0.2.0
 */
export type ClusterConfig = Partial<Omit<ShardingConfig.ShardingConfig["Service"], "runnerAddress">>

/**
 * What the handoff did, logged as `cluster handoff` and given to
 * {@link Options.onHandoff}.
 *
 * @category models
 * @since 0.2.0
 */
export interface Handoff {
  /** Shards this runner held when the handoff started. */
  readonly shardsHeld: number
  /** Of those, released (no longer held, nor being released) when the scope had closed. */
  readonly shardsReleased: number
  /** Entities resident when the handoff started. */
  readonly entitiesActive: number
  /** Entities stopped by the handoff. */
  readonly entitiesTerminated: number
  /** Handlers (wrapped with {@link handler}) running when the handoff started. */
  readonly handlersAtStart: number
  /** Handlers still running at the quiesce deadline: stopped by the handoff, and in the report's `cut`. */
  readonly handlersCut: number
  /** Unprocessed persisted messages on the released shards once the scope had closed: the next owner's. */
  readonly persistedLeft: number
  /** The quiesce, then the scope close, ms. */
  readonly quiesceMs: number
  readonly closeMs: number
}

/**
 * Options of {@link layer}.
 *
 * @category models
 * @since 0.2.0
 */
export interface Options {
  /** The address other runners reach this one at (also the runner storage's key). */
  readonly runnerAddress: RunnerAddressInput
  /**
   * The sharding configuration, also given to the layer builder, with one
   * default of this module's: `refreshAssignmentsInterval` 1 second (Effect's
   * is 3 seconds). It is how soon the other runners see a runner leave and
   * take its shards: measured in bench:cluster, a shard's longest gap at a
   * rolling restart was 3.1 s with 3 seconds and 0.94 s with 1 second, for
   * one read of the runner table a second per runner.
   */
  readonly shardingConfig?: ClusterConfig | undefined
  /** Names the release in logs and in the report. Default `cluster runner`. */
  readonly name?: string | undefined
  /** The handoff's slice of the budget: quiesce, then close. Default 20 seconds. */
  readonly timeout?: Duration.Input | undefined
  /** The runner storage's table prefix (`SqlRunnerStorage`'s `prefix`). Default `cluster`. */
  readonly storagePrefix?: string | undefined
  /** How long start-up waits for the runner to register. Default 30 seconds. */
  readonly registrationTimeout?: Duration.Input | undefined
  /**
   * When the shards are handed off. `"afterDrain"` (the default): in the
   * Releasing phase, after HTTP and other in-flight work have drained,
   * entities serving them meanwhile. `"atClosing"`: as the listeners close,
   * while the drain runs: calls that draining requests still make then fail
   * (measured in bench:cluster; kept for that comparison).
   */
  readonly handoff?: "afterDrain" | "atClosing" | undefined
  /** Called with what the handoff did, after the scope has closed. */
  readonly onHandoff?: ((handoff: Handoff) => Effect.Effect<void>) | undefined
}

/**
 * How the slice is split: the quiesce gets half of it, the scope close the
 * rest, and entity termination (what the cluster waits for a stopping entity
 * when it is not forced) at most the close's share.
 *
 * @category models
 * @since 0.2.0
 */
export interface Slice {
  readonly total: Duration.Duration
  readonly quiesce: Duration.Duration
  readonly close: Duration.Duration
  readonly entityTerminationTimeout: Duration.Duration
}

const DEFAULT_TIMEOUT = Duration.seconds(20)

/** See {@link Options.shardingConfig}. */
const DEFAULT_REFRESH_ASSIGNMENTS = Duration.seconds(1)

/**
 * Splits a handoff slice (see {@link Slice}).
 *
 * @example
 * ```ts
 * import { Duration } from "effect"
 * import * as Cluster from "effect-graceful/Cluster"
 *
 * const slice = Cluster.slice("20 seconds")
 * Duration.toMillis(slice.entityTerminationTimeout) // 10000
 * ```
 *
 * @category utils
 * @since 0.2.0
 */
export const slice = (timeout: Duration.Input | undefined): Slice => {
  const total = timeout === undefined ? DEFAULT_TIMEOUT : Duration.fromInputUnsafe(timeout)
  const totalMs = Duration.toMillis(total)
  const quiesce = Duration.millis(Math.floor(totalMs / 2))
  const close = Duration.millis(totalMs - Math.floor(totalMs / 2))
  return { total, quiesce, close, entityTerminationTimeout: close }
}

/**
 * What the start-up check compares: the shutdown budget, the handoff's
 * slice, the cluster's own timeouts, and the platforms' kill windows.
 *
 * @category models
 * @since 0.2.0
 */
export interface BudgetInput {
  readonly budget: Duration.Input
  readonly timeout?: Duration.Input | undefined
  readonly shardingConfig?: ClusterConfig | undefined
  readonly windows?: ReadonlyArray<PlatformCheck.KillWindow> | undefined
}

const millisOf = (input: Duration.Input | undefined, fallback: number): number =>
  input === undefined ? fallback : Duration.toMillis(Duration.fromInputUnsafe(input))

/**
 * The start-up budget check of a runner: one warning per cluster timeout
 * that cannot fit. {@link layer} runs it when it is built (with the budget
 * from `ShutdownConfig.load()` and the windows from
 * `PlatformCheck.detect`), and logs each warning; call it yourself to check
 * a configuration in a test.
 *
 * - the slice must fit in the budget;
 * - the handoff waits for the shard locks' release up to the lock refresh
 *   interval (`shardLockRefreshInterval`, 10 s by default): that must fit in
 *   the close's share of the slice;
 * - a runner killed before its handoff keeps its shards until the locks
 *   expire (`shardLockExpiration`, 35 s by default): when a platform's kill
 *   window cannot fit the budget, that is what a deploy will cost.
 *
 * @example
 * ```ts
 * import * as Cluster from "effect-graceful/Cluster"
 *
 * const warnings = Cluster.checkBudget({ budget: "25 seconds", timeout: "30 seconds" })
 * // [ "the cluster handoff's slice (30000 ms) is longer than the shutdown budget (25000 ms) ..." ]
 * ```
 *
 * @category utils
 * @since 0.2.0
 */
export const checkBudget = (input: BudgetInput): ReadonlyArray<string> => {
  const warnings: Array<string> = []
  const budgetMs = millisOf(input.budget, 25_000)
  const parts = slice(input.timeout)
  const sliceMs = Duration.toMillis(parts.total)
  const closeMs = Duration.toMillis(parts.close)
  const refreshMs = millisOf(input.shardingConfig?.shardLockRefreshInterval, 10_000)
  const expirationMs = millisOf(input.shardingConfig?.shardLockExpiration, 35_000)
  if (sliceMs > budgetMs) {
    warnings.push(
      `the cluster handoff's slice (${sliceMs} ms) is longer than the shutdown budget (${budgetMs} ms): ` +
        `the budget cuts it; set the Cluster timeout to at most ${budgetMs} ms or raise SHUTDOWN_TIMEOUT`
    )
  }
  if (refreshMs > closeMs) {
    warnings.push(
      `the handoff waits up to shardLockRefreshInterval (${refreshMs} ms) for the shard locks' release, ` +
        `longer than the close's share of the slice (${closeMs} ms): locks not released by then expire only after ` +
        `shardLockExpiration (${expirationMs} ms); raise the Cluster timeout to ${
          2 * refreshMs
        } ms or lower shardLockRefreshInterval`
    )
  }
  for (const finding of PlatformCheck.evaluate(budgetMs, input.windows ?? [])) {
    if (finding.fits) continue
    warnings.push(
      `${finding.platform} kills the runner ${finding.windowMs} ms after its stop signal, before the shutdown budget ` +
        `(${budgetMs} ms) ends: a runner killed before its handoff keeps its shards until shardLockExpiration ` +
        `(${expirationMs} ms)`
    )
  }
  return warnings
}

// -----------------------------------------------------------------------------
// The handler gate
// -----------------------------------------------------------------------------

/**
 * Counts the entity handlers running on this runner, and stops new ones from
 * starting once the handoff begins.
 *
 * @category models
 * @since 0.2.0
 */
export interface HandlerGateService {
  /** Handlers running now. */
  readonly running: () => number
  /** Whether handlers may start. */
  readonly isOpen: () => boolean
  /** Runs a handler: counted while it runs; once the gate is closed, it waits (never starts). */
  readonly run: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  /** Closes the gate; completes once no handler runs. */
  readonly quiesce: Effect.Effect<void>
  /** Interrupts the handlers still running (at the quiesce deadline). */
  readonly interruptRunning: Effect.Effect<void>
}

/**
 * The handler gate of the runner built by {@link layer}.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import * as Cluster from "effect-graceful/Cluster"
 *
 * const runningNow = Cluster.HandlerGate.use((gate) => Effect.succeed(gate.running()))
 * ```
 *
 * @category services
 * @since 0.2.0
 */
export class HandlerGate
  extends Context.Service<HandlerGate, HandlerGateService>()("effect-graceful/Cluster/HandlerGate")
{}

/**
 * A fresh handler gate.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import * as Cluster from "effect-graceful/Cluster"
 *
 * const program = Effect.gen(function*() {
 *   const gate = yield* Cluster.makeGate
 *   yield* gate.run(Effect.log("handled"))
 *   yield* gate.quiesce
 * })
 * ```
 *
 * @category constructors
 * @since 0.2.0
 */
export const makeGate: Effect.Effect<HandlerGateService> = Effect.sync(() => {
  const running = new Set<Fiber.Fiber<unknown, unknown>>()
  let open = true
  const idle = Latch.makeUnsafe(true)
  const never = Effect.never
  return {
    running: () => running.size,
    isOpen: () => open,
    run: <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
      Effect.withFiber((fiber) => {
        if (!open) return never
        running.add(fiber)
        idle.closeUnsafe()
        return Effect.ensuring(
          effect,
          Effect.sync(() => {
            running.delete(fiber)
            if (running.size === 0) idle.openUnsafe()
          })
        )
      }),
    quiesce: Effect.suspend(() => {
      open = false
      return idle.await
    }),
    interruptRunning: Effect.suspend(() => Fiber.interruptAll([...running]))
  }
})

/**
 * Wraps an entity handler: while the runner serves, it runs as is (counted);
 * once the handoff begins, new handlers wait and never start (their
 * messages stay for the next owner), and the handoff waits for the running
 * ones to finish instead of interrupting them. Without {@link layer} (no
 * gate provided), the handler runs as is.
 *
 * @example
 * ```ts
 * import { Effect, Schema } from "effect"
 * import { ClusterSchema, Entity } from "effect/cluster"
 * import { Rpc } from "effect/rpc"
 * import * as Cluster from "effect-graceful/Cluster"
 *
 * const Increment = Rpc.make("Increment", { payload: { key: Schema.String } })
 *   .annotate(ClusterSchema.Persisted, true)
 * const Counter = Entity.make("Counter", [Increment])
 *
 * const CounterLive = Counter.toLayer(Effect.succeed(Counter.of({
 *   Increment: ({ payload }) => Cluster.handler(Effect.log(`increment ${payload.key}`))
 * })))
 * ```
 *
 * @category combinators
 * @since 0.2.0
 */
export const handler = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.flatMap(
    Effect.serviceOption(HandlerGate),
    Option.match({ onNone: () => effect, onSome: (gate) => gate.run(effect) })
  )

// -----------------------------------------------------------------------------
// Reply waiters at the handoff
// -----------------------------------------------------------------------------

/**
 * Callers waiting on this runner for a persisted reply, once the handoff
 * starts: sent to read the reply from storage (`EntityNotAssignedToRunner`,
 * what a rebalance tells them), never answered with an interrupt.
 *
 * Why: a remote caller of a persisted request waits on the runner's
 * `RunnerServer`, parked on a reply handler of the runner's
 * `MessageStorage`. Effect 4.1.5 answers that wait with an interrupt when
 * the runner stops: its RPC server interrupts the requests in flight as it
 * closes, and `Sharding` unregisters the reply handlers of its shards with
 * `interrupt: true`. The caller's client takes the interrupt for its own
 * and stores an `Interrupt` envelope for the request; the next owner
 * replays the request with it and stores `Failure(Interrupt)` as the reply:
 * the message counts as processed and never runs. Measured on the
 * integration test under load: 3 of 2,970 persisted messages lost that way,
 * each sent as the first runner handed off.
 *
 * So when the handoff starts (the handler gate closes, this runner serves
 * nothing new), every reply handler of the runner's shards is unregistered
 * without interrupt, a new one is refused at once the same way, and the
 * shutdown's own unregistering no longer interrupts. The request itself
 * stays stored, unprocessed, for the next owner, whose reply the caller
 * reads from storage.
 *
 * `Sharding` and `RunnerServer` hold the storage service they were built
 * with, so its two methods are replaced in place on that shared object.
 */
interface ReplyWaiters {
  /** Sends the waiting callers of `shards` to storage, and every caller from now on. */
  readonly stopServing: (shards: ReadonlyArray<ShardId.ShardId>) => Effect.Effect<void>
}

const patchMethod = <K extends "registerReplyHandler" | "unregisterShardReplyHandlers">(
  storage: MessageStorage["Service"],
  key: K,
  value: MessageStorage["Service"][K]
): boolean => Reflect.defineProperty(storage, key, { value, writable: true, configurable: true, enumerable: true })

const replyWaiters = (storage: MessageStorage["Service"]): ReplyWaiters | undefined => {
  const register = storage.registerReplyHandler
  const unregisterShard = storage.unregisterShardReplyHandlers
  let serving = true
  const registerUnlessStopped: MessageStorage["Service"]["registerReplyHandler"] = (message) =>
    Effect.suspend(() =>
      serving ? register(message) : Effect.fail(new EntityNotAssignedToRunner({ address: message.envelope.address }))
    )
  const unregisterWithoutInterrupt: MessageStorage["Service"]["unregisterShardReplyHandlers"] = (shardId) =>
    unregisterShard(shardId)
  const patched = patchMethod(storage, "registerReplyHandler", registerUnlessStopped) &&
    patchMethod(storage, "unregisterShardReplyHandlers", unregisterWithoutInterrupt)
  if (!patched) return undefined
  return {
    stopServing: (shards) =>
      Effect.suspend(() => {
        serving = false
        return Effect.forEach(shards, (shardId) => unregisterShard(shardId), { discard: true })
      })
  }
}

// -----------------------------------------------------------------------------
// The layer
// -----------------------------------------------------------------------------

const heldShards = (sharding: Sharding["Service"], config: ClusterConfig): Array<ShardId.ShardId> => {
  const groups = config.assignedShardGroups ?? ["default"]
  const perGroup = config.shardsPerGroup ?? 300
  const held: Array<ShardId.ShardId> = []
  for (const group of groups) {
    for (let id = 1; id <= perGroup; id++) {
      const shardId = ShardId.make(group, id)
      if (sharding.hasShardId(shardId)) held.push(shardId)
    }
  }
  return held
}

const gaugeValue = (gauge: typeof ClusterMetrics.shards): Effect.Effect<number> =>
  Effect.map(Metric.value(gauge), (state) => Number(state.value))

const countPersistedLeft = (
  sql: SqlClient.SqlClient,
  prefix: string,
  shards: ReadonlyArray<ShardId.ShardId>
): Effect.Effect<number> =>
  shards.length === 0 ? Effect.succeed(0) : sql<{ readonly n: number | string }>`
    SELECT count(*) AS n FROM ${sql(`${prefix}_messages`)}
    WHERE processed = false AND shard_id IN ${sql.in(shards.map(String))}
  `.pipe(
    Effect.map((rows) => Number(rows[0]?.n ?? 0)),
    Effect.timeout(2_000),
    Effect.catchCause(() => Effect.succeed(-1))
  )

const isRegistered = (sql: SqlClient.SqlClient, prefix: string, address: string) =>
  sql<{ readonly healthy: boolean }>`
    SELECT healthy FROM ${sql(`${prefix}_runners`)} WHERE address = ${address}
  `.pipe(Effect.map((rows) => rows.length > 0))

/**
 * Runs a runner's sharding layer under the lifecycle (see the module
 * documentation): built once the runner has registered, released after the
 * drain within its slice of the budget, with the handlers' quiesce first
 * and the handoff reported.
 *
 * `make` builds the sharding layer from the sharding configuration it is
 * given: `options.shardingConfig` with the runner's address and
 * `entityTerminationTimeout` set from the slice. Provide the SQL client
 * below it (built first, so released after), itself managed
 * (`SqlPg.layerManaged`).
 *
 * @example
 * ```ts
 * import { NodeClusterSocket } from "@effect/platform-node"
 * import { Layer } from "effect"
 * import type { SqlClient } from "effect/sql/SqlClient"
 * import * as Cluster from "effect-graceful/Cluster"
 *
 * declare const SqlLive: Layer.Layer<SqlClient>
 *
 * const ShardingLive = Cluster.layer(
 *   (shardingConfig) => NodeClusterSocket.layer({ storage: "sql", shardingConfig }),
 *   { runnerAddress: { host: "127.0.0.1", port: 34431 }, timeout: "10 seconds" }
 * ).pipe(Layer.provideMerge(SqlLive))
 * ```
 *
 * @category layers
 * @since 0.2.0
 */
export const layer = <ROut, E, RIn>(
  make: (shardingConfig: Partial<ShardingConfig.ShardingConfig["Service"]>) => Layer.Layer<ROut | Sharding, E, RIn>,
  options: Options
): Layer.Layer<ROut | Sharding | HandlerGate, E | Error, RIn | Lifecycle.Lifecycle | InFlight | Health.Health> =>
  Layer.effectContext(Effect.gen(function*() {
    const name = options.name ?? "cluster runner"
    const prefix = options.storagePrefix ?? "cluster"
    const parts = slice(options.timeout)
    const config: ClusterConfig = options.shardingConfig ?? {}
    const address = `${options.runnerAddress.host}:${options.runnerAddress.port}`
    const shardingConfig = {
      refreshAssignmentsInterval: DEFAULT_REFRESH_ASSIGNMENTS,
      ...config,
      runnerAddress: Option.some(RunnerAddress.make(options.runnerAddress)),
      entityTerminationTimeout: parts.entityTerminationTimeout
    }

    // SQL runner storage: registration is read from its runners table.
    // Without a SQL client (in-memory storage), the runner counts as
    // registered once its layer is built.
    const sql = yield* Effect.serviceOption(SqlClient.SqlClient)
    const registry = yield* Adapter.releaseRegistry
    const inFlight = yield* Adapter.inFlightRegistry
    const gate = yield* makeGate

    // The start-up budget check: the budget as the program runs it, the
    // platforms' kill windows from the environment.
    const budget = yield* Effect.map(Effect.option(ShutdownConfig.load()), Option.map((c) => c.timeout))
    if (Option.isSome(budget)) {
      const warnings = checkBudget({
        budget: budget.value,
        timeout: parts.total,
        shardingConfig: config,
        windows: PlatformCheck.detect(process.env)
      })
      for (const warning of warnings) yield* Effect.logWarning(warning).pipe(Effect.annotateLogs({ release: name }))
    }

    const runRelease = yield* registry.register(name, { timeout: parts.total })
    const scope = yield* Scope.make()
    const context = yield* registry.acquire(
      name,
      Effect.gen(function*() {
        const context = yield* Layer.buildWithScope(
          Layer.provide(make(shardingConfig), Layer.succeed(HandlerGate, gate)),
          scope
        )
        // Not Ready until the runner has registered: other runners (and
        // Kubernetes runner health) see it only then.
        if (Option.isNone(sql)) return context
        yield* isRegistered(sql.value, prefix, address).pipe(
          Effect.catchCause(() => Effect.succeed(false)),
          Effect.repeat({ until: (registered) => registered, schedule: Schedule.spaced(100) }),
          Effect.timeoutOrElse({
            duration: Duration.fromInputUnsafe(options.registrationTimeout ?? Duration.seconds(30)),
            orElse: () =>
              Effect.fail(new Error(`cluster runner ${address} did not register within the registration timeout`))
          })
        )
        return context
      }).pipe(Effect.onExit((exit) => Exit.isFailure(exit) ? Scope.close(scope, exit) : Effect.void))
    )
    const sharding = Context.get(context, Sharding)
    const waiters = Option.flatMapNullishOr(Context.getOption(context, MessageStorage), replyWaiters)
    if (Option.isNone(waiters)) {
      yield* Effect.logWarning(
        "the runner's layer does not give its MessageStorage: at the handoff, callers waiting on this runner for a " +
          "persisted reply are interrupted, and a remote caller stores that interrupt for the next owner (the " +
          "message is then never run); output MessageStorage from the Cluster.layer builder"
      ).pipe(Effect.annotateLogs({ release: name }))
    }

    if (Option.isSome(sql)) {
      yield* Health.addCheck(
        "cluster",
        Effect.flatMap(
          isRegistered(sql.value, prefix, address),
          (registered) => registered ? Effect.void : Effect.fail(new Error("runner not registered"))
        )
      )
    }

    const handoff = Effect.gen(function*() {
      const startedAt = yield* Clock.currentTimeMillis
      const held = heldShards(sharding, config)
      const entitiesActive = yield* sharding.activeEntityCount
      const handlersAtStart = gate.running()
      // This runner serves nothing new from here: its callers read their
      // replies from storage (see ReplyWaiters).
      if (Option.isSome(waiters)) yield* waiters.value.stopServing(held)
      // Handlers stop starting; the running ones finish.
      const quiesced = yield* Effect.timeoutOption(gate.quiesce, parts.quiesce)
      const handlersCut = Option.isNone(quiesced) ? gate.running() : 0
      // Cut at the quiesce deadline: interrupted, so that the close does not
      // wait for them (persisted messages stay for the next owner).
      if (handlersCut > 0) yield* Effect.timeoutOption(gate.interruptRunning, parts.quiesce)
      for (let i = 0; i < handlersCut; i++) {
        inFlight.addUnsafe({
          kind: "cluster handler",
          label: `${name}: entity handler running at the quiesce deadline`,
          reportCut: true,
          startedAt,
          interrupt: () => {}
        })
      }
      const quiescedAt = yield* Clock.currentTimeMillis
      yield* Scope.close(scope, Exit.void)
      const closedAt = yield* Clock.currentTimeMillis
      const stillHeld = (yield* gaugeValue(ClusterMetrics.shards)) + (yield* gaugeValue(ClusterMetrics.shardsReleasing))
      const entitiesAfter = yield* Effect.orElseSucceed(sharding.activeEntityCount, () => 0)
      const report: Handoff = {
        shardsHeld: held.length,
        shardsReleased: Math.max(0, held.length - stillHeld),
        entitiesActive,
        entitiesTerminated: Math.max(0, entitiesActive - entitiesAfter),
        handlersAtStart,
        handlersCut,
        persistedLeft: Option.isSome(sql) ? yield* countPersistedLeft(sql.value, prefix, held) : 0,
        quiesceMs: quiescedAt - startedAt,
        closeMs: closedAt - quiescedAt
      }
      yield* Effect.logInfo("cluster handoff").pipe(Effect.annotateLogs({ release: name, ...report }))
      if (options.onHandoff !== undefined) yield* options.onHandoff(report)
      // The release's `detail` in the shutdown report.
      return Report.releaseSummary({ ...report })
    })

    // Runs once: at Closing (a hook) or in the Releasing phase (the release).
    let handedOff = false
    const handoffOnce = Effect.suspend((): Effect.Effect<Report.ReleaseSummary | void> => {
      if (handedOff) return Effect.void
      handedOff = true
      return handoff
    })
    if (options.handoff === "atClosing") yield* Lifecycle.addHook(`${name}: handoff`, "Closing", handoffOnce)
    yield* Effect.addFinalizer((exit) => runRelease(handoffOnce, exit))
    return Context.add(context, HandlerGate, gate)
  }))
