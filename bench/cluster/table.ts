/**
 * Prints bench/results/cluster.json as the Markdown table of
 * docs/adapters/cluster.md: node bench/cluster/table.ts
 */
import { readFileSync } from "node:fs"
import { join } from "node:path"

interface Row {
  readonly name: string
  readonly restarts: number
  readonly persisted: { readonly sent: number; readonly lost: number; readonly processedTwice: number }
  readonly http: { readonly sent: number; readonly failed: Record<string, number> }
  readonly volatile: { readonly sent: number; readonly failed: number; readonly failureKinds: Record<string, number> }
  readonly shardUnownedMs: { readonly p50: number; readonly max: number }
  readonly exitCodes: ReadonlyArray<{ readonly code: number; readonly count: number }>
  readonly sigtermToExitMs: { readonly p50: number; readonly max: number }
}

interface Crash {
  readonly name: "crash"
  readonly shards: number
  readonly servedAgainMs: number | null
  readonly gracefulHandoffShardUnownedMaxMs: number | null
}

const result = JSON.parse(readFileSync(join(import.meta.dirname, "..", "results", "cluster.json"), "utf8")) as {
  readonly variants: ReadonlyArray<Row | Crash>
}
const n = (value: number) => value.toLocaleString("en-US")
const kinds = (record: Record<string, number>) =>
  Object.entries(record).map(([kind, count]) => `${count} ${kind}`).join(", ") || "0"
const lines = [
  "| | restarts | persisted sent | lost | processed twice | HTTP failed | volatile failed | shard unowned p50 / max | exit codes | SIGTERM → exit p50 / max |",
  "|---|---|---|---|---|---|---|---|---|---|"
]
for (const row of result.variants) {
  if (row.name === "crash") continue
  const r = row as Row
  lines.push(
    `| ${r.name} | ${r.restarts} | ${n(r.persisted.sent)} | ${r.persisted.lost} | ${r.persisted.processedTwice} | ` +
      `${kinds(r.http.failed)} of ${n(r.http.sent)} | ${kinds(r.volatile.failureKinds)} of ${n(r.volatile.sent)} | ` +
      `${n(r.shardUnownedMs.p50)} / ${n(r.shardUnownedMs.max)} ms | ${
        r.exitCodes.map((e) => `${e.code} ×${e.count}`).join(", ")
      } | ` +
      `${n(r.sigtermToExitMs.p50)} / ${n(r.sigtermToExitMs.max)} ms |`
  )
}
const crash = result.variants.find((row): row is Crash => row.name === "crash")
console.log(lines.join("\n"))
if (crash !== undefined) {
  console.log(
    `\none runner SIGKILLed: its ${crash.shards} shards were held again after ` +
      `${crash.servedAgainMs === null ? "more than 90 s" : `${n(crash.servedAgainMs)} ms`} ` +
      `(the other runners take them once they stop counting the dead runner)` +
      (crash.gracefulHandoffShardUnownedMaxMs === null
        ? "."
        : `; after a SIGTERM, a shard's longest gap was ${n(crash.gracefulHandoffShardUnownedMaxMs)} ms.`)
  )
}
