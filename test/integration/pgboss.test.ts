import { Effect, Fiber } from "effect"
import pg from "pg"
import { PgBoss } from "pg-boss"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import * as Adapter from "../../src/adapters/PgBoss.ts"
import { Graceful } from "../../src/index.ts"
import * as GracefulTest from "../../src/testing.ts"
import { type Fixture, start, uniqueName } from "./harness.ts"
import {
  DRAIN_MS,
  jobs,
  recordFigures,
  ROUND_TIMEOUT,
  runQueueRounds,
  shutdownEnv,
  type Store,
  summary,
  TOTAL
} from "./queueRounds.ts"

/**
 * Long jobs take 1.5 s here, not 700 ms: `boss.stop()` waits at least 1 s
 * whatever its `timeout`, so by hand only a job longer than that is cut.
 * Ours cuts at the same 250 ms drain as the other brokers.
 */
const LONG_MS = 1500
const connectionString = "postgres://postgres@127.0.0.1:5432/test"
const db = new pg.Pool({ connectionString, max: 2 })
const schemas: Array<string> = []
let running: Array<Fixture> = []

beforeAll(async () => {
  await db.query("SELECT 1")
})
afterEach(() => {
  for (const child of running) child.cleanup()
  running = []
})
afterAll(async () => {
  for (const schema of schemas) await db.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)
  await db.end()
})

/** pg-boss in a schema of its own, the 1,000 jobs in queue `jobs`, and the handlers' record tables beside it. */
const fill = async (mode: string) => {
  const schema = uniqueName(`queues_pgboss_${mode}`)
  const records = `${schema}_records`
  schemas.push(schema, records)
  await db.query(`CREATE SCHEMA "${records}"`)
  await db.query(`CREATE TABLE "${records}".starts (id int NOT NULL, proc int NOT NULL, at bigint NOT NULL)`)
  await db.query(`CREATE TABLE "${records}".done (id int NOT NULL, proc int NOT NULL)`)
  const boss = new PgBoss({ connectionString, schema, supervise: false, schedule: false })
  boss.on("error", () => {})
  await boss.start()
  await boss.createQueue("jobs")
  // One send per job, so each has a created_on of its own (one `insert` gives
  // all the same one): a job made available again keeps its place, ahead of
  // every job created after it.
  const all = jobs(LONG_MS)
  for (let i = 0; i < all.length; i += 50) {
    await Promise.all(all.slice(i, i + 50).map((job) => boss.send("jobs", job)))
  }
  await boss.stop({ graceful: false })
  const store: Store = {
    starts: async () =>
      (await db.query<{ id: number; proc: number; at: string }>(`SELECT id, proc, at FROM "${records}".starts`)).rows
        .map((row) => ({ id: row.id, proc: row.proc, at: Number(row.at) })),
    dones: async () => (await db.query<{ id: number; proc: number }>(`SELECT id, proc FROM "${records}".done`)).rows,
    idle: async () =>
      Number(
        (await db.query(
          `SELECT count(*) AS n FROM "${schema}".job WHERE name = 'jobs' AND state IN ('created', 'retry', 'active')`
        ))
          .rows[0].n
      ) === 0
  }
  const counted = async () => {
    const { rows } = await db.query(
      `SELECT count(*) FILTER (WHERE retry_count > 0) AS retried, count(*) FILTER (WHERE state = 'failed') AS failed,
              count(*) FILTER (WHERE state = 'completed') AS completed
       FROM "${schema}".job WHERE name = 'jobs'`
    )
    return { retried: Number(rows[0].retried), failed: Number(rows[0].failed), completed: Number(rows[0].completed) }
  }
  return { schema, records, store, counted }
}

const run = (mode: "ours" | "hand", schema: string, records: string) => (proc: number) => {
  const child = start("pgboss-worker.ts", {
    ...shutdownEnv,
    PGBOSS_MODE: mode,
    PGBOSS_SCHEMA: schema,
    PGBOSS_RECORDS: records,
    PROC: String(proc),
    DRAIN_MS: String(DRAIN_MS),
    CONCURRENCY: "2"
  })
  running.push(child)
  return child
}

describe("pg-boss worker, real Postgres, real signals", () => {
  it(
    "1,000 jobs, 10 SIGTERMs mid-flight: none lost, none completed twice, every cut job available again at once, no attempt counted",
    async () => {
      const { counted, records, schema, store } = await fill("ours")
      const result = await runQueueRounds({
        start: run("ours", schema, records),
        store,
        ours: true,
        finalWaitMs: 60_000
      })
      for (const round of result.rounds) {
        expect(round.exit, result.output()).toBe(round.cut!.length === 0 ? 0 : 1)
        expect(round.releases!.filter((r) => !r.endsWith(":released"))).toEqual([])
      }
      const reportedCuts = result.rounds.flatMap((r) => r.cut!)
      // where a job never completed is in pg-boss's table (still queued, active, failed): for the failure message
      const lostRows = result.lost.length === 0 ? [] : (await db.query(
        `SELECT data->>'id' AS id, state, retry_count, started_on FROM "${schema}".job WHERE name = 'jobs' AND (data->>'id')::int = ANY($1)`,
        [result.lost]
      )).rows
      expect(result.lost, JSON.stringify(lostRows)).toEqual([])
      expect(result.completedTwice).toEqual([])
      expect(result.cut).toBeGreaterThan(0)
      expect(reportedCuts.length).toBe(result.cut)
      expect(reportedCuts.every((label) => /^jobs [0-9a-f-]{36}$/.test(label))).toBe(true)
      expect(result.redelivered).toBe(result.cut)
      // the next poll (500 ms) takes it: well under a second
      expect(Math.max(...result.rerunDelays)).toBeLessThan(1000)
      // from pg-boss's own table: every job completed, none counted a retry
      expect(await counted()).toEqual({ retried: 0, failed: 0, completed: TOTAL })
      const figures = { ...summary(result), ...await counted() }
      recordFigures("pg-boss", "ours", figures)
      console.log(`[measured] pg-boss ours: ${JSON.stringify(figures)}`)
    },
    ROUND_TIMEOUT
  )

  // The by-hand baseline (the lock-expiry wait) is a comparison, not a
  // property of the adapter: `npm run bench:queues` runs it beside ours
  // (QUEUES_BY_HAND=1) and writes bench/results/queues.json; .ci/run runs
  // only ours, to stay within its time.
  it.runIf(process.env.QUEUES_BY_HAND === "1")(
    "the same rounds with boss.stop() by hand: a cut job runs again only after stop()'s own timer (at least 1 s)",
    async () => {
      const { counted, records, schema, store } = await fill("hand")
      const result = await runQueueRounds({
        start: run("hand", schema, records),
        store,
        ours: false,
        finalWaitMs: 30_000
      })
      const figures = { ...summary(result), ...await counted() }
      recordFigures("pg-boss", "by hand", figures)
      console.log(`[measured] pg-boss by hand: ${JSON.stringify(figures)}`)
      expect(result.cut).toBeGreaterThan(0)
      // stop() holds a job it gave up on until its timeout (1 s minimum) ends, past the 250 ms drain
      expect(Math.min(...result.rerunDelays)).toBeGreaterThan(1000 - DRAIN_MS - 100)
    },
    ROUND_TIMEOUT
  )
})

describe("pg-boss adapter in one process, real Postgres", () => {
  it("a job cut at the deadline is available again at once (created, no attempt counted), the worker released before the instance", async () => {
    const schema = uniqueName("queues_pgboss_cut")
    schemas.push(schema)
    let started = () => {}
    const startedOnce = new Promise<void>((resolve) => (started = resolve))
    const report = await Effect.runPromise(
      Effect.gen(function*() {
        const fiber = yield* Effect.forkChild(Graceful.run(
          Effect.gen(function*() {
            const boss = yield* Adapter.start({ options: { connectionString, schema } })
            yield* Effect.promise(() => boss.boss.createQueue("jobs"))
            yield* Effect.promise(() => boss.boss.send("jobs", { ms: 60_000 }))
            yield* Adapter.work<{ readonly ms: number }, never>({
              boss,
              queue: "jobs",
              pollInterval: "100 millis",
              handler: (job) => Effect.andThen(Effect.sync(() => started()), Effect.sleep(job.data.ms))
            })
            return yield* Effect.never
          }),
          { timeout: "10 seconds", drainTimeout: "300 millis" }
        ))
        yield* Effect.promise(() => startedOnce)
        yield* GracefulTest.send("SIGTERM")
        return yield* Fiber.join(fiber)
      }).pipe(Effect.provide(GracefulTest.layer))
    )
    const { rows } = await db.query(
      `SELECT id, state, retry_count, started_on, start_after <= now() AS available FROM "${schema}".job WHERE name = 'jobs'`
    )
    expect(rows).toEqual([{
      id: expect.any(String),
      state: "created",
      retry_count: 0,
      started_on: null,
      available: true
    }])
    expect(report.cut).toEqual([{ kind: "job", label: `jobs ${rows[0].id}`, ageMs: expect.any(Number) }])
    // the worker's loops end before pg-boss stops and closes its pool
    expect(report.releases.map((r) => `${r.name}:${r.outcome}`)).toEqual(["pg-boss jobs:released", "pg-boss:released"])
  })
})
