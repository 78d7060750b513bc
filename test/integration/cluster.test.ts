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
// CLUSTER_IT_RESTARTS: more restarts for a by-hand soak (CI runs 3).
const RESTARTS = Number(process.env.CLUSTER_IT_RESTARTS ?? "3")
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

/**
 * What happened to each key lost or applied twice, for the failure message:
 * its stored messages (kind 0 request, 1 ack, 2 interrupt) and their
 * replies, the client's summary, and the runners' handoff lines.
 */
const trail = async (
  sent: number,
  clientOutput: string,
  all: ReadonlyArray<H.Runner>,
  restarts: ReadonlyArray<string>
) => {
  const { rows: keys } = await db.query<{ key: string; n: number }>(
    `SELECT 'it-' || g.n AS key, (SELECT count(*)::int FROM account_increments WHERE key = 'it-' || g.n) AS n
     FROM generate_series(0, $1::int - 1) AS g(n)
     WHERE (SELECT count(*) FROM account_increments WHERE key = 'it-' || g.n) <> 1`,
    [sent]
  )
  const lines: Array<string> = [`client: ${/^summary .*$/m.exec(clientOutput)?.[0] ?? clientOutput.slice(-2000)}`]
  for (const { key, n } of keys) {
    lines.push(`key ${key}: ${n} rows`)
    const { rows: messages } = await db.query(
      `SELECT m.id, m.request_id, m.kind, m.tag, m.shard_id, m.entity_id, m.processed, m.last_read, m.deliver_at,
              m.reply_id, m.last_reply_id
       FROM cluster_messages m
       WHERE m.payload LIKE $1 OR m.request_id IN (SELECT request_id FROM cluster_messages WHERE payload LIKE $1)
       ORDER BY m.rowid`,
      [`%"${key}"%`]
    )
    for (const message of messages) lines.push(`  message ${JSON.stringify(message)}`)
    const { rows: replies } = await db.query(
      `SELECT r.id, r.request_id, r.kind, r.payload FROM cluster_replies r
       WHERE r.request_id IN (SELECT request_id FROM cluster_messages WHERE payload LIKE $1) ORDER BY r.rowid`,
      [`%"${key}"%`]
    )
    for (const reply of replies) lines.push(`  reply ${JSON.stringify(reply)}`)
    const { rows: applied } = await db.query(`SELECT * FROM account_increments WHERE key = $1`, [key])
    for (const row of applied) lines.push(`  applied ${JSON.stringify(row)}`)
  }
  for (const runner of all) {
    // The handoff line and its annotations (one per line, up to the closing brace).
    const handoff = /^.*cluster handoff \{[^}]*\}/m.exec(runner.output)?.[0]
    lines.push(`runner ${runner.port}: ${handoff?.replace(/\s+/g, " ") ?? "(no handoff line)"}`)
  }
  lines.push(...restarts)
  return lines.join("\n")
}

describe("Cluster runners, rolling restart on Postgres", () => {
  it(
    `${RESTARTS} SIGTERM restarts under load: 0 persisted messages lost or applied twice, every runner exits 0`,
    async () => {
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
      const restarts: Array<string> = []
      for (let i = 0; i < RESTARTS; i++) {
        const slot = i % slots.length
        const old = slots[slot]!
        restarts.push(`${new Date().toISOString()} SIGTERM runner ${old.port}`)
        old.child.kill("SIGTERM")
        const exit = await old.exited
        exits.push(exit.code)
        const replacement = H.startRunner({ database, port: old.port, mode: "graceful", shards: SHARDS })
        runners.push(replacement)
        slots[slot] = replacement
        await H.waitFor(`replacement ${old.port} holds shards`, holdsShards(old.port), 120_000)
        await H.waitFor("all shards held", allHeld, 30_000)
        expect(old.output).toContain("cluster handoff")
        expect(old.output).toContain("exit 0")
      }

      client.kill("SIGUSR2")
      await clientExited
      const summary = JSON.parse(/^summary (.*)$/m.exec(clientOutput)![1]!) as { persisted: { sent: number } }
      const sent = summary.persisted.sent
      console.log(`[measured] cluster: ${RESTARTS} restarts, client ${/^summary (.*)$/m.exec(clientOutput)![1]}`)
      expect(sent).toBeGreaterThan(500)

      // Settle: no stored request left unprocessed.
      await H.waitFor(
        "stored requests processed",
        async () =>
          Number(
            (await db.query(`SELECT count(*) AS n FROM cluster_messages WHERE processed = false AND kind = 0`)).rows[0]
              .n
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
      if (lost > 0 || twice > 0) console.log(await trail(sent, clientOutput, runners, restarts))
      expect({ sent, rows, lost, twice }).toEqual({ sent, rows: sent, lost: 0, twice: 0 })
      expect(exits).toEqual(Array(RESTARTS).fill(0))
    },
    300_000 + RESTARTS * 30_000
  )
})
