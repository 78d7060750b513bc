import { Effect, Exit } from "effect"
import { readFileSync } from "node:fs"
import { join } from "node:path"
import pg from "pg"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import * as Pg from "../../src/adapters/Pg.ts"
import { sigterm } from "../support/fixture.ts"
import { type Fixture, start, uniqueName } from "./harness.ts"

const connection = { host: "127.0.0.1", port: 5432, user: "postgres", database: "postgres" }
const admin = new pg.Client({ ...connection, application_name: "effect-graceful-it-admin" })
const table = uniqueName("graceful_pg")

let running: Array<Fixture> = []
const run = (env: Record<string, string>) => {
  const fixture = start("pg-service.ts", { PG_TABLE: table, ...env })
  running.push(fixture)
  return fixture
}

/** Connections the server still holds for an application name (ours, or its cancel connection). */
const connectionsOf = async (app: string): Promise<number> => {
  const result = await admin.query<{ n: string }>(
    "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name LIKE $1",
    [`${app}%`]
  )
  return Number(result.rows[0]!.n)
}

/** Backends leave pg_stat_activity a moment after their socket closes. */
const settledConnectionsOf = async (app: string): Promise<number> => {
  for (let i = 0; i < 20; i++) {
    const n = await connectionsOf(app)
    if (n === 0) return 0
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  return connectionsOf(app)
}

const measured: Array<string> = []
const note = (line: string) => {
  measured.push(line)
  console.log(`[measured] ${line}`)
}

beforeAll(async () => {
  await admin.connect()
  await admin.query(`CREATE TABLE ${table} (id serial PRIMARY KEY, step text NOT NULL)`)
})
afterAll(async () => {
  await admin.query(`DROP TABLE IF EXISTS ${table}`)
  await admin.end()
})
afterEach(() => {
  for (const fixture of running) fixture.cleanup()
  running = []
})

describe("Postgres, real server, real signals", () => {
  it("a transaction in flight at SIGTERM commits; the pool is released; no connection is left", async () => {
    const app = uniqueName("it_tx")
    const service = run({ PG_MODE: "transaction", PG_APP: app })
    await service.waitFor("tx-began")
    expect(await connectionsOf(app)).toBeGreaterThan(0)
    const { exit, sent } = await sigterm(service)
    expect(exit.code, service.output()).toBe(0)
    expect(service.has("tx-committed")).toBe(true)
    const rows = await admin.query<{ step: string }>(`SELECT step FROM ${table} ORDER BY id`)
    expect(rows.rows.map((r) => r.step)).toEqual(["first", "second"])
    const report = service.report()
    expect(report.inFlight).toEqual({ atDrainStart: 1, atDrainEnd: 0 })
    // reverse acquisition order: the event log was acquired first
    expect(report.releases.map((r) => `${r.name}:${r.outcome}`)).toEqual(["postgres:released", "events:released"])
    expect(readFileSync(join(service.dir, "events.jsonl"), "utf8")).toBe("{\"event\":\"transfer committed\"}\n")
    const left = await settledConnectionsOf(app)
    expect(left).toBe(0)
    note(
      `transaction in flight at SIGTERM: committed, exit ${exit.code} after ${
        exit.at - sent
      } ms, connections left ${left}`
    )
    await admin.query(`DELETE FROM ${table}`)
  })

  it("a query still running at the end of the release slice is cancelled and reported; no connection is left", async () => {
    const app = uniqueName("it_stuck")
    const service = run({
      PG_MODE: "stuck",
      PG_APP: app,
      PG_RELEASE_TIMEOUT: "2 seconds",
      PG_CANCEL_GRACE: "500 millis",
      SHUTDOWN_TIMEOUT: "6 seconds"
    })
    await service.waitFor("query-started")
    const active = await admin.query<{ state: string; query: string }>(
      "SELECT state, query FROM pg_stat_activity WHERE application_name = $1 AND query LIKE '%pg_sleep%'",
      [app]
    )
    expect(active.rows).toEqual([{ state: "active", query: "SELECT pg_sleep(60)" }])
    const { exit, sent } = await sigterm(service)
    const elapsed = exit.at - sent
    expect(exit.code, service.output()).toBe(1)
    // the client saw the cancellation: SQLSTATE 57014 query_canceled
    expect(service.has("query-failed-57014"), service.output()).toBe(true)
    const release = service.report().releases.find((r) => r.name === "postgres")!
    expect(release.outcome).toBe("failed")
    expect(release.error).toContain("cancelled 1 query still running at the end of the release slice")
    expect(release.error).toContain("SELECT pg_sleep(60)")
    // cancelled 1.5 s into its 2 s slice, then the pool ended
    expect(release.durationMs).toBeGreaterThanOrEqual(1450)
    expect(release.durationMs).toBeLessThan(2250)
    expect(service.output()).toContain("cancelled a query still running at the end of the release slice")
    const left = await settledConnectionsOf(app)
    expect(left).toBe(0)
    note(
      `query past its slice (2 s, grace 500 ms): cancelled after ${
        Math.round(release.durationMs)
      } ms of release, exit ${exit.code} after ${elapsed} ms, connections left ${left}`
    )
  })

  it("a connection leaked with an open transaction is closed by force at the end of the slice, rolled back, reported", async () => {
    const app = uniqueName("it_leak")
    const service = run({ PG_MODE: "leak", PG_APP: app, PG_RELEASE_TIMEOUT: "1 second", PG_CANCEL_GRACE: "400 millis" })
    await service.waitFor("leaked")
    const { exit, sent } = await sigterm(service)
    expect(exit.code, service.output()).toBe(1)
    const release = service.report().releases.find((r) => r.name === "postgres")!
    expect(release.outcome).toBe("failed")
    expect(release.error).toContain("closed 1 checked-out connection(s) by force")
    expect(release.error).not.toContain("did not end")
    const leaked = await admin.query(`SELECT 1 FROM ${table} WHERE step = 'leaked'`)
    expect(leaked.rowCount).toBe(0)
    const left = await settledConnectionsOf(app)
    expect(left).toBe(0)
    note(
      `leaked client with an open transaction: closed by force after ${
        Math.round(release.durationMs)
      } ms of a 1 s slice, rolled back, exit ${exit.code} after ${exit.at - sent} ms, connections left ${left}`
    )
  })

  it("a tracked query cut at the drain deadline is cancelled on the server at once", async () => {
    const app = uniqueName("it_cut")
    const service = run({
      PG_MODE: "cut",
      PG_APP: app,
      SHUTDOWN_DRAIN_TIMEOUT: "500 millis",
      SHUTDOWN_TIMEOUT: "10 seconds"
    })
    await service.waitFor("query-started")
    const { exit, sent } = await sigterm(service)
    expect(exit.code, service.output()).toBe(1)
    const report = service.report()
    expect(report.cut.map((c) => `${c.kind} ${c.label}`)).toEqual(["job report"])
    // the pool did not have to wait out its slice: the query was cancelled at the cut
    const release = report.releases.find((r) => r.name === "postgres")!
    expect(release.outcome).toBe("released")
    expect(exit.at - sent).toBeLessThan(2500)
    const left = await settledConnectionsOf(app)
    expect(left).toBe(0)
    note(
      `tracked query cut at the drain deadline (500 ms): exit ${exit.code} after ${
        exit.at - sent
      } ms, connections left ${left}`
    )
  })

  it("@effect/sql-pg: the in-flight query finishes, the managed client layer is released by name; no connection is left", async () => {
    const app = uniqueName("it_sql")
    const service = run({ PG_MODE: "sql", PG_APP: app })
    await service.waitFor("query-started")
    expect(await connectionsOf(app)).toBeGreaterThan(0)
    const { exit, sent } = await sigterm(service)
    expect(exit.code, service.output()).toBe(0)
    expect(service.has("sql-done")).toBe(true)
    const report = service.report()
    expect(report.releases.map((r) => `${r.name}:${r.outcome}`)).toEqual(["sql:released", "events:released"])
    const rows = await admin.query<{ n: string }>(`SELECT count(*) AS n FROM ${table} WHERE step = 'sql'`)
    expect(rows.rows[0]!.n).toBe("1")
    const left = await settledConnectionsOf(app)
    expect(left).toBe(0)
    note(
      `@effect/sql-pg query in flight: finished, exit ${exit.code} after ${exit.at - sent} ms, connections left ${left}`
    )
  })

  it("readiness: ping answers on a live server and fails with PgPingError on a dead one", async () => {
    const live = new pg.Pool({ ...connection, application_name: uniqueName("it_ping") })
    const dead = new pg.Pool({ ...connection, port: 1, application_name: "dead" })
    try {
      expect(await Effect.runPromiseExit(Pg.ping(live, { timeout: "2 seconds" }))).toEqual(Exit.void)
      const error = await Effect.runPromise(Effect.flip(Pg.ping(dead, { name: "db", timeout: "2 seconds" })))
      expect(error._tag).toBe("PgPingError")
      expect(error.message).toContain("db: ping failed")
      // a server that does not answer in time: a backend holding a lock the ping waits for is not
      // needed; a timeout of zero is enough to show the timeout path
      const slow = await Effect.runPromise(Effect.flip(Pg.ping(live, { timeout: 0 })))
      expect(slow.reason).toBe("no answer within 0 ms")
    } finally {
      await live.end()
      await dead.end()
    }
  })
})
