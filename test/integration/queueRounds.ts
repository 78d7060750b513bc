/**
 * The round test of the job queues (BullMQ, pg-boss), counted from the
 * system of record: 1,000 jobs, a worker SIGTERMed while it works ten
 * times, a fresh worker process started (and ready) before each SIGTERM, a
 * last worker that finishes the rest. Every handler start and completion is
 * a row the handler wrote (a Redis list entry, a Postgres row), with the
 * process that ran it: lost, completed twice, cut and redelivered jobs, and
 * how long a cut job waited before it ran again, all come from those rows.
 *
 * The same rounds run a worker under effect-graceful and one shut down by
 * hand (`close()` raced against the drain, then exit), so the two can be
 * compared in one run. Used by the integration tests and by `bench:queues`.
 */
import { appendFileSync } from "node:fs"
import type { Fixture } from "./harness.ts"

export const TOTAL = 1000
export const ROUNDS = 10
/**
 * A round test's own time limit: about a minute on an idle machine (see the
 * docs' tables), up to two and a half on a loaded CI box.
 */
export const ROUND_TIMEOUT = 180_000
/** The drain both modes get: SHUTDOWN_DRAIN_TIMEOUT for ours, the race in the by-hand worker. */
export const DRAIN_MS = 250

/**
 * Every `longEvery`th job (20th by default) takes `longMs` (700 ms by default: longer than the drain,
 * so cut if in flight at SIGTERM); the rest 20 to 50 ms.
 */
export const jobs = (longMs = 700, longEvery = 20): ReadonlyArray<{ readonly id: number; readonly ms: number }> =>
  Array.from({ length: TOTAL }, (_, id) => ({ id, ms: id % longEvery === 0 ? longMs : 20 + (id % 7) * 5 }))

export const shutdownEnv = {
  SHUTDOWN_DRAIN_TIMEOUT: `${DRAIN_MS} millis`,
  SHUTDOWN_TIMEOUT: "5 seconds"
}

export interface Start {
  readonly id: number
  readonly proc: number
  readonly at: number
}

export interface Done {
  readonly id: number
  readonly proc: number
}

/** Where the handlers wrote their starts and completions. */
export interface Store {
  readonly starts: () => Promise<ReadonlyArray<Start>>
  readonly dones: () => Promise<ReadonlyArray<Done>>
  /** Whether the queue holds nothing more to run (waiting, retrying, active). */
  readonly idle: () => Promise<boolean>
}

export interface Round {
  readonly proc: number
  readonly exit: number | null
  readonly sigtermAt: number
  /** Report figures (ours only). */
  readonly cut?: ReadonlyArray<string> | undefined
  readonly releases?: ReadonlyArray<string> | undefined
  readonly stats?: Record<string, number> | undefined
}

export interface QueueRoundsResult {
  readonly lost: ReadonlyArray<number>
  readonly completedTwice: ReadonlyArray<number>
  /** Jobs started in a SIGTERMed process and not completed there. */
  readonly cut: number
  /** Of those, how many started again in a later process. */
  readonly redelivered: number
  /** For each redelivered cut job: its next start minus the drain deadline of the process that gave it up (ms). */
  readonly rerunDelays: ReadonlyArray<number>
  readonly rounds: ReadonlyArray<Round>
  readonly ms: number
  readonly output: () => string
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

export const percentile = (values: ReadonlyArray<number>, p: number): number => {
  if (values.length === 0) return Number.NaN
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!
}

export const runQueueRounds = async (options: {
  readonly start: (proc: number) => Fixture
  readonly store: Store
  /** Read the shutdown report of each SIGTERMed process (workers under effect-graceful). */
  readonly ours: boolean
  /** How long the last worker may take to finish what is left. */
  readonly finalWaitMs: number
  readonly rounds?: number | undefined
}): Promise<QueueRoundsResult> => {
  const startedAt = Date.now()
  const rounds: Array<Round> = []
  const outputs: Array<string> = []
  const count = options.rounds ?? ROUNDS
  let current = options.start(0)
  await current.waitFor("ready", 60_000)
  for (let proc = 0; proc < count; proc++) {
    // the successor is ready before the SIGTERM: a job moved back has a taker
    const next = options.start(proc + 1)
    await next.waitFor("ready", 60_000)
    // busy: a handler started (bounded: once every job is done nothing starts)
    const busyBy = Date.now() + 5000
    while (!current.lines().some((line) => line.startsWith("START ")) && Date.now() < busyBy) await sleep(10)
    await sleep(200 + (proc % 3) * 100)
    const sigtermAt = current.kill("SIGTERM")
    const exit = await current.exited
    outputs.push(current.output())
    if (options.ours) {
      const report = current.report()
      const stats = current.lines().find((line) => line.startsWith("STATS "))
      rounds.push({
        proc,
        exit: exit.code,
        sigtermAt,
        cut: report.cut.map((c) => c.label),
        releases: report.releases.map((r) => `${r.name}:${r.outcome}`),
        stats: stats === undefined ? undefined : JSON.parse(stats.slice("STATS ".length)) as Record<string, number>
      })
    } else {
      rounds.push({ proc, exit: exit.code, sigtermAt })
    }
    current = next
  }
  const deadline = Date.now() + options.finalWaitMs
  while (Date.now() < deadline) {
    const finished = new Set((await options.store.dones()).map((d) => d.id))
    if (finished.size === TOTAL || await options.store.idle()) break
    await sleep(200)
  }
  current.kill("SIGTERM")
  await current.exited
  outputs.push(current.output())

  const starts = await options.store.starts()
  const dones = await options.store.dones()
  const doneCount = new Map<number, number>()
  for (const done of dones) doneCount.set(done.id, (doneCount.get(done.id) ?? 0) + 1)
  const doneIn = new Set(dones.map((d) => `${d.id} ${d.proc}`))
  let cut = 0
  let redelivered = 0
  const rerunDelays: Array<number> = []
  for (const round of rounds) {
    const gaveUpAt = round.sigtermAt + DRAIN_MS
    for (const start of starts) {
      if (start.proc !== round.proc || doneIn.has(`${start.id} ${start.proc}`)) continue
      cut++
      const again = starts.filter((s) => s.id === start.id && s.proc !== round.proc && s.at >= start.at)
        .map((s) => s.at)
      if (again.length === 0) continue
      redelivered++
      rerunDelays.push(Math.min(...again) - gaveUpAt)
    }
  }
  return {
    lost: [...Array(TOTAL).keys()].filter((id) => (doneCount.get(id) ?? 0) === 0),
    completedTwice: [...doneCount].filter(([, n]) => n > 1).map(([id]) => id),
    cut,
    redelivered,
    rerunDelays,
    rounds,
    ms: Date.now() - startedAt,
    output: () => outputs.join("\n----\n")
  }
}

/** The figures `bench/results/queues.json` and the docs' tables hold. */
export const summary = (result: QueueRoundsResult) => ({
  jobs: TOTAL,
  sigterms: result.rounds.length,
  lost: result.lost.length,
  completedTwice: result.completedTwice.length,
  cut: result.cut,
  redelivered: result.redelivered,
  rerunMs: {
    median: Math.round(percentile(result.rerunDelays, 50)),
    p95: Math.round(percentile(result.rerunDelays, 95)),
    max: Math.round(Math.max(...result.rerunDelays))
  },
  totalMs: result.ms
})

/**
 * Appends one run's figures to the file `QUEUES_BENCH_OUT` names (one JSON
 * object a line), when it is set: `npm run bench:queues` collects them into
 * bench/results/queues.json.
 */
export const recordFigures = (
  queue: "bullmq" | "pg-boss",
  mode: "ours" | "by hand",
  figures: Record<string, unknown>
): void => {
  const out = process.env.QUEUES_BENCH_OUT
  if (out === undefined || out === "") return
  appendFileSync(out, JSON.stringify({ queue, mode, ...figures }) + "\n")
}
