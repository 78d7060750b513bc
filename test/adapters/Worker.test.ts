import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Queue } from "effect"
import { TestClock } from "effect/testing"
import * as Worker from "../../src/adapters/Worker.ts"
import { Graceful, Lifecycle } from "../../src/index.ts"
import * as GracefulTest from "../../src/testing.ts"
import { settle, start } from "../support/run.ts"

interface Job {
  readonly id: string
  readonly ms: number
  readonly fail?: boolean
}

/** An in-memory broker: a queue plus a log of what happened to each job. */
const makeBroker = (jobs: ReadonlyArray<Job>) =>
  Effect.gen(function*() {
    const queue = yield* Queue.unbounded<Job>()
    for (const job of jobs) Queue.offerUnsafe(queue, job)
    const events: Array<string> = []
    const acks = new Map<string, number>()
    return {
      queue,
      events,
      acks,
      options: {
        take: Queue.take(queue),
        process: (job: Job) =>
          Effect.gen(function*() {
            events.push(`start ${job.id}`)
            yield* Effect.sleep(job.ms)
            if (job.fail) return yield* Effect.fail(new Error(`job ${job.id} broke`))
            events.push(`done ${job.id}`)
          }),
        ack: (job: Job) =>
          Effect.sync(() => {
            events.push(`ack ${job.id}`)
            acks.set(job.id, (acks.get(job.id) ?? 0) + 1)
          }),
        nack: (job: Job, reason: Worker.NackReason) =>
          Effect.sync(() => {
            events.push(`nack ${job.id} ${reason._tag}`)
            // must-retry: back on the queue
            Queue.offerUnsafe(queue, job)
          }),
        label: (job: Job) => job.id
      }
    }
  })

/** A worker with the defaults under `Graceful.run`, forked and not settled: TestClock alone drives it. */
const forkWorker = (broker: Effect.Success<ReturnType<typeof makeBroker>>) =>
  Effect.gen(function*() {
    yield* Worker.make({ name: "w", ...broker.options })
    return yield* Effect.never
  }).pipe(Graceful.run({ timeout: "10 seconds" }), Effect.forkChild)

describe("Worker", () => {
  it.effect("processes and acknowledges each job exactly once, up to `concurrency` at a time", () =>
    Effect.gen(function*() {
      const jobs = Array.from({ length: 10 }, (_, i) => ({ id: `j${i}`, ms: 100 }))
      const broker = yield* makeBroker(jobs)
      let worker: Worker.Worker | undefined
      const fiber = yield* start(Effect.gen(function*() {
        worker = yield* Worker.make({ name: "w", concurrency: 3, ...broker.options })
        return yield* Effect.never
      }))
      expect((yield* worker!.stats).inProgress).toBe(3)
      yield* TestClock.adjust("100 millis")
      yield* settle
      expect(broker.acks.size).toBe(3)
      yield* TestClock.adjust("300 millis")
      yield* settle
      expect([...broker.acks.values()]).toEqual(Array(10).fill(1))
      expect(yield* worker!.stats).toEqual({
        taken: 10,
        acked: 10,
        failed: 0,
        interrupted: 0,
        ackFailures: 0,
        inProgress: 0
      })
      yield* GracefulTest.send("SIGTERM")
      const report = yield* Fiber.join(fiber)
      expect(report.exitCode).toBe(0)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("with TestClock alone (no settle), queued jobs run back to back: each adjust finishes the next one", () =>
    Effect.gen(function*() {
      const broker = yield* makeBroker([{ id: "j1", ms: 1000 }, { id: "j2", ms: 1000 }, { id: "j3", ms: 1000 }])
      const fiber = yield* forkWorker(broker)
      yield* TestClock.adjust("1 second")
      expect(broker.events).toEqual(["start j1", "done j1", "ack j1", "start j2"])
      yield* TestClock.adjust("1 second")
      expect(broker.events.slice(4)).toEqual(["done j2", "ack j2", "start j3"])
      yield* TestClock.adjust("1 second")
      expect([...broker.acks.entries()]).toEqual([["j1", 1], ["j2", 1], ["j3", 1]])
      yield* GracefulTest.send("SIGTERM")
      const report = yield* Fiber.join(fiber)
      expect(report.exitCode).toBe(0)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("with TestClock alone, one adjust spanning two queued jobs finishes both", () =>
    Effect.gen(function*() {
      const broker = yield* makeBroker([{ id: "j1", ms: 1000 }, { id: "j2", ms: 1000 }])
      const fiber = yield* forkWorker(broker)
      yield* TestClock.adjust("2 seconds")
      expect([...broker.acks.entries()]).toEqual([["j1", 1], ["j2", 1]])
      yield* GracefulTest.send("SIGTERM")
      const report = yield* Fiber.join(fiber)
      expect(report.exitCode).toBe(0)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("with TestClock alone, a job still queued at SIGTERM is never started: it stays in the queue", () =>
    Effect.gen(function*() {
      const broker = yield* makeBroker([{ id: "j1", ms: 1000 }, { id: "j2", ms: 1000 }])
      const fiber = yield* forkWorker(broker)
      yield* TestClock.adjust("1 millis")
      yield* GracefulTest.send("SIGTERM")
      yield* TestClock.adjust("3 seconds")
      const report = yield* Fiber.join(fiber)
      expect(broker.events).toEqual(["start j1", "done j1", "ack j1"])
      expect(yield* Queue.size(broker.queue)).toBe(1)
      expect(report.exitCode).toBe(0)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("at Closing it stops taking; jobs in progress finish and are acknowledged before the releases", () =>
    Effect.gen(function*() {
      const jobs = Array.from({ length: 6 }, (_, i) => ({ id: `j${i}`, ms: 1000 }))
      const broker = yield* makeBroker(jobs)
      let worker: Worker.Worker | undefined
      let lifecycle: Lifecycle.LifecycleService | undefined
      const fiber = yield* start(
        Effect.gen(function*() {
          lifecycle = yield* Lifecycle.Lifecycle
          worker = yield* Worker.make({ name: "w", concurrency: 2, ...broker.options })
          return yield* Effect.never
        }),
        { timeout: "10 seconds", drainTimeout: "5 seconds" }
      )
      yield* TestClock.adjust("500 millis")
      yield* GracefulTest.send("SIGTERM")
      expect(lifecycle!.phaseUnsafe()).toBe("Closing")
      expect(yield* worker!.isTaking).toBe(false)
      yield* TestClock.adjust("500 millis")
      const report = yield* Fiber.join(fiber)
      // j0 and j1 were running at SIGTERM: they finished and were acked; nothing else started.
      expect(broker.events).toEqual(["start j0", "start j1", "done j0", "ack j0", "done j1", "ack j1"])
      expect(yield* Queue.size(broker.queue)).toBe(4)
      expect(report.inFlight).toEqual({ atDrainStart: 2, atDrainEnd: 0 })
      expect(report.cut).toEqual([])
      expect(report.hooks.map((h) => `${h.name}:${h.outcome}`)).toEqual(["w: stop taking jobs:released"])
      expect(report.exitCode).toBe(0)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("a job still running at the drain deadline is cut, not acknowledged, handed back, and reported", () =>
    Effect.gen(function*() {
      const broker = yield* makeBroker([{ id: "fast", ms: 200 }, { id: "slow", ms: 60_000 }])
      const fiber = yield* start(
        Worker.make({ name: "w", concurrency: 2, ...broker.options }).pipe(Effect.andThen(Effect.never)),
        { timeout: "10 seconds", drainTimeout: "2 seconds" }
      )
      yield* GracefulTest.send("SIGTERM")
      yield* TestClock.adjust("2 seconds")
      const report = yield* Fiber.join(fiber)
      expect(broker.events).toEqual(["start fast", "start slow", "done fast", "ack fast", "nack slow Interrupted"])
      expect(broker.acks.has("slow")).toBe(false)
      // must-retry: the cut job is back on the queue for the next consumer
      expect(yield* Queue.takeAll(broker.queue)).toEqual([{ id: "slow", ms: 60_000 }])
      expect(report.cut).toEqual([{ kind: "job", label: "slow", ageMs: 2000 }])
      expect(report.exitCode).toBe(1)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("a failed job is handed back with its cause and never acknowledged; the worker carries on", () =>
    Effect.gen(function*() {
      const broker = yield* makeBroker([{ id: "bad", ms: 10, fail: true }, { id: "good", ms: 10 }])
      const reasons: Array<string> = []
      let worker: Worker.Worker | undefined
      const fiber = yield* start(Effect.gen(function*() {
        worker = yield* Worker.make({
          name: "w",
          ...broker.options,
          nack: (job, reason) =>
            Effect.sync(() => {
              reasons.push(reason._tag === "Failed" ? `${job.id}: ${String(reason.cause)}` : job.id)
            })
        })
        return yield* Effect.never
      }))
      yield* TestClock.adjust("10 millis")
      yield* settle
      yield* TestClock.adjust("10 millis")
      yield* settle
      expect(reasons).toHaveLength(1)
      expect(reasons[0]).toContain("job bad broke")
      expect([...broker.acks.keys()]).toEqual(["good"])
      expect(yield* worker!.stats).toMatchObject({ taken: 2, acked: 1, failed: 1 })
      yield* GracefulTest.send("SIGTERM")
      expect((yield* Fiber.join(fiber)).exitCode).toBe(0)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("a failing take is retried with backoff", () =>
    Effect.gen(function*() {
      let attempts = 0
      const processed: Array<number> = []
      const fiber = yield* start(
        Worker.make({
          name: "w",
          take: Effect.suspend(() => {
            attempts++
            return attempts < 3 ? Effect.fail(new Error("broker down")) : Effect.succeed(attempts)
          }).pipe(Effect.flatMap((n) => n > 3 ? Effect.never : Effect.succeed(n))),
          process: (n) => Effect.sync(() => processed.push(n)),
          ack: () => Effect.void
        }).pipe(Effect.andThen(Effect.never))
      )
      expect(attempts).toBe(1)
      yield* TestClock.adjust("100 millis")
      expect(attempts).toBe(2)
      yield* TestClock.adjust("199 millis")
      expect(attempts).toBe(2)
      yield* TestClock.adjust("1 millis")
      yield* settle
      expect(processed).toEqual([3])
      yield* GracefulTest.send("SIGTERM")
      expect((yield* Fiber.join(fiber)).exitCode).toBe(0)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("an acknowledgement that hangs is abandoned after settleTimeout and counted", () =>
    Effect.gen(function*() {
      const broker = yield* makeBroker([{ id: "a", ms: 10 }])
      let worker: Worker.Worker | undefined
      const fiber = yield* start(Effect.gen(function*() {
        worker = yield* Worker.make({
          name: "w",
          ...broker.options,
          ack: () => Effect.never,
          settleTimeout: "1 second"
        })
        return yield* Effect.never
      }))
      yield* TestClock.adjust("10 millis")
      yield* settle
      expect((yield* worker!.stats).ackFailures).toBe(0)
      yield* TestClock.adjust("1 second")
      yield* settle
      expect(yield* worker!.stats).toMatchObject({ acked: 0, ackFailures: 1, inProgress: 0 })
      yield* GracefulTest.send("SIGTERM")
      expect((yield* Fiber.join(fiber)).exitCode).toBe(0)
    }).pipe(Effect.provide(GracefulTest.layer)))
})
