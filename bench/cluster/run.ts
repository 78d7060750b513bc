/**
 * `npm run bench:cluster`: rolling restarts of Effect Cluster runners under
 * load, effect-graceful's lifecycle (`effect-graceful/Cluster`) against
 * Effect's plain `NodeRuntime.runMain`, in one run, on the same service
 * (examples/cluster/runner.ts) and the same Postgres.
 *
 * Per variant: a database of its own; 3 runners on loopback
 * (`NodeClusterSocket`, SQL runner and message storage); a client-only
 * cluster client sending persisted `Increment`s (PERSISTED_RATE, default
 * 200/s) and volatile `Ping`s (50/s) to 100 entities; RESTARTS (default 10)
 * times: SIGTERM one runner, wait for its exit, start its replacement on the
 * same address, wait until it holds shards. Then the client stops, the
 * cluster settles, and the entity table is read: a key the client sent with
 * no row is lost, a key with two rows was processed twice. Shard ownership
 * is read every 25 ms from Postgres' advisory locks (the shard locks):
 * each interval a shard had no owner is a gap. Last, a crash: one runner
 * SIGKILLed, time until its shards are held again.
 *
 * VARIANTS (comma-separated keys) picks variants: by default `plain`,
 * `closing` and `graceful`; `refresh3s` (effect-graceful with Effect's own
 * `refreshAssignmentsInterval`, 3 s, instead of `Cluster.layer`'s 1 s) runs
 * only when asked.
 *
 * Writes bench/results/cluster.json (OUT to write elsewhere).
 */
import { type ChildProcess, spawn } from "node:child_process"
import { writeFileSync } from "node:fs"
import { constants } from "node:os"
import { join } from "node:path"
import pg from "pg"
import * as H from "../../examples/cluster/harness.ts"
import { freePort } from "../support/ports.ts"

const RESTARTS = Number(process.env.RESTARTS ?? "10")
const PERSISTED_RATE = Number(process.env.PERSISTED_RATE ?? "200")
const VOLATILE_RATE = Number(process.env.VOLATILE_RATE ?? "50")
const SHARDS = 30
const CRASH = process.env.CRASH !== "false"
const OUT = process.env.OUT ?? join(import.meta.dirname, "..", "results", "cluster.json")

type Mode = "graceful" | "plain"

interface Variant {
  readonly key: string
  readonly name: string
  readonly mode: Mode
  readonly env?: Record<string, string>
}

const HTTP_RATE = Number(process.env.HTTP_RATE ?? "20")
const HTTP_WORK_MS = 200

/**
 * HTTP load on the runners' fronts: `POST /increment` with 200 ms of work
 * before the entity call, so that requests are in flight at each SIGTERM.
 * A refused connection (a listener already closed) is retried on the next
 * runner; any other failure, or a non-200 answer, is a failure the user saw.
 */
const httpLoad = (key: string, runners: () => ReadonlyArray<H.Runner>) => {
  const stats = { sent: 0, ok: 0, failed: {} as Record<string, number> }
  const okKeys: Array<string> = []
  let running = true
  let n = 0
  const inFlight = new Set<Promise<void>>()
  const send = async (id: string, attempt: number): Promise<void> => {
    const list = runners()
    const runner = list[(n + attempt) % list.length]!
    const port = await runner.httpPort
    try {
      const response = await fetch(
        `http://127.0.0.1:${port}/increment?account=a${n % 100}&key=${id}&ms=${HTTP_WORK_MS}`,
        { method: "POST" }
      )
      await response.text()
      if (response.status === 200) {
        stats.ok++
        okKeys.push(id)
      } else stats.failed[`HTTP ${response.status}`] = (stats.failed[`HTTP ${response.status}`] ?? 0) + 1
    } catch (error) {
      const code = (error as { cause?: { code?: string } }).cause?.code ?? "fetch failed"
      if (code === "ECONNREFUSED" && attempt < 3) return send(id, attempt + 1)
      stats.failed[code] = (stats.failed[code] ?? 0) + 1
    }
  }
  const loop = (async () => {
    while (running) {
      const id = `${key}-http-${n++}`
      stats.sent++
      const promise = send(id, 0).finally(() => inFlight.delete(promise))
      inFlight.add(promise)
      await H.sleep(1000 / HTTP_RATE)
    }
  })()
  return {
    stats,
    okKeys,
    stop: async () => {
      running = false
      await loop
      await Promise.all(inFlight)
    }
  }
}

const percentile = (values: ReadonlyArray<number>, p: number): number => {
  if (values.length === 0) return 0
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!
}

const exitCodeOf = (exit: { readonly code: number | null; readonly signal: NodeJS.Signals | null }) =>
  exit.code ?? 128 + (exit.signal === null ? 0 : constants.signals[exit.signal])

/** Watches who holds each shard; records each interval a shard had no owner. */
const watchShards = async (database: string) => {
  const client = new pg.Client({ connectionString: H.databaseUrl(database) })
  await client.connect()
  const unownedSince = new Map<number, number>()
  const gaps: Array<number> = []
  let owners = new Map<number, string>()
  const shardIds = new Set<number>()
  let measuring = false
  let running = true
  const loop = (async () => {
    while (running) {
      owners = await H.shardOwners(client, database)
      const now = performance.now()
      for (const shard of owners.keys()) shardIds.add(shard)
      for (const shard of shardIds) {
        const held = owners.has(shard)
        const since = unownedSince.get(shard)
        if (!held && since === undefined) unownedSince.set(shard, now)
        if (held && since !== undefined) {
          unownedSince.delete(shard)
          if (measuring) gaps.push(now - since)
        }
      }
      await H.sleep(25)
    }
  })()
  return {
    owners: () => owners,
    gaps,
    start: () => {
      measuring = true
      unownedSince.clear()
    },
    stop: async () => {
      running = false
      await loop
      await client.end()
    }
  }
}

const startClient = (database: string, runId: string) => {
  const child: ChildProcess = spawn(process.execPath, [join(import.meta.dirname, "client.ts")], {
    env: {
      ...process.env,
      DATABASE_URL: H.databaseUrl(database),
      RUN_ID: runId,
      PERSISTED_RATE: String(PERSISTED_RATE),
      VOLATILE_RATE: String(VOLATILE_RATE),
      SHARDS: String(SHARDS)
    },
    stdio: ["ignore", "pipe", "pipe"]
  })
  let output = ""
  const sending = new Promise<void>((resolve) => {
    child.stdout!.on("data", (chunk: Buffer) => {
      output += chunk.toString()
      if (output.includes("sending")) resolve()
    })
  })
  child.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()))
  const summary = new Promise<Summary>((resolve, reject) =>
    child.once("exit", () => {
      const match = /^summary (.*)$/m.exec(output)
      if (match) resolve(JSON.parse(match[1]!) as Summary)
      else reject(new Error(`client: no summary\n${output.slice(-3000)}`))
    })
  )
  return { child, sending, summary }
}

interface Summary {
  readonly persisted: { readonly sent: number; readonly ok: number; readonly failed: Record<string, number> }
  readonly volatile: { readonly sent: number; readonly ok: number; readonly failed: Record<string, number> }
  readonly outstanding: number
}

const startCluster = async (
  database: string,
  mode: Mode,
  ports: ReadonlyArray<number>,
  watch: { owners: () => Map<number, string> },
  env: Record<string, string> | undefined
) => {
  const runners: Array<H.Runner> = []
  for (const port of ports) {
    const runner = H.startRunner({ database, port, mode, shards: SHARDS, env: env ?? {} })
    runners.push(runner)
    // One at a time: the first runs the storage migrations.
    await H.waitFor(
      `runner ${port} holds shards`,
      async () => [...watch.owners().values()].includes(`runner-${port}`),
      60_000
    )
      .catch((error) => {
        throw new Error(`${String(error)}\n${runner.output.slice(-3000)}`)
      })
  }
  await H.waitFor("all shards held", async () => watch.owners().size === SHARDS, 60_000)
  return runners
}

const variant = async ({ key, name, mode, env }: Variant, crash: boolean) => {
  console.log(`\n== ${name}`)
  const database = await H.createDatabase(`cluster_bench_${key}`)
  const watch = await watchShards(database)
  const ports = [await freePort(), await freePort(), await freePort()]
  const exitCodes: Array<number> = []
  const sigtermToExit: Array<number> = []
  let crashRow: Record<string, unknown> | undefined
  let runners: Array<H.Runner> = []
  try {
    runners = await startCluster(database, mode, ports, watch, env)
    const client = startClient(database, key)
    const http = httpLoad(key, () => runners)
    await client.sending
    watch.start()
    await H.sleep(3_000)
    for (let i = 0; i < RESTARTS; i++) {
      const slot = i % runners.length
      const old = runners[slot]!
      const at = performance.now()
      old.child.kill("SIGTERM")
      const exit = await old.exited
      exitCodes.push(exitCodeOf(exit))
      sigtermToExit.push(exit.at - at)
      const replacement = H.startRunner({ database, port: old.port, mode, shards: SHARDS, env: env ?? {} })
      runners[slot] = replacement
      await H.waitFor(
        `replacement ${old.port} holds shards`,
        async () => [...watch.owners().values()].includes(`runner-${old.port}`),
        60_000
      ).catch((error) => {
        throw new Error(`${String(error)}\n${replacement.output.slice(-3000)}`)
      })
      await H.waitFor("all shards held", async () => watch.owners().size === SHARDS, 60_000)
      console.log(
        `restart ${i + 1}/${RESTARTS}: exit ${exitCodes.at(-1)} after ${Math.round(sigtermToExit.at(-1)!)} ms; ` +
          `replacement holds shards ${Math.round(performance.now() - at)} ms after SIGTERM`
      )
      if (exit.at - at > 3_000) {
        // A slow exit: what the runner said about its shutdown.
        const lines = old.output.split("\n").filter((line) => /shutdown|handoff|released|cut|WARN|ERROR/.test(line))
        console.log(`  slow exit, runner ${old.port}:\n  ${lines.slice(-12).join("\n  ")}`)
      }
      await H.sleep(1_000)
    }
    await H.sleep(2_000)
    await http.stop()
    client.child.kill("SIGUSR2")
    const summary = await client.summary
    // Settle: every stored request processed, the table unchanged for 2 s.
    const db = new pg.Client({ connectionString: H.databaseUrl(database) })
    await db.connect()
    let last = -1
    let stableSince = performance.now()
    const settleDeadline = performance.now() + 60_000
    while (performance.now() < settleDeadline) {
      const rows = Number((await db.query(`SELECT count(*) AS n FROM account_increments`)).rows[0].n)
      const pending = Number(
        (await db.query(`SELECT count(*) AS n FROM cluster_messages WHERE processed = false AND kind = 0`)).rows[0].n
      )
      if (rows !== last) {
        last = rows
        stableSince = performance.now()
      }
      if (pending === 0 && performance.now() - stableSince > 2_000) break
      await H.sleep(250)
    }
    const sent = summary.persisted.sent
    const lost = Number(
      (await db.query(
        `SELECT count(*) AS n FROM generate_series(0, $1::int - 1) AS g(n)
       WHERE NOT EXISTS (SELECT 1 FROM account_increments WHERE key = $2 || '-' || g.n)`,
        [sent, key]
      )).rows[0].n
    )
    // HTTP requests answered 200 whose row is missing.
    const httpLost = Number(
      (await db.query(
        `SELECT count(*) AS n FROM unnest($1::text[]) AS k(key)
       WHERE NOT EXISTS (SELECT 1 FROM account_increments a WHERE a.key = k.key)`,
        [http.okKeys]
      )).rows[0].n
    )
    const processedTwice = Number(
      (await db.query(
        `SELECT count(*) AS n FROM (SELECT key FROM account_increments GROUP BY key HAVING count(*) > 1) AS twice`
      )).rows[0].n
    )
    await db.end()
    // The restarts' gaps, before the crash adds its own.
    const gaps = [...watch.gaps]
    if (crash) {
      // A crash: SIGKILL one runner; its shards are free in Postgres at once
      // (the session ends), but the others take them only once the cluster
      // no longer counts the dead runner.
      const victim = runners[0]!
      const victimName = `runner-${victim.port}`
      const itsShards = [...watch.owners()].filter(([, owner]) => owner === victimName).map(([shard]) => shard)
      const at = performance.now()
      victim.child.kill("SIGKILL")
      await victim.exited
      let servedAgainMs: number | null = null
      try {
        await H.waitFor("the crashed runner's shards held again", async () => {
          const owners = watch.owners()
          return itsShards.every((shard) => owners.has(shard) && owners.get(shard) !== victimName)
        }, 90_000)
        servedAgainMs = Math.round(performance.now() - at)
      } catch {
        servedAgainMs = null
      }
      crashRow = {
        name: "crash",
        runtime: name,
        shards: itsShards.length,
        servedAgainMs,
        gracefulHandoffShardUnownedMaxMs: Math.round(Math.max(0, ...gaps))
      }
      console.log(`crash: ${itsShards.length} shards served again after ${servedAgainMs} ms`)
    }
    const row = {
      name,
      restarts: exitCodes.length,
      persisted: {
        sent,
        lost,
        processedTwice,
        clientSaw: { ok: summary.persisted.ok, failed: summary.persisted.failed }
      },
      http: { sent: http.stats.sent, ok: http.stats.ok, failed: http.stats.failed, answeredButLost: httpLost },
      volatile: {
        sent: summary.volatile.sent,
        failed: Object.values(summary.volatile.failed).reduce((a, b) => a + b, 0),
        failureKinds: summary.volatile.failed
      },
      shardUnownedMs: {
        p50: Math.round(percentile(gaps, 50)),
        max: Math.round(Math.max(0, ...gaps)),
        gaps: gaps.length
      },
      exitCodes: [...new Set(exitCodes)].map((code) => ({ code, count: exitCodes.filter((c) => c === code).length })),
      sigtermToExitMs: { p50: Math.round(percentile(sigtermToExit, 50)), max: Math.round(Math.max(...sigtermToExit)) }
    }
    console.log(JSON.stringify(row))
    return { row, crashRow }
  } finally {
    for (const runner of runners) {
      if (runner.child.exitCode === null && runner.child.signalCode === null) runner.child.kill("SIGKILL")
    }
    await Promise.all(runners.map((runner) => runner.exited))
    await watch.stop()
    await H.dropDatabase(database)
  }
}

const startedAt = Date.now()
const variants: ReadonlyArray<Variant> = [
  { key: "plain", name: "NodeRuntime.runMain (Effect alone)", mode: "plain" },
  { key: "closing", name: "effect-graceful, handoff at Closing", mode: "graceful", env: { HANDOFF: "atClosing" } },
  { key: "graceful", name: "effect-graceful", mode: "graceful" },
  // Not in the default run (VARIANTS=refresh3s): effect-graceful with
  // Effect's own assignment refresh (3 s) instead of Cluster.layer's 1 s.
  {
    key: "refresh3s",
    name: "effect-graceful, refreshAssignmentsInterval 3 s (Effect's default)",
    mode: "graceful",
    env: { REFRESH_ASSIGNMENTS: "3 seconds" }
  }
]
const only = process.env.VARIANTS?.split(",") ?? ["plain", "closing", "graceful"]
const rows: Array<Record<string, unknown>> = []
let crashRow: Record<string, unknown> | undefined
for (const v of variants) {
  if (!only.includes(v.key)) continue
  const result = await variant(v, CRASH && v.key === "graceful")
  rows.push(result.row)
  crashRow ??= result.crashRow
}
const result = {
  bench: "cluster",
  date: new Date().toISOString(),
  config: {
    runners: 3,
    shards: SHARDS,
    persistedRate: PERSISTED_RATE,
    volatileRate: VOLATILE_RATE,
    httpRate: HTTP_RATE,
    httpWorkMs: HTTP_WORK_MS,
    accounts: 100,
    restarts: RESTARTS
  },
  durationS: Math.round((Date.now() - startedAt) / 1000),
  variants: [...rows.reverse(), ...(crashRow ? [crashRow] : [])]
}
writeFileSync(OUT, JSON.stringify(result, null, 2) + "\n")
console.log(`\nwrote ${OUT} in ${result.durationS} s`)
