import { Queue } from "bullmq"
import { Effect, Fiber } from "effect"
import { createClient } from "redis"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import * as BullMQ from "../../src/adapters/BullMQ.ts"
import { Graceful, Lifecycle } from "../../src/index.ts"
import * as GracefulTest from "../../src/testing.ts"
import { startFaultProxy } from "../support/faultProxy.ts"
import { type Fixture, start, uniqueName } from "./harness.ts"
import {
  DRAIN_MS,
  jobs,
  recordFigures,
  ROUND_TIMEOUT,
  runQueueRounds,
  shutdownEnv,
  type Store,
  summary
} from "./queueRounds.ts"

/**
 * Both modes use a 5 s lockDuration and stalledInterval instead of BullMQ's
 * 30 s, so the by-hand run (whose abandoned jobs wait for the lock to
 * expire) stays bounded; ours does not depend on it.
 */
const LOCK_MS = 5000
const redis = createClient({ url: "redis://127.0.0.1:6379" })
const prefixes: Array<string> = []
let running: Array<Fixture> = []

beforeAll(async () => {
  await redis.connect()
})
afterEach(() => {
  for (const child of running) child.cleanup()
  running = []
})
afterAll(async () => {
  for (const prefix of prefixes) {
    for await (const keys of redis.scanIterator({ MATCH: `${prefix}:*`, COUNT: 1000 })) {
      if (keys.length > 0) await redis.del(keys)
    }
  }
  await redis.quit()
})

const storeOf = (prefix: string, queue: Queue): Store => ({
  starts: async () =>
    (await redis.lRange(`${prefix}:starts`, 0, -1)).map((line) => {
      const [id, proc, at] = line.split(" ").map(Number)
      return { id: id!, proc: proc!, at: at! }
    }),
  dones: async () =>
    (await redis.lRange(`${prefix}:done`, 0, -1)).map((line) => {
      const [id, proc] = line.split(" ").map(Number)
      return { id: id!, proc: proc! }
    }),
  idle: async () => {
    const counts = await queue.getJobCounts("wait", "active", "delayed", "prioritized")
    return Object.values(counts).every((n) => n === 0)
  }
})

/** A queue of its own, under a key prefix of its own, with these jobs. */
const fillWith = async (
  mode: string,
  added: ReadonlyArray<{ readonly name: string; readonly data: { readonly id: number; readonly ms: number } }>
) => {
  const prefix = uniqueName(`queues-bullmq-${mode}`)
  prefixes.push(prefix)
  const client = redis.duplicate()
  await client.connect()
  const queue = new Queue("jobs", { connection: client, prefix })
  await queue.addBulk([...added])
  expect(await queue.count()).toBe(added.length)
  return { prefix, queue, client }
}

/** The 1,000 jobs of the round test. */
const fill = (mode: string) => fillWith(mode, jobs().map((job) => ({ name: `job-${job.id}`, data: job })))

const run = (mode: "ours" | "hand", prefix: string) => (proc: number) => {
  const child = start("bullmq-worker.ts", {
    ...shutdownEnv,
    BULLMQ_MODE: mode,
    BULLMQ_PREFIX: prefix,
    BULLMQ_QUEUE: "jobs",
    PROC: String(proc),
    LOCK_MS: String(LOCK_MS),
    DRAIN_MS: String(DRAIN_MS),
    CONCURRENCY: "2"
  })
  running.push(child)
  return child
}

const measured: Record<string, ReturnType<typeof summary>> = {}

describe("BullMQ worker, real Redis, real signals", () => {
  it(
    "1,000 jobs, 10 SIGTERMs mid-flight: none lost, none completed twice, every cut job back in the wait list and running again at once",
    async () => {
      const { client, prefix, queue } = await fill("ours")
      const result = await runQueueRounds({
        start: run("ours", prefix),
        store: storeOf(prefix, queue),
        ours: true,
        finalWaitMs: 60_000
      })
      await queue.close()
      await client.quit()
      for (const round of result.rounds) {
        // 1 when a job was cut, else 0; every release within its slice
        expect(round.exit, result.output()).toBe(round.cut!.length === 0 ? 0 : 1)
        expect(round.releases!.filter((r) => !r.endsWith(":released"))).toEqual([])
      }
      const reportedCuts = result.rounds.flatMap((r) => r.cut!)
      expect(result.lost, result.output()).toEqual([])
      expect(result.completedTwice).toEqual([])
      expect(result.cut).toBeGreaterThan(0)
      // each job the store shows cut is one the reports named (queue, id, name)
      expect(reportedCuts.length).toBe(result.cut)
      expect(reportedCuts.every((label) => /^jobs \S+ job-\d+$/.test(label))).toBe(true)
      expect(result.redelivered).toBe(result.cut)
      // back in the queue at once: well under a second, not after the 5 s lock
      expect(Math.max(...result.rerunDelays)).toBeLessThan(1000)
      measured.ours = summary(result)
      recordFigures("bullmq", "ours", { ...measured.ours, lockDurationMs: LOCK_MS })
      console.log(`[measured] bullmq ours: ${JSON.stringify(measured.ours)}`)
    },
    ROUND_TIMEOUT
  )

  // The by-hand baseline (the lock-expiry wait) is a comparison, not a
  // property of the adapter: `npm run bench:queues` runs it beside ours
  // (QUEUES_BY_HAND=1) and writes bench/results/queues.json; .ci/run runs
  // only ours, to stay within its time.
  it.runIf(process.env.QUEUES_BY_HAND === "1")(
    "the same rounds with close() raced against the drain by hand: cut jobs wait for the lock to expire",
    async () => {
      const { client, prefix, queue } = await fill("hand")
      const result = await runQueueRounds({
        start: run("hand", prefix),
        store: storeOf(prefix, queue),
        ours: false,
        finalWaitMs: 4 * LOCK_MS
      })
      await queue.close()
      await client.quit()
      expect(result.cut).toBeGreaterThan(0)
      // an abandoned job keeps its lock: it runs again only after lockDuration
      expect(Math.min(...result.rerunDelays)).toBeGreaterThan(LOCK_MS - DRAIN_MS - 500)
      measured.hand = summary(result)
      recordFigures("bullmq", "by hand", { ...measured.hand, lockDurationMs: LOCK_MS })
      console.log(`[measured] bullmq by hand: ${JSON.stringify(measured.hand)}`)
    },
    ROUND_TIMEOUT
  )
})

describe("BullMQ adapter in one process, real Redis", () => {
  it("a job cut at the deadline is back at the head of the wait list at once, its attemptsMade unchanged, and the report names it", async () => {
    const { client, prefix, queue } = await fillWith("cut", [{ name: "slow", data: { id: 1, ms: 60_000 } }, {
      name: "next",
      data: { id: 2, ms: 10 }
    }])
    let resolveStarted = () => {}
    const started = {
      promise: new Promise<void>((resolve) => (resolveStarted = resolve)),
      resolve: () => resolveStarted()
    }
    const report = await Effect.runPromise(
      Effect.gen(function*() {
        const connection = yield* Effect.promise(async () => {
          const c = redis.duplicate()
          await c.connect()
          return c
        })
        const fiber = yield* Effect.forkChild(Graceful.run(
          Effect.gen(function*() {
            yield* BullMQ.worker<{ readonly id: number; readonly ms: number }, never>({
              queue: "jobs",
              connection,
              workerOptions: { prefix },
              handler: (job) => Effect.andThen(Effect.sync(() => started.resolve()), Effect.sleep(job.data.ms))
            })
            return yield* Effect.never
          }),
          { timeout: "10 seconds", drainTimeout: "300 millis" }
        ))
        yield* Effect.promise(() => started.promise)
        yield* GracefulTest.send("SIGTERM")
        const report = yield* Fiber.join(fiber)
        yield* Effect.promise(() => connection.quit())
        return report
      }).pipe(Effect.provide(GracefulTest.layer))
    )
    // BullMQ takes the next job from the right end of the wait list
    const head = await redis.lIndex(`${prefix}:jobs:wait`, -1)
    const job = (await queue.getJob(head!))!
    const state = await job.getState()
    await queue.close()
    await client.quit()
    expect(report.cut).toEqual([{ kind: "job", label: `jobs ${job.id} slow`, ageMs: expect.any(Number) }])
    expect(report.cut[0]!.ageMs).toBeGreaterThanOrEqual(300)
    // the head of the wait list: the next worker takes it first, with no lock to wait for
    expect(job.name).toBe("slow")
    expect(state).toBe("waiting")
    expect(job.attemptsMade).toBe(0)
    expect(job.failedReason ?? "").toBe("")
    expect(report.releases.map((r) => `${r.name}:${r.outcome}`)).toEqual(["bullmq jobs:released"])
  })

  it("the producer's adds still pending at SIGTERM are awaited before the queue closes: every job is in Redis", async () => {
    const prefix = uniqueName("queues-bullmq-producer")
    prefixes.push(prefix)
    const count = 2000
    /**
     * The producer reaches Redis through a proxy that is frozen once the
     * queue is ready: every add is sent and none can be answered, so all of
     * them are pending at SIGTERM, whatever the machine's load. The proxy
     * forwards again 300 ms into Closing (a Redis slow for that long is the
     * case under test), so the release must wait for them.
     */
    const proxy = await startFaultProxy({ port: 6379 })
    const FROZEN_MS = 300
    let pendingAtClosing = 0
    const report = await Effect.runPromise(
      Effect.gen(function*() {
        const connection = yield* Effect.promise(async () => {
          const c = createClient({ url: `redis://127.0.0.1:${proxy.port}` })
          await c.connect()
          return c
        })
        const fiber = yield* Effect.forkChild(Graceful.run(
          Effect.gen(function*() {
            const producer = yield* BullMQ.queue<{ readonly n: number }>({
              queue: "jobs",
              connection,
              queueOptions: { prefix }
            })
            proxy.freeze()
            yield* Effect.forkDetach(
              Effect.forEach(Array.from({ length: count }, (_, n) => n), (n) => producer.add("job", { n }), {
                concurrency: "unbounded",
                discard: true
              })
            )
            // a fact, polled: every add has been handed to the client
            while (producer.pending() < count) yield* Effect.sleep("5 millis")
            yield* Lifecycle.addHook(
              "count pending",
              "Closing",
              Effect.sync(() => {
                pendingAtClosing = producer.pending()
                setTimeout(() => proxy.forward(), FROZEN_MS)
              })
            )
            yield* GracefulTest.send("SIGTERM")
            return yield* Effect.never
          }),
          { timeout: "10 seconds", drainTimeout: "100 millis" }
        ))
        const report = yield* Fiber.join(fiber)
        yield* Effect.promise(() => connection.quit())
        return report
      }).pipe(Effect.provide(GracefulTest.layer), Effect.ensuring(Effect.promise(() => proxy.close())))
    )
    const client = redis.duplicate()
    await client.connect()
    const queue = new Queue("jobs", { connection: client, prefix })
    const inRedis = await queue.count()
    await queue.close()
    await client.quit()
    expect(pendingAtClosing).toBe(count)
    expect(report.releases.map((r) => `${r.name}:${r.outcome}`)).toEqual(["bullmq jobs (producer):released"])
    // the release waited for Redis to answer: the proxy was still frozen when it began
    expect(report.releases[0]!.durationMs).toBeGreaterThanOrEqual(FROZEN_MS / 2)
    expect(inRedis).toBe(count)
  })
})
