/**
 * `npm run bench:queues`: the job-queue round tests (BullMQ on Redis,
 * pg-boss on Postgres; test/integration/queueRounds.ts) run once each,
 * ours and by hand in the same run, their figures collected into
 * bench/results/queues.json. Needs the local Redis (6379) and Postgres
 * (5432, database `test`) the integration suite uses; about 4 minutes.
 *
 * Each run: 1,000 jobs, a worker SIGTERMed ten times while it works (a
 * fresh worker, ready, before each SIGTERM), a last worker that finishes
 * the rest; lost and completed twice counted from the rows the handlers
 * wrote; the time until a cut job runs again measured from the drain
 * deadline (SIGTERM + 250 ms) to its next start.
 */
import { spawnSync } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"

const root = join(import.meta.dirname, "..", "..")
const dir = mkdtempSync(join(tmpdir(), "bench-queues-"))
const out = join(dir, "figures.jsonl")
writeFileSync(out, "")
const run = spawnSync(
  process.execPath,
  [
    join(root, "node_modules", "vitest", "vitest.mjs"),
    "run",
    "--config",
    "vitest.integration.config.ts",
    "test/integration/bullmq.test.ts",
    "test/integration/pgboss.test.ts",
    "-t",
    "SIGTERMs|by hand"
  ],
  { cwd: root, stdio: "inherit", env: { ...process.env, QUEUES_BENCH_OUT: out, QUEUES_BY_HAND: "1" } }
)
const figures = readFileSync(out, "utf8").split("\n").filter((line) => line !== "").map((line) =>
  JSON.parse(line) as Record<string, unknown>
)
rmSync(dir, { recursive: true, force: true })
if (figures.length === 0) {
  console.error("bench:queues: no figures recorded")
  process.exit(1)
}
const result = {
  date: new Date().toISOString(),
  node: process.version,
  note:
    "1,000 jobs, 10 SIGTERMs with a fresh worker ready before each, drain 250 ms; rerunMs: from the drain deadline to the cut job's next start. " +
    "BullMQ: lockDuration and stalledInterval 5 s in both modes (default 30 s). pg-boss: long jobs 1.5 s (stop() waits at least 1 s), polling 500 ms in both modes.",
  runs: figures
}
writeFileSync(join(root, "bench", "results", "queues.json"), JSON.stringify(result, null, 2) + "\n")
console.table(figures.map((f) => ({
  queue: f.queue,
  mode: f.mode,
  lost: f.lost,
  completedTwice: f.completedTwice,
  cut: f.cut,
  redelivered: f.redelivered,
  rerunMedianMs: (f.rerunMs as { median: number }).median,
  rerunMaxMs: (f.rerunMs as { max: number }).max
})))
process.exit(run.status ?? 1)
