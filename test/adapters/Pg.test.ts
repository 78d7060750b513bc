/**
 * The `pg.Pool` adapter under `TestClock`: the release slice, connect
 * deadlines and a connection that fails while lent, deterministic and
 * hermetic. The pool is a real `pg.Pool` (pg-pool's queue, its events, its
 * end) whose connections are made by an in-memory client class, passed as
 * pg's own `Client` option; the real server is in the integration suite
 * (test/integration/pg.test.ts, connection-faults.test.ts).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Fiber } from "effect"
import { TestClock } from "effect/testing"
import { EventEmitter } from "node:events"
import pg from "pg"
import * as Pg from "../../src/adapters/Pg.ts"
import { InFlight } from "../../src/index.ts"
import * as GracefulTest from "../../src/testing.ts"
import { settle, start } from "../support/run.ts"

interface Pending {
  readonly text: string
  readonly reject: (error: Error) => void
}

/**
 * What pg-pool needs of a client: connect, query, end, error events, and the
 * flags it reads (`_queryable`, `_ending`). Queries other than `SELECT 1`
 * never answer, as on a frozen server. `connection.stream.destroy` records
 * a forced close.
 */
const makeClientClass = () => {
  const clients: Array<MemoryClient> = []
  class MemoryClient extends EventEmitter {
    _queryable = true
    _ending = false
    _connecting = false
    destroyed = false
    readonly pending: Array<Pending> = []
    readonly connection = { stream: { destroy: () => this.destroy() } }
    constructor(_config: unknown) {
      super()
      clients.push(this)
    }
    destroy() {
      this.destroyed = true
      this._queryable = false
      const error = new Error("Connection terminated unexpectedly")
      for (const query of this.pending.splice(0)) query.reject(error)
    }
    connect(callback?: (error?: Error) => void) {
      if (callback !== undefined) {
        process.nextTick(callback)
        return undefined
      }
      return Promise.resolve()
    }
    query(text: string) {
      if (text === "SELECT 1") return Promise.resolve({ rows: [{ "?column?": 1 }], rowCount: 1 })
      return new Promise((_resolve, reject) => this.pending.push({ text, reject }))
    }
    /** The server resets the connection: the query fails, then the client emits `error`, as pg does. */
    reset() {
      this._queryable = false
      const error = Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" })
      for (const query of this.pending.splice(0)) query.reject(error)
      this.emit("error", error)
    }
    end(callback?: () => void) {
      this._ending = true
      if (callback !== undefined) {
        process.nextTick(callback)
        return undefined
      }
      return Promise.resolve()
    }
  }
  return { Client: MemoryClient, clients }
}

const makePool = (max = 4) => {
  const { Client, clients } = makeClientClass()
  const pool = new pg.Pool({ Client: Client as unknown as typeof pg.Client, max, idleTimeoutMillis: 0 })
  return { pool, clients }
}

describe("Pg pool adapter (TestClock)", () => {
  it.effect("the release slice runs on Effect's clock: the leaked connection is closed by force at slice minus the cancel step, not before", () =>
    Effect.gen(function*() {
      const { clients, pool } = makePool()
      const fiber = yield* start(Effect.gen(function*() {
        yield* Pg.fromPool(pool, { name: "db", timeout: "4 seconds", cancelGrace: "1 second" })
        // A client checked out and never given back (an Express handler's leak).
        yield* Effect.promise(() => pool.connect())
        return yield* Effect.never
      }))
      const leaked = clients.find((client) => !client._ending)!
      expect(pool.totalCount - pool.idleCount).toBe(1)

      yield* GracefulTest.send("SIGTERM")
      yield* settle
      // Slice 4 s, grace 1 s: queries get 3 s, then the cancel step (no
      // backend pid here), then up to grace minus 100 ms for the pool to end.
      yield* TestClock.adjust("3899 millis")
      yield* settle
      expect(leaked.destroyed).toBe(false)
      yield* TestClock.adjust("1 millis")
      yield* settle
      expect(leaked.destroyed).toBe(true)

      const report = yield* Fiber.join(fiber)
      const release = report.releases.find((r) => r.name === "db")!
      expect(release.outcome).toBe("failed")
      expect(release.durationMs).toBe(3900)
      expect(release.error).toContain("closed 1 checked-out connection(s) by force")
      expect(pool.ended).toBe(true)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("the pool ends within the slice when its last query finishes: the release succeeds with nothing forced", () =>
    Effect.gen(function*() {
      const { pool } = makePool()
      let client: pg.PoolClient | undefined
      const fiber = yield* start(Effect.gen(function*() {
        yield* Pg.fromPool(pool, { name: "db", timeout: "4 seconds", cancelGrace: "1 second" })
        client = yield* Effect.promise(() => pool.connect())
        return yield* Effect.never
      }))
      yield* GracefulTest.send("SIGTERM")
      yield* settle
      yield* TestClock.adjust("2 seconds")
      client!.release()
      yield* settle
      const report = yield* Fiber.join(fiber)
      expect(report.releases.find((r) => r.name === "db")).toMatchObject({ outcome: "released", durationMs: 2000 })
      expect(report.exitCode).toBe(0)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("waiting for a connection is bounded by connectTimeout and fails with PgQueryError", () =>
    Effect.gen(function*() {
      const { pool } = makePool(1)
      let result: Exit.Exit<unknown, Pg.PgQueryError> | undefined
      const fiber = yield* start(Effect.gen(function*() {
        const db = yield* Pg.fromPool(pool, { name: "db", connectTimeout: "3 seconds" })
        yield* Effect.promise(() => pool.connect()) // the only connection, never given back
        result = yield* Effect.exit(db.query("SELECT now()"))
        return yield* Effect.never
      }))
      yield* TestClock.adjust("2999 millis")
      yield* settle
      expect(result).toBeUndefined()
      yield* TestClock.adjust("1 millis")
      yield* settle
      expect(result !== undefined && Exit.isFailure(result)).toBe(true)
      expect(String(result)).toContain("db: no connection within 3000 ms")
      yield* GracefulTest.send("SIGTERM")
      yield* TestClock.adjust("10 seconds")
      yield* Fiber.join(fiber)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("tracked work waiting for a connection is cut at the drain deadline; the releases run", () =>
    Effect.gen(function*() {
      const { pool } = makePool(1)
      const fiber = yield* start(
        Effect.gen(function*() {
          const db = yield* Pg.fromPool(pool, { name: "db", timeout: "2 seconds", connectTimeout: "60 seconds" })
          yield* Effect.promise(() => pool.connect()) // the only connection, never given back
          yield* Effect.forkScoped(
            InFlight.track(db.query("SELECT now()"), { kind: "request", label: "GET /report" })
          )
          return yield* Effect.never
        }),
        { timeout: "10 seconds", drainTimeout: "1 second" }
      )
      yield* GracefulTest.send("SIGTERM")
      yield* settle
      yield* TestClock.adjust("1 second")
      yield* settle
      yield* TestClock.adjust("2 seconds")
      const report = yield* Fiber.join(fiber)
      expect(report.cut).toEqual([{ kind: "request", label: "GET /report", ageMs: 1000 }])
      expect(report.releases.find((r) => r.name === "db")?.outcome).toBe("failed") // the leaked client, forced
      expect(report.outcome).not.toBe("watchdog")
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("a connection reset under a query fails that query with PgQueryError; the pool keeps serving", () =>
    Effect.gen(function*() {
      const { clients, pool } = makePool()
      let db: Pg.ManagedPool | undefined
      const fiber = yield* start(Effect.gen(function*() {
        db = yield* Pg.fromPool(pool, { name: "db" })
        return yield* Effect.never
      }))
      const running = yield* Effect.forkChild(Effect.exit(db!.query("SELECT pg_sleep(10)")))
      yield* settle
      // Without a listener on the lent client, pg's `error` event would be
      // thrown here: the uncaught exception that took the defect path.
      clients.find((client) => client.pending.length > 0)!.reset()
      yield* settle
      const first = yield* Fiber.join(running)
      expect(Exit.isFailure(first)).toBe(true)
      expect(String(first)).toContain("db: read ECONNRESET")
      const second = yield* Effect.exit(db!.query("SELECT 1"))
      expect(Exit.isSuccess(second)).toBe(true)
      // The failed connection was discarded, not returned to the pool.
      const broken = clients.filter((client) => !client._queryable)
      expect(broken.length).toBeGreaterThan(0)
      expect(broken.every((client) => client._ending)).toBe(true)
      yield* GracefulTest.send("SIGTERM")
      const report = yield* Fiber.join(fiber)
      expect(report.trigger).toEqual({ _tag: "Signal", signal: "SIGTERM" })
      expect(report.exitCode).toBe(0)
    }).pipe(Effect.provide(GracefulTest.layer)))
})
