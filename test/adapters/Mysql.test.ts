import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { TestClock } from "effect/testing"
import type mysql from "mysql2/promise"
import { EventEmitter } from "node:events"
import * as Mysql from "../../src/adapters/Mysql.ts"
import * as GracefulTest from "../../src/testing.ts"
import { start } from "../support/run.ts"

/**
 * An in-memory `mysql2/promise` pool with mysql2's events: `acquire` when a
 * connection is lent, `release` when it comes back. Its connections have no
 * server thread id, so the kill step has nothing to kill: these tests are
 * about the slice (the kill itself runs against a real server in the
 * integration suite).
 */
const makePool = () => {
  const events: Array<string> = []
  const core = Object.assign(new EventEmitter(), { config: { connectionConfig: { host: "127.0.0.1" } } })
  let next = 0
  const lend = () => {
    const id = ++next
    const coreConnection = {
      threadId: null,
      stream: { destroyed: false },
      destroy: () => {
        events.push(`destroy ${id}`)
        coreConnection.stream.destroyed = true
      }
    }
    core.emit("acquire", coreConnection)
    return {
      connection: coreConnection,
      threadId: null,
      query: () => Promise.resolve([[], []]),
      release: () => {
        events.push(`release ${id}`)
        core.emit("release", coreConnection)
      }
    }
  }
  const pool = {
    pool: core,
    getConnection: () => Promise.resolve(lend()),
    end: () => {
      events.push("end")
      return Promise.resolve()
    },
    query: () => Promise.resolve([[], []])
  }
  return { events, pool: pool as unknown as mysql.Pool, lend }
}

describe("Mysql pool release", () => {
  it.effect("waits for a checked-out connection to come back, then ends the pool", () =>
    Effect.gen(function*() {
      const fake = makePool()
      const fiber = yield* start(
        Mysql.fromPool(fake.pool, { timeout: "2 seconds", killGrace: "500 millis" }).pipe(Effect.andThen(Effect.never))
      )
      const loan = fake.lend()
      yield* GracefulTest.send("SIGTERM")
      yield* TestClock.adjust("1 second")
      expect(fake.events).toEqual([])
      loan.release()
      const report = yield* Fiber.join(fiber)
      expect(fake.events).toEqual(["release 1", "end"])
      expect(report.releases.map((r) => `${r.name}:${r.outcome}`)).toEqual(["mysql:released"])
      expect(report.exitCode).toBe(0)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("a connection still checked out at the end of its slice is destroyed and reported; the pool still ends", () =>
    Effect.gen(function*() {
      const fake = makePool()
      const fiber = yield* start(
        Mysql.fromPool(fake.pool, { timeout: "2 seconds", killGrace: "500 millis" }).pipe(Effect.andThen(Effect.never))
      )
      fake.lend()
      yield* GracefulTest.send("SIGTERM")
      // the slice minus the grace for the work, then the kill step; the last 100 ms to destroy and end
      yield* TestClock.adjust("1899 millis")
      expect(fake.events).toEqual([])
      yield* TestClock.adjust("1 millis")
      const report = yield* Fiber.join(fiber)
      expect(fake.events).toEqual(["destroy 1", "end"])
      const release = report.releases.find((r) => r.name === "mysql")!
      expect(release.outcome).toBe("failed")
      expect(release.error).toContain("mysql: destroyed 1 checked-out connection(s)")
      expect(report.exitCode).toBe(1)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("once the release has begun, new work through the adapter is refused", () =>
    Effect.gen(function*() {
      const fake = makePool()
      let db: Mysql.ManagedPool | undefined
      const fiber = yield* start(Effect.gen(function*() {
        db = yield* Mysql.fromPool(fake.pool, { timeout: "2 seconds" })
        return yield* Effect.never
      }))
      const loan = fake.lend()
      yield* GracefulTest.send("SIGTERM")
      yield* TestClock.adjust("100 millis")
      const refused = yield* Effect.flip(db!.query("SELECT 1"))
      expect(refused.message).toBe("mysql: the pool is closing")
      loan.release()
      expect((yield* Fiber.join(fiber)).exitCode).toBe(0)
    }).pipe(Effect.provide(GracefulTest.layer)))
})
