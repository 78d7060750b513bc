/**
 * Effect Cluster runners under effect-graceful (examples/cluster/runner.ts,
 * `effect-graceful/Cluster`) on this machine's Postgres: 3 runners as child
 * processes on loopback, a client-only cluster client sending persisted
 * `Increment`s (bench/cluster/client.ts), 3 rolling restarts by SIGTERM.
 * Every key the client sent has exactly one row in the entity table (none
 * lost, none applied twice), and every runner exits 0.
 */
import { spawn } from "node:child_process"
import { join } from "node:path"
import pg from "pg"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { freePort } from "../../bench/support/ports.ts"
import * as H from "../../examples/cluster/harness.ts"

const SHARDS = 30
const RESTARTS = 3
const root = join(import.meta.dirname, "..", "..")

let database = ""
let db: pg.Client
const runners: Array<H.Runner> = []

const owners = () => H.shardOwners(db, database)
const holdsShards = (port: number) => async () => [...(await owners()).values()].includes(`runner-${port}`)
const allHeld = async () => (await owners()).size === SHARDS

beforeAll(async () => {
  database = await H.createDatabase("cluster_it")
  db = new pg.Client({ connectionString: H.databaseUrl(database) })
  await db.connect()
})

afterAll(async () => {
  for (const runner of runners) {
    if (runner.child.exitCode === null && runner.child.signalCode === null) runner.child.kill("SIGKILL")
  }
  await Promise.all(runners.map((runner) => runner.exited))
  await db?.end()
  if (database !== "") await H.dropDatabase(database)
})

describe("Cluster runners, rolling restart on Postgres", () => {
  it("3 SIGTERM restarts under load: 0 persisted messages lost or applied twice, every runner exits 0", async () => {
    const slots: Array<H.Runner> = []
    for (let i = 0; i < 3; i++) {
      const runner = H.startRunner({ database, port: await freePort(), mode: "graceful", shards: SHARDS })
      runners.push(runner)
      slots.push(runner)
      // One at a time: the first runs the storage migrations.
      await H.waitFor(`runner ${runner.port} holds shards`, holdsShards(runner.port), 60_000)
    }
    await H.waitFor("all shards held", allHeld, 30_000)

    const client = spawn(process.execPath, [join(root, "bench", "cluster", "client.ts")], {
      env: {
        ...process.env,
        DATABASE_URL: H.databaseUrl(database),
        RUN_ID: "it",
        PERSISTED_RATE: "100",
        VOLATILE_RATE: "20",
        SHARDS: String(SHARDS)
      },
      stdio: ["ignore", "pipe", "pipe"]
    })
    let clientOutput = ""
    const sending = new Promise<void>((resolve) =>
      client.stdout.on("data", (chunk: Buffer) => {
        clientOutput += chunk.toString()
        if (clientOutput.includes("sending")) resolve()
      })
    )
    client.stderr.on("data", (chunk: Buffer) => (clientOutput += chunk.toString()))
    const clientExited = new Promise<void>((resolve) => client.once("exit", () => resolve()))
    await sending
    await H.sleep(1_000)

    const exits: Array<number | null> = []
    for (let i = 0; i < RESTARTS; i++) {
      const old = slots[i]!
      old.child.kill("SIGTERM")
      const exit = await old.exited
      exits.push(exit.code)
      const replacement = H.startRunner({ database, port: old.port, mode: "graceful", shards: SHARDS })
      runners.push(replacement)
      slots[i] = replacement
      await H.waitFor(`replacement ${old.port} holds shards`, holdsShards(old.port), 120_000)
      await H.waitFor("all shards held", allHeld, 30_000)
      expect(old.output).toContain("cluster handoff")
      expect(old.output).toContain("exit 0")
    }

    client.kill("SIGUSR2")
    await clientExited
    const summary = JSON.parse(/^summary (.*)$/m.exec(clientOutput)![1]!) as { persisted: { sent: number } }
    const sent = summary.persisted.sent
    expect(sent).toBeGreaterThan(500)

    // Settle: no stored request left unprocessed.
    await H.waitFor(
      "stored requests processed",
      async () =>
        Number(
          (await db.query(`SELECT count(*) AS n FROM cluster_messages WHERE processed = false AND kind = 0`)).rows[0].n
        ) === 0,
      30_000
    )

    const lost = Number(
      (await db.query(
        `SELECT count(*) AS n FROM generate_series(0, $1::int - 1) AS g(n)
       WHERE NOT EXISTS (SELECT 1 FROM account_increments WHERE key = 'it-' || g.n)`,
        [sent]
      )).rows[0].n
    )
    const twice = Number(
      (await db.query(
        `SELECT count(*) AS n FROM (SELECT key FROM account_increments GROUP BY key HAVING count(*) > 1) AS t`
      )).rows[0].n
    )
    const rows = Number((await db.query(`SELECT count(*) AS n FROM account_increments`)).rows[0].n)
    expect({ sent, rows, lost, twice }).toEqual({ sent, rows: sent, lost: 0, twice: 0 })
    expect(exits).toEqual(Array(RESTARTS).fill(0))
  }, 300_000)
})
