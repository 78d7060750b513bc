import { Effect, Exit } from "effect"
import mysql from "mysql2/promise"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import * as Mysql from "../../src/adapters/Mysql.ts"
import { sigterm } from "../support/fixture.ts"
import { type Fixture, start, uniqueName } from "./harness.ts"

const admin = mysql.createPool({ host: "127.0.0.1", port: 3306, user: "root", database: "test", connectionLimit: 2 })
const table = uniqueName("graceful_mysql")
// An account of its own: the processlist rows of this user are the service's connections.
const user = uniqueName("it")

let running: Array<Fixture> = []
const run = (env: Record<string, string>) => {
  const fixture = start("mysql-service.ts", { MYSQL_TABLE: table, MYSQL_USER: user, ...env })
  running.push(fixture)
  return fixture
}

/** The service's connections the server still holds (its processlist, as root sees it). */
const connectionsLeft = async (): Promise<number> => {
  const [rows] = await admin.query<Array<mysql.RowDataPacket>>(
    "SELECT count(*) AS n FROM information_schema.processlist WHERE USER = ?",
    [user]
  )
  return Number(rows[0]!.n)
}

/** A connection leaves the processlist a moment after its socket closes. */
const settledConnectionsLeft = async (): Promise<number> => {
  for (let i = 0; i < 20; i++) {
    if (await connectionsLeft() === 0) return 0
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  return connectionsLeft()
}

const steps = async () => {
  const [rows] = await admin.query<Array<mysql.RowDataPacket>>(`SELECT step FROM ${table} ORDER BY id`)
  return rows.map((row) => String(row.step))
}

beforeAll(async () => {
  await admin.query(
    `CREATE TABLE ${table} (id int AUTO_INCREMENT PRIMARY KEY, step varchar(40) NOT NULL) ENGINE=InnoDB`
  )
  await admin.query(`CREATE USER '${user}'@'127.0.0.1' IDENTIFIED BY ''`)
  await admin.query(`CREATE USER '${user}'@'localhost' IDENTIFIED BY ''`)
  await admin.query(`GRANT ALL ON test.* TO '${user}'@'127.0.0.1'`)
  await admin.query(`GRANT ALL ON test.* TO '${user}'@'localhost'`)
})
afterAll(async () => {
  await admin.query(`DROP TABLE IF EXISTS ${table}`)
  await admin.query(`DROP USER IF EXISTS '${user}'@'127.0.0.1'`)
  await admin.query(`DROP USER IF EXISTS '${user}'@'localhost'`)
  await admin.end()
})
afterEach(async () => {
  for (const fixture of running) fixture.cleanup()
  running = []
  await admin.query(`DELETE FROM ${table}`)
})

describe("MySQL/MariaDB, real server, real signals", () => {
  it("a transaction in flight at SIGTERM commits; the pool ends; no connection is left", async () => {
    const service = run({ MYSQL_MODE: "transaction" })
    await service.waitFor("tx-began")
    expect(await connectionsLeft()).toBeGreaterThan(0)
    const { exit, sent } = await sigterm(service)
    expect(exit.code, service.output()).toBe(0)
    expect(service.has("tx-committed")).toBe(true)
    expect(await steps()).toEqual(["first", "second"])
    const report = service.report()
    expect(report.inFlight).toEqual({ atDrainStart: 1, atDrainEnd: 0 })
    expect(report.releases.map((r) => `${r.name}:${r.outcome}`)).toEqual(["mysql:released"])
    const left = await settledConnectionsLeft()
    expect(left).toBe(0)
    console.log(
      `[measured] mysql: transaction in flight at SIGTERM committed, exit ${exit.code} after ${
        exit.at - sent
      } ms, connections left ${left}`
    )
  })

  it("an untracked transaction open at SIGTERM (a connection taken straight from the pool) commits: the pool ends only after it", async () => {
    const service = run({ MYSQL_MODE: "untracked" })
    await service.waitFor("tx-began")
    const { exit, sent } = await sigterm(service)
    expect(exit.code, service.output()).toBe(0)
    expect(service.has("tx-committed"), service.output()).toBe(true)
    expect(await steps()).toEqual(["first", "second"])
    const report = service.report()
    // nothing tracked: the release, not the drain, waited for it
    expect(report.inFlight).toEqual({ atDrainStart: 0, atDrainEnd: 0 })
    const release = report.releases.find((r) => r.name === "mysql")!
    expect(release.outcome).toBe("released")
    expect(release.durationMs).toBeGreaterThan(1000)
    const left = await settledConnectionsLeft()
    expect(left).toBe(0)
    console.log(
      `[measured] mysql: untracked transaction open at SIGTERM committed; the release waited ${
        Math.round(release.durationMs)
      } ms for it; exit ${exit.code} after ${exit.at - sent} ms, connections left ${left}`
    )
  })

  it("a query still running at the end of the release slice is killed with KILL QUERY and reported; exit 1; no connection is left", async () => {
    const service = run({
      MYSQL_MODE: "stuck",
      MYSQL_RELEASE_TIMEOUT: "2 seconds",
      MYSQL_KILL_GRACE: "500 millis",
      SHUTDOWN_TIMEOUT: "6 seconds"
    })
    await service.waitFor("query-started")
    const [active] = await admin.query<Array<mysql.RowDataPacket>>(
      "SELECT COMMAND, INFO FROM information_schema.processlist WHERE USER = ? AND INFO LIKE 'SELECT SLEEP%'",
      [user]
    )
    expect(active.map((row) => `${row.COMMAND}: ${row.INFO}`)).toEqual(["Query: SELECT SLEEP(60)"])
    const { exit, sent } = await sigterm(service)
    const elapsed = exit.at - sent
    expect(exit.code, service.output()).toBe(1)
    // the client saw its query stopped early (MariaDB: SLEEP returns 1; MySQL: ER_QUERY_INTERRUPTED)
    expect(
      service.has("query-finished-interrupted") || service.has("query-failed-ER_QUERY_INTERRUPTED"),
      service.output()
    ).toBe(true)
    const release = service.report().releases.find((r) => r.name === "mysql")!
    expect(release.outcome).toBe("failed")
    expect(release.error).toContain("killed 1 query still running at the end of the release slice")
    expect(release.error).toContain("SELECT SLEEP(60)")
    // killed 1.5 s into its 2 s slice, then the pool ended
    expect(release.durationMs).toBeGreaterThanOrEqual(1450)
    expect(release.durationMs).toBeLessThan(2250)
    expect(service.output()).toContain("killed a query still running at the end of the release slice")
    const left = await settledConnectionsLeft()
    expect(left).toBe(0)
    console.log(
      `[measured] mysql: query past its slice (2 s, grace 500 ms) killed after ${
        Math.round(release.durationMs)
      } ms of release, exit ${exit.code} after ${elapsed} ms, connections left ${left}`
    )
  })

  it("a connection leaked with an open transaction is destroyed at the end of the slice, rolled back, reported", async () => {
    const service = run({ MYSQL_MODE: "leak", MYSQL_RELEASE_TIMEOUT: "1 second", MYSQL_KILL_GRACE: "400 millis" })
    await service.waitFor("leaked")
    const { exit, sent } = await sigterm(service)
    expect(exit.code, service.output()).toBe(1)
    const release = service.report().releases.find((r) => r.name === "mysql")!
    expect(release.outcome).toBe("failed")
    expect(release.error).toContain("destroyed 1 checked-out connection(s)")
    expect(release.error).not.toContain("did not end")
    expect(await steps()).toEqual([])
    const left = await settledConnectionsLeft()
    expect(left).toBe(0)
    console.log(
      `[measured] mysql: leaked connection with an open transaction destroyed after ${
        Math.round(release.durationMs)
      } ms of a 1 s slice, rolled back, exit ${exit.code} after ${exit.at - sent} ms, connections left ${left}`
    )
  })

  it("a tracked query cut at the drain deadline is killed on the server at once", async () => {
    const service = run({ MYSQL_MODE: "cut", SHUTDOWN_DRAIN_TIMEOUT: "500 millis", SHUTDOWN_TIMEOUT: "10 seconds" })
    await service.waitFor("query-started")
    const { exit, sent } = await sigterm(service)
    expect(exit.code, service.output()).toBe(1)
    const report = service.report()
    expect(report.cut.map((c) => `${c.kind} ${c.label}`)).toEqual(["job report"])
    // the pool did not wait out its slice: the query was killed at the cut
    expect(report.releases.map((r) => `${r.name}:${r.outcome}`)).toEqual(["mysql:released"])
    expect(exit.at - sent).toBeLessThan(2500)
    const left = await settledConnectionsLeft()
    expect(left).toBe(0)
    console.log(
      `[measured] mysql: tracked query cut at the drain deadline (500 ms), killed, exit ${exit.code} after ${
        exit.at - sent
      } ms, connections left ${left}`
    )
  })

  it("readiness: ping answers on a live server and fails with MysqlPingError on a dead one", async () => {
    const live = mysql.createPool({ host: "127.0.0.1", port: 3306, user: "root", database: "test" })
    const dead = mysql.createPool({ host: "127.0.0.1", port: 1, user: "root" })
    try {
      expect(await Effect.runPromiseExit(Mysql.ping(live, { timeout: "2 seconds" }))).toEqual(Exit.void)
      const error = await Effect.runPromise(Effect.flip(Mysql.ping(dead, { name: "db", timeout: "2 seconds" })))
      expect(error._tag).toBe("MysqlPingError")
      expect(error.message).toContain("db: ping failed")
    } finally {
      await live.end()
      await dead.end()
    }
  })
})
