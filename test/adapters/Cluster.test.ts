import { describe, expect, it } from "@effect/vitest"
import { Context, Deferred, Duration, Effect, Exit, Fiber, Layer, Option, Schema } from "effect"
import type { ClusterError } from "effect/cluster"
import {
  Entity,
  EntityAddress,
  EntityId,
  EntityType,
  Envelope,
  Message,
  MessageStorage,
  RunnerHealth,
  Runners,
  RunnerStorage,
  Sharding,
  ShardingConfig,
  Snowflake
} from "effect/cluster"
import { Headers } from "effect/http"
import { Rpc } from "effect/rpc"
import { TestClock } from "effect/testing"
import * as Cluster from "../../src/adapters/Cluster.ts"
import { Graceful, InFlight, Resource } from "../../src/index.ts"
import * as GracefulTest from "../../src/testing.ts"
import { counted, settle } from "../support/run.ts"

const Work = Rpc.make("Work", { payload: { ms: Schema.Number }, success: Schema.Number })
const Worker = Entity.make("Worker", [Work])

/**
 * A real in-process runner (Effect's `Sharding` on in-memory runner and
 * message storage), its entity handlers wrapped with `Cluster.handler`;
 * `events` records what happened, in order.
 */
const makeRunner =
  (events: Array<string>, seen: Array<Partial<ShardingConfig.ShardingConfig["Service"]>>) =>
  (config: Partial<ShardingConfig.ShardingConfig["Service"]>) => {
    seen.push(config)
    const WorkerLive = Worker.toLayer(Effect.succeed(Worker.of({
      Work: ({ payload }) =>
        Cluster.handler(
          Effect.sleep(payload.ms).pipe(
            Effect.andThen(Effect.sync(() => events.push(`handler done (${payload.ms} ms)`))),
            Effect.as(payload.ms)
          )
        )
    })))
    const ShardingLive = Sharding.layer.pipe(
      Layer.provideMerge(Runners.layerNoop),
      Layer.provideMerge(MessageStorage.layerMemory),
      Layer.provide([RunnerStorage.layerMemory, RunnerHealth.layerNoop]),
      Layer.provide(ShardingConfig.layer(config))
    )
    return WorkerLive.pipe(
      Layer.provideMerge(ShardingLive),
      Layer.provideMerge(
        Layer.effectDiscard(Effect.addFinalizer(() => Effect.sync(() => events.push("sharding scope closed"))))
      )
    )
  }

describe("Cluster", () => {
  it("splits the handoff slice: half for the quiesce, the rest for the close and entity termination", () => {
    const parts = Cluster.slice("20 seconds")
    expect(Duration.toMillis(parts.quiesce)).toBe(10_000)
    expect(Duration.toMillis(parts.close)).toBe(10_000)
    expect(Duration.toMillis(parts.entityTerminationTimeout)).toBe(10_000)
    expect(Duration.toMillis(Cluster.slice(undefined).total)).toBe(20_000)
  })

  it("warns when the cluster's timeouts cannot fit the budget or the platform's kill window", () => {
    expect(Cluster.checkBudget({ budget: "25 seconds", timeout: "20 seconds" })).toEqual([])
    const warnings = Cluster.checkBudget({
      budget: "25 seconds",
      timeout: "30 seconds",
      shardingConfig: { shardLockRefreshInterval: "20 seconds" },
      windows: [{ platform: "kubernetes", windowMs: 20_000, preStopMs: 0, source: "test", assumed: false }]
    })
    expect(warnings).toHaveLength(3)
    expect(warnings[0]).toContain("longer than the shutdown budget (25000 ms)")
    expect(warnings[1]).toContain("shardLockRefreshInterval (20000 ms)")
    expect(warnings[2]).toContain("keeps its shards until shardLockExpiration (35000 ms)")
  })

  it.effect("entity termination gets its deadline from the slice; the runner's release has the slice as its deadline", () =>
    Effect.gen(function*() {
      const events: Array<string> = []
      const seen: Array<Partial<ShardingConfig.ShardingConfig["Service"]>> = []
      const fiber = yield* Layer.build(
        Cluster.layer(makeRunner(events, seen), {
          runnerAddress: { host: "127.0.0.1", port: 34431 },
          timeout: "12 seconds"
        })
      ).pipe(Effect.andThen(Effect.never), Graceful.run({ timeout: "25 seconds" }), counted, Effect.forkChild)
      yield* settle
      expect(seen).toHaveLength(1)
      expect(Duration.toMillis(Duration.fromInputUnsafe(seen[0]!.entityTerminationTimeout!))).toBe(6_000)
      // The other runners see this one leave within a second (Effect's default: 3).
      expect(Duration.toMillis(Duration.fromInputUnsafe(seen[0]!.refreshAssignmentsInterval!))).toBe(1_000)
      yield* GracefulTest.send("SIGTERM")
      const report = yield* Fiber.join(fiber)
      const release = report.releases.find((r) => r.name === "cluster runner")
      expect(release).toMatchObject({ outcome: "released", deadlineMs: 12_000 })
      expect(events).toEqual(["sharding scope closed"])
      expect(report.exitCode).toBe(0)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("drain first (entities serving), then the handlers finish, then the handoff, then the SQL client", () =>
    Effect.gen(function*() {
      const events: Array<string> = []
      const handoffs: Array<Cluster.Handoff> = []
      const SqlLive = Layer.effectDiscard(
        Resource.addFinalizer("postgres", Effect.sync(() => events.push("sql closed")), { timeout: "2 seconds" })
      )
      const RunnerLive = Cluster.layer(makeRunner(events, []), {
        runnerAddress: { host: "127.0.0.1", port: 34431 },
        timeout: "10 seconds",
        onHandoff: (handoff) => Effect.sync(() => handoffs.push(handoff))
      }).pipe(Layer.provideMerge(SqlLive))
      const fiber = yield* Effect.gen(function*() {
        const client = (yield* Worker.client)("w-1")
        // A request in flight at SIGTERM that calls the entity after 1 s of its own work.
        yield* InFlight.track(
          Effect.sleep("1 second").pipe(
            Effect.andThen(client.Work({ ms: 500 })),
            Effect.andThen(Effect.sync(() => events.push("request answered")))
          ),
          { kind: "request", label: "POST /work" }
        ).pipe(Effect.forkChild)
        // A handler already running at SIGTERM (3 s): it outlives the drain.
        yield* client.Work({ ms: 3_000 }).pipe(Effect.forkChild)
        return yield* Effect.never
      }).pipe(
        Effect.provide(RunnerLive),
        Graceful.run({ timeout: "25 seconds", drainTimeout: "5 seconds" }),
        counted,
        Effect.forkChild
      )
      yield* settle
      yield* GracefulTest.send("SIGTERM")
      for (let i = 0; i < 40; i++) {
        yield* TestClock.adjust("100 millis")
        yield* settle
      }
      const report = yield* Fiber.join(fiber)
      expect(events).toEqual([
        "handler done (3000 ms)",
        "handler done (500 ms)",
        "request answered",
        "sharding scope closed",
        "sql closed"
      ])
      expect(report.releases.map((r) => `${r.name}:${r.outcome}`)).toEqual([
        "cluster runner:released",
        "postgres:released"
      ])
      expect(report.cut).toEqual([])
      expect(handoffs).toHaveLength(1)
      expect(handoffs[0]).toMatchObject({ entitiesActive: 1, entitiesTerminated: 1, handlersCut: 0 })
      expect(handoffs[0]!.shardsHeld).toBeGreaterThan(0)
      expect(handoffs[0]!.shardsReleased).toBe(handoffs[0]!.shardsHeld)
      // The handoff is the release's detail in the report.
      expect(report.releases[0]!.detail).toEqual({ ...handoffs[0] })
      expect(report.exitCode).toBe(0)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("a handler still running at the quiesce deadline is cut and reported; the handoff still happens", () =>
    Effect.gen(function*() {
      const events: Array<string> = []
      const handoffs: Array<Cluster.Handoff> = []
      const RunnerLive = Cluster.layer(makeRunner(events, []), {
        runnerAddress: { host: "127.0.0.1", port: 34431 },
        timeout: "4 seconds",
        onHandoff: (handoff) => Effect.sync(() => handoffs.push(handoff))
      })
      const fiber = yield* Effect.gen(function*() {
        yield* (yield* Worker.client)("w-2").Work({ ms: 60_000 }).pipe(Effect.forkChild)
        return yield* Effect.never
      }).pipe(
        Effect.provide(RunnerLive),
        Graceful.run({ timeout: "25 seconds", drainTimeout: "1 second" }),
        counted,
        Effect.forkChild
      )
      yield* settle
      yield* GracefulTest.send("SIGTERM")
      for (let i = 0; i < 60; i++) {
        yield* TestClock.adjust("100 millis")
        yield* settle
      }
      const report = yield* Fiber.join(fiber)
      expect(handoffs[0]).toMatchObject({ handlersAtStart: 1, handlersCut: 1 })
      expect(report.cut.map((c) => c.kind)).toEqual(["cluster handler"])
      expect(events).toEqual(["sharding scope closed"])
      expect(report.exitCode).toBe(1)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("from the handoff on, callers waiting on the runner for a persisted reply are sent to storage, never interrupted", () =>
    Effect.gen(function*() {
      // What RunnerServer parks for a remote caller of a persisted request:
      // a reply handler on one of the runner's shards. Interrupted, the
      // caller would store an Interrupt for the next owner (the message is
      // then never run); EntityNotAssignedToRunner makes it read the reply
      // from storage.
      const events: Array<string> = []
      type Wait = (requestId: number) => Effect.Effect<Fiber.Fiber<void, ClusterError.EntityNotAssignedToRunner>>
      const waitFor = yield* Deferred.make<Wait>()
      const fiber = yield* Effect.gen(function*() {
        const storage = yield* MessageStorage.MessageStorage
        const sharding = yield* Sharding.Sharding
        const entityId = EntityId.make("w-3")
        const address = EntityAddress.make({
          shardId: sharding.getShardId(entityId, "default"),
          entityType: EntityType.make(Worker.type),
          entityId
        })
        const wait: Wait = (requestId) =>
          storage.registerReplyHandler(
            new Message.OutgoingRequest({
              envelope: Envelope.makeRequest<typeof Work>({
                requestId: Snowflake.Snowflake(BigInt(requestId)),
                address,
                tag: "Work",
                payload: { ms: 1 },
                headers: Headers.empty
              }),
              context: Context.empty(),
              lastReceivedReply: Option.none(),
              rpc: Work,
              respond: () => Effect.void,
              annotations: Context.empty()
            })
          ).pipe(
            Effect.onExit((exit) =>
              Effect.sync(() =>
                events.push(
                  `waiter ${requestId}: ${
                    Exit.isSuccess(exit) ? "replied" : Exit.hasInterrupts(exit) ? "interrupted" : "sent to storage"
                  }`
                )
              )
            ),
            Effect.forkDetach
          )
        yield* Deferred.succeed(waitFor, wait)
        // A handler running at SIGTERM (2 s): the handoff waits for it.
        yield* (yield* Worker.client)("w-4").Work({ ms: 2_000 }).pipe(Effect.forkChild)
        return yield* Effect.never
      }).pipe(
        Effect.provide(Cluster.layer(makeRunner(events, []), { runnerAddress: { host: "127.0.0.1", port: 34431 } })),
        Graceful.run({ timeout: "25 seconds" }),
        counted,
        Effect.forkChild
      )
      yield* settle
      const wait = yield* Deferred.await(waitFor)
      const early = yield* wait(1)
      yield* settle
      expect(early.pollUnsafe()).toBeUndefined()
      yield* GracefulTest.send("SIGTERM")
      yield* TestClock.adjust("500 millis")
      yield* settle
      // The handoff has started (the handler still runs): the waiter was sent
      // to storage, and a caller arriving now is sent there at once.
      expect(events).toEqual(["waiter 1: sent to storage"])
      yield* wait(2)
      yield* settle
      expect(events).toEqual(["waiter 1: sent to storage", "waiter 2: sent to storage"])
      for (let i = 0; i < 30; i++) {
        yield* TestClock.adjust("100 millis")
        yield* settle
      }
      const report = yield* Fiber.join(fiber)
      expect(events).toEqual([
        "waiter 1: sent to storage",
        "waiter 2: sent to storage",
        "handler done (2000 ms)",
        "sharding scope closed"
      ])
      expect(report.exitCode).toBe(0)
    }).pipe(Effect.provide(GracefulTest.layer)))
})
