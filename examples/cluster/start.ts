/**
 * Starts the example's sharded service: a database of its own on the local
 * Postgres (CLUSTER_ADMIN_URL, default postgres://postgres@127.0.0.1:5432/postgres),
 * then 3 runners on loopback, one at a time. Prints each runner's HTTP port.
 * Ctrl-C stops the runners (SIGTERM: each hands its shards off) and drops
 * the database.
 *
 *   node examples/cluster/start.ts
 *   curl -X POST 'http://127.0.0.1:<port>/increment?account=alice&key=k1'
 */
import pg from "pg"
import { freePort } from "../../bench/support/ports.ts"
import * as H from "./harness.ts"

const database = await H.createDatabase("cluster_example")
const db = new pg.Client({ connectionString: H.databaseUrl(database) })
await db.connect()
const runners: Array<H.Runner> = []
const stop = async () => {
  for (const runner of runners) runner.child.kill("SIGTERM")
  const exits = await Promise.all(runners.map((runner) => runner.exited))
  console.log(`runners exited: ${exits.map((exit) => exit.code ?? exit.signal).join(", ")}`)
  const rows = await db.query(`SELECT count(*) AS n FROM account_increments`)
  console.log(`account_increments: ${rows.rows[0].n} rows`)
  await db.end()
  await H.dropDatabase(database)
  console.log(`dropped database ${database}`)
}
process.once("SIGINT", () => void stop().then(() => process.exit(0)))
try {
  for (let i = 0; i < 3; i++) {
    const runner = H.startRunner({
      database,
      port: await freePort(),
      mode: (process.env.MODE as "plain" | undefined) ?? "graceful"
    })
    runners.push(runner)
    runner.child.stdout!.pipe(process.stdout)
    await H.waitFor(
      `runner ${runner.port} holds shards`,
      async () => [...(await H.shardOwners(db, database)).values()].includes(`runner-${runner.port}`),
      60_000
    )
  }
  for (const runner of runners) {
    console.log(`runner-${runner.port}: http://127.0.0.1:${await runner.httpPort}`)
  }
  console.log(`database ${database}; Ctrl-C to stop`)
} catch (error) {
  console.error(error)
  await stop()
  process.exit(1)
}
