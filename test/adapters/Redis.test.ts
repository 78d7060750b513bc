/**
 * The Redis adapter under `TestClock`: the bounded, logged, interruptible
 * connect, and the Streams consumer's reclaim schedule, which reads time
 * through Effect's clock. Hermetic: the connections are in-memory objects
 * with node-redis' method names; the real server is in the integration suite
 * (test/integration/redis.test.ts, connection-faults.test.ts).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Fiber } from "effect"
import { TestClock } from "effect/testing"
import * as Redis from "../../src/adapters/Redis.ts"
import * as GracefulTest from "../../src/testing.ts"
import { settle, start } from "../support/run.ts"

/** A connection to a Redis that refuses: `connect` never settles, `refuse` emits the error node-redis emits per attempt. */
const makeRefusedConnection = () => {
  const listeners: Array<(error: Error) => void> = []
  const state = { destroyed: false }
  const connection: Redis.Connection = {
    connect: () => new Promise(() => {}),
    close: async () => undefined,
    destroy: () => void (state.destroyed = true),
    on: (_event, listener) => void listeners.push(listener)
  }
  const refuse = () => {
    for (const listener of listeners) listener(new Error("connect ECONNREFUSED 127.0.0.1:6390"))
  }
  return { connection, refuse, state }
}

/**
 * A Streams connection pair with an empty stream: own pending entries none,
 * reclaims find nothing, and a blocking read waits until `unblock` (the
 * server's BLOCK running out).
 */
const makeEmptyStream = () => {
  const calls: Array<string> = []
  let unblock: (() => void) | undefined
  const duplicate = (): Redis.StreamsConnection => ({
    connect: async () => undefined,
    close: async () => undefined,
    destroy: () => unblock?.(),
    on: () => undefined,
    xGroupCreate: async () => "OK",
    xReadGroup: (_group, _consumer, streams, options) => {
      if (options?.BLOCK === undefined) {
        calls.push(`XREADGROUP ${streams.id}`)
        return Promise.resolve([])
      }
      calls.push(`XREADGROUP ${streams.id} BLOCK ${options.BLOCK}`)
      return new Promise((resolve) => {
        unblock = () => resolve(null)
      })
    },
    xAutoClaim: async (_key, _group, _consumer, _minIdle, start) => {
      calls.push(`XAUTOCLAIM ${start}`)
      return { nextId: "0-0", messages: [], deletedMessages: [] }
    },
    xAck: async () => 1
  })
  return { client: { duplicate }, calls, unblock: () => unblock?.() }
}

describe("Redis.connect (TestClock)", () => {
  it.effect("a Redis that refuses: each attempt is counted, and at connectTimeout the connection is destroyed and the acquisition fails with the last error", () =>
    Effect.gen(function*() {
      const { connection, refuse, state } = makeRefusedConnection()
      let result: Exit.Exit<unknown, Redis.RedisConnectError> | undefined
      const fiber = yield* start(Effect.gen(function*() {
        result = yield* Effect.exit(Redis.connect(connection, { name: "cache", connectTimeout: "3 seconds" }))
        return yield* Effect.never
      }))
      refuse()
      yield* TestClock.adjust("1 second")
      refuse()
      yield* TestClock.adjust("1999 millis")
      yield* settle
      expect(result).toBeUndefined()
      expect(state.destroyed).toBe(false)
      yield* TestClock.adjust("1 millis")
      yield* settle
      expect(result !== undefined && Exit.isFailure(result)).toBe(true)
      expect(String(result)).toContain(
        "cache: cannot connect to Redis: no connection within 3000 ms (2 failed attempts; last error: connect ECONNREFUSED 127.0.0.1:6390)"
      )
      expect(state.destroyed).toBe(true)
      yield* GracefulTest.send("SIGTERM")
      yield* Fiber.join(fiber)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("a signal while connecting stops the start-up at once: no time passes, the connection is destroyed", () =>
    Effect.gen(function*() {
      const { connection, refuse, state } = makeRefusedConnection()
      const fiber = yield* start(Effect.gen(function*() {
        yield* Redis.connect(connection, { name: "cache", connectTimeout: "60 seconds" })
        return yield* Effect.never
      }))
      refuse()
      yield* GracefulTest.send("SIGTERM")
      yield* settle
      const report = yield* Fiber.join(fiber)
      expect(state.destroyed).toBe(true)
      expect(report.durationMs).toBe(0)
      expect(report.outcome).not.toBe("watchdog")
    }).pipe(Effect.provide(GracefulTest.layer)))
})

describe("Redis.consume reclaim schedule (TestClock)", () => {
  it.effect("reclaims on start, then every claimEvery of Effect's clock; a blocking read never outlasts the next reclaim", () =>
    Effect.gen(function*() {
      const stream = makeEmptyStream()
      const fiber = yield* start(Effect.gen(function*() {
        yield* Redis.consume({
          client: stream.client,
          stream: "jobs",
          group: "workers",
          consumer: "w1",
          claimIdle: "20 seconds",
          claimEvery: "10 seconds",
          block: "2 seconds",
          handler: () => Effect.void
        })
        return yield* Effect.never
      }))
      expect(stream.calls).toEqual(["XREADGROUP 0", "XAUTOCLAIM 0-0", "XREADGROUP > BLOCK 2000"])

      // 9 s later the next reclaim is 1 s away: the read blocks for 1 s only.
      yield* TestClock.adjust("9 seconds")
      stream.unblock()
      yield* settle
      expect(stream.calls.slice(3)).toEqual(["XREADGROUP > BLOCK 1000"])

      // At 10 s the reclaim is due.
      yield* TestClock.adjust("1 second")
      stream.unblock()
      yield* settle
      expect(stream.calls.slice(4)).toEqual(["XAUTOCLAIM 0-0", "XREADGROUP > BLOCK 2000"])

      yield* GracefulTest.send("SIGTERM")
      yield* settle
      yield* TestClock.adjust("10 seconds")
      const report = yield* Fiber.join(fiber)
      expect(report.exitCode).toBe(0)
    }).pipe(Effect.provide(GracefulTest.layer)))
})
