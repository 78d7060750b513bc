/**
 * Regenerates the HTTP benchmark table of docs/benchmarks.md from bench/results/http.json:
 * `node bench/http/readme-table.ts` prints it, `--write` replaces the block between
 * the `bench/results/http.json` markers in docs/benchmarks.md.
 */
import { readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"

interface OverheadRow {
  readonly variant: string
  readonly baseline: string
  readonly requestsPerSecond: number
  readonly cpuMicrosPerRequest: number
  readonly throughputRatio: number
  readonly cpuPerRequestRatio: number
}
interface InstructionsRow {
  readonly variant: string
  readonly baseline: string
  readonly instructionsPerRequest: number
  readonly instructionsRatio: number
}
interface ShutdownRow {
  readonly variant: string
  readonly idleSockets: number
  readonly medianMs: number
  readonly ratioToBareClose: number
  readonly resets: number
}
interface MemoryRow {
  readonly variant: string
  readonly bareBytesPerRequest: number
  readonly oursBytesPerRequest: number
  readonly overheadBytesPerRequest: number
}
interface Results {
  readonly date: string
  readonly node: string
  readonly cpus: number
  readonly overhead?: { readonly rounds: number; readonly rows: ReadonlyArray<OverheadRow> }
  readonly instructions?: { readonly requests: number; readonly rows: ReadonlyArray<InstructionsRow> }
  readonly shutdown?: { readonly rows: ReadonlyArray<ShutdownRow> }
  readonly memory?: { readonly rows: ReadonlyArray<MemoryRow> }
}

const root = join(import.meta.dirname, "..", "..")
const results = JSON.parse(readFileSync(join(root, "bench", "results", "http.json"), "utf8")) as Results

const number = (n: number) => n.toLocaleString("en-US")
const find = <A extends { readonly variant: string }>(rows: ReadonlyArray<A> | undefined, variant: string) =>
  rows?.find((row) => row.variant === variant)

const cells = (
  f: (variant: string) => string
) => [f("effect-graceful"), f("node-graceful"), f("node-terminator"), f("node-terminus")]

const overhead = (variant: string) => {
  const row = find(results.overhead?.rows, variant)
  const bare = row && find(results.overhead?.rows, row.baseline)
  return row && bare ? `${row.cpuPerRequestRatio} (${row.cpuMicrosPerRequest} vs ${bare.cpuMicrosPerRequest} µs)` : "–"
}
const throughput = (variant: string) => {
  const row = find(results.overhead?.rows, variant)
  return row ? `${row.throughputRatio}` : "–"
}
const instructions = (variant: string) => {
  const row = find(results.instructions?.rows, variant)
  const bare = row && find(results.instructions?.rows, row.baseline)
  return row && bare
    ? `${row.instructionsRatio} (${number(row.instructionsPerRequest)} vs ${number(bare.instructionsPerRequest)})`
    : "–"
}
const shutdown = (variant: string) => {
  const row = find(results.shutdown?.rows, variant)
  return row ? `${row.ratioToBareClose}× (${row.medianMs} ms), ${row.resets} resets` : "–"
}
const memory = (variant: string) => {
  const row = find(results.memory?.rows, variant)
  return row ? `+${number(row.overheadBytesPerRequest)} B` : "–"
}

const bareShutdown = find(results.shutdown?.rows, "node-bare")
const lines = [
  `One run of \`npm run bench:http\` on ${
    results.date.slice(0, 10)
  }: ${results.cpus} CPUs shared with other jobs, Node ${results.node}. ` +
  `Ratios compare variants run side by side (CPU time: median of ${results.overhead?.rounds ?? "–"} rounds); ` +
  `instructions are counted by callgrind over ${
    number(results.instructions?.requests ?? 0)
  } requests on one connection` +
  (bareShutdown
    ? `; a bare \`server.close()\` took ${bareShutdown.medianMs} ms with ${bareShutdown.resets} resets.`
    : "."),
  "",
  "| measurement | target | Effect `HttpServer` (`Http.layer`) | plain Node (`Http.serveNode`) | http-terminator | terminus |",
  "|---|---|---|---|---|---|",
  `| instructions per request, guarded / bare | <= 1.03 | ${cells(instructions).join(" | ")} |`,
  `| CPU time per request, guarded / bare | <= 1.03, <= the peers | ${cells(overhead).join(" | ")} |`,
  `| throughput, guarded / bare | – | ${cells(throughput).join(" | ")} |`,
  `| SIGTERM → exit, ${
    number(bareShutdown?.idleSockets ?? 1000)
  } idle keep-alive sockets, / bare \`server.close()\` | <= 2×, 0 resets | ${cells(shutdown).join(" | ")} |`,
  `| heap per request in flight, beyond bare (10,000 concurrent) | <= 1 KiB | ${memory("effect-graceful")} | ${
    memory("node-graceful")
  } | – | – |`
]
const table = lines.join("\n")

const start = "<!-- bench/results/http.json: start -->"
const end = "<!-- bench/results/http.json: end -->"
if (process.argv.includes("--write")) {
  const file = join(root, "docs", "benchmarks.md")
  const readme = readFileSync(file, "utf8")
  const from = readme.indexOf(start)
  const to = readme.indexOf(end)
  if (from === -1 || to === -1) throw new Error(`docs/benchmarks.md has no ${start} ... ${end} block`)
  writeFileSync(file, readme.slice(0, from + start.length) + "\n" + table + "\n" + readme.slice(to))
} else {
  console.log(table)
}
