/**
 * The shared shape of the broker tests: 1,000 jobs, a consumer SIGTERMed
 * mid-flight ten times and restarted, then a last consumer that finishes the
 * rest. Fixtures print `START <id> <flagged redelivered: 0|1>` when a handler starts and
 * `DONE <id>` when it finished, and `STATS {...}` once at the end; this
 * module counts those lines across every process.
 */
import { execFileSync } from "node:child_process"
import { readFileSync } from "node:fs"
import { expect } from "vitest"
import type { Fixture } from "./harness.ts"

export const TOTAL = 1000

/**
 * Most jobs are short; every 20th takes 700 ms, longer than the 250 ms
 * drain: those in flight at SIGTERM are cut. A consumer that handles one
 * message at a time (MQTT) gets fewer and shorter long jobs (every 50th,
 * 400 ms), or the suite would take minutes.
 */
export const jobs = (
  shape: { readonly longEvery: number; readonly longMs: number; readonly shortMs: (id: number) => number } = {
    longEvery: 20,
    longMs: 700,
    shortMs: (id) => 5 + (id % 7) * 4
  }
): ReadonlyArray<{ readonly id: number; readonly ms: number }> =>
  Array.from({ length: TOTAL }, (_, id) => ({ id, ms: id % shape.longEvery === 0 ? shape.longMs : shape.shortMs(id) }))

export const shutdownEnv = {
  SHUTDOWN_DRAIN_TIMEOUT: "250 millis",
  SHUTDOWN_TIMEOUT: "5 seconds"
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

export interface RoundsResult {
  /** How often each job's handler finished, over all processes. */
  readonly done: Map<number, number>
  /** Handler starts for a job that had started before (in this process or an earlier one). */
  readonly redeliveries: number
  /**
   * Handler starts on a delivery the broker flagged (`redelivered`, `dup`).
   * Brokers differ in when they set it (in this suite Mosquitto flags most
   * messages it delivers to a reconnected persistent session), so the count
   * above is the one to read.
   */
  readonly flagged: number
  /** Handler starts in all. */
  readonly starts: number
  readonly cuts: ReadonlyArray<string>
  readonly inFlightAtSigterm: number
  readonly stats: ReadonlyArray<Record<string, number>>
  readonly lost: ReadonlyArray<number>
  readonly handledTwice: ReadonlyArray<number>
  readonly ms: number
  /** What each process printed about a job: for failure messages. */
  readonly trace: (id: number) => string
}

/**
 * Runs the ten SIGTERMed rounds and the final run. `beforeRound` runs before
 * each consumer starts (MQTT publishes its share there); `afterExit` after
 * each consumer exited, with how many consumers still run (connection checks); `drained` says when the broker
 * holds nothing more for the consumer.
 */
export const runRounds = async (options: {
  readonly start: (round: number) => Fixture
  readonly beforeRound?: ((round: number) => Promise<void>) | undefined
  readonly afterExit?: ((fixture: Fixture, othersRunning: number) => Promise<void>) | undefined
  readonly drained: () => Promise<boolean>
  readonly rounds?: number | undefined
  /**
   * Start the next consumer while the current one still works (a rolling
   * restart: the two compete for messages). Saves a process start per round.
   * Not for brokers where two clients may not share an identity (MQTT).
   */
  readonly overlap?: boolean | undefined
  /** Which handler start the SIGTERM waits for. Default: the first. */
  readonly sigtermAfterStartOf?: ((round: number, id: number) => boolean) | undefined
  /** How long after that start the consumer gets SIGTERM. Default 200, 300 or 400 ms. */
  readonly sigtermAfter?: ((round: number) => number) | undefined
}): Promise<RoundsResult> => {
  const startedAt = Date.now()
  const done = new Map<number, number>()
  const cuts: Array<string> = []
  const stats: Array<Record<string, number>> = []
  const started = new Set<number>()
  let redeliveries = 0
  let flagged = 0
  let starts = 0
  let inFlightAtSigterm = 0
  const outputs: Array<string> = []
  const collect = (fixture: Fixture) => {
    outputs.push(fixture.output())
    for (const line of fixture.lines()) {
      const [word, id, flag] = line.split(" ")
      if (word === "DONE") done.set(Number(id), (done.get(Number(id)) ?? 0) + 1)
      else if (word === "START") {
        starts++
        if (started.has(Number(id))) redeliveries++
        started.add(Number(id))
        if (flag === "1") flagged++
      } else if (word === "STATS") stats.push(JSON.parse(line.slice("STATS ".length)) as Record<string, number>)
    }
  }
  const rounds = options.rounds ?? 10
  let next: Fixture | undefined
  for (let round = 0; round < rounds; round++) {
    await options.beforeRound?.(round)
    const consumer = next ?? options.start(round)
    next = undefined
    await consumer.waitFor("ready")
    if (options.overlap === true && round + 1 <= rounds) next = options.start(round + 1)
    // wait until it is busy, then a little more: SIGTERM lands mid-flight
    const awaited = options.sigtermAfterStartOf ?? (() => true)
    while (!consumer.lines().some((line) => line.startsWith("START ") && awaited(round, Number(line.split(" ")[1])))) {
      await sleep(10)
    }
    await sleep(options.sigtermAfter?.(round) ?? 200 + (round % 3) * 100)
    consumer.kill("SIGTERM")
    const exit = await consumer.exited
    const report = consumer.report()
    // 0 when every job in flight finished within the drain, 1 when one was cut
    expect(exit.code, consumer.output()).toBe(report.cut.length === 0 ? 0 : 1)
    expect(report.trigger).toEqual({ _tag: "Signal", signal: "SIGTERM" })
    expect(
      report.releases.map((r) => `${r.name}:${r.outcome}`).filter((r) => !r.endsWith(":released")),
      consumer.output()
    )
      .toEqual([])
    inFlightAtSigterm += report.inFlight.atDrainStart
    cuts.push(...report.cut.map((c) => `${c.kind} ${c.label}`))
    collect(consumer)
    await options.afterExit?.(consumer, next === undefined ? 0 : 1)
  }
  await options.beforeRound?.(rounds)
  const last = next ?? options.start(rounds)
  await last.waitFor("ready")
  const deadline = Date.now() + 30_000
  while (Date.now() < deadline) {
    const finished = new Set(last.lines().filter((l) => l.startsWith("DONE ")).map((l) => Number(l.split(" ")[1])))
    if ([...Array(TOTAL).keys()].every((id) => finished.has(id) || done.has(id)) && await options.drained()) break
    await sleep(100)
  }
  last.kill("SIGTERM")
  expect((await last.exited).code, last.output()).toBe(0)
  collect(last)
  await options.afterExit?.(last, 0)
  const lost = [...Array(TOTAL).keys()].filter((id) => (done.get(id) ?? 0) < 1)
  const handledTwice = [...done].filter(([, n]) => n > 1).map(([id]) => id)
  return {
    done,
    redeliveries,
    flagged,
    starts,
    cuts,
    inFlightAtSigterm,
    stats,
    lost,
    handledTwice,
    ms: Date.now() - startedAt,
    trace: (id) =>
      outputs.map((output, n) =>
        `process ${n}: ` + output.split("\n").filter((line) => new RegExp(`\\b${id}\\b`).test(line)).join(" | ")
      ).join("\n")
  }
}

export const describeResult = (broker: string, result: RoundsResult, extra = ""): string =>
  `${broker}: ${TOTAL} jobs, 10 SIGTERMs + final run; ${result.inFlightAtSigterm} in flight at the SIGTERMs, ` +
  `${result.cuts.length} cut and handed back, ${result.redeliveries} redeliveries (${result.flagged} flagged by the broker), lost ${result.lost.length}, ` +
  `handled twice ${result.handledTwice.length}${extra}, ${result.ms} ms`

/**
 * Established TCP connections to a local server port held by fixture
 * processes (a consumer that lingers, or one of its children), as the
 * kernel sees them: for servers without a way to list their clients (NATS
 * without its monitoring port, Mosquitto). Other processes on the machine
 * are not counted.
 */
export const fixtureConnectionsToPort = (port: number): number =>
  execFileSync("ss", ["-Htnp", "state", "established", `( dport = :${port} )`], { encoding: "utf8" })
    .split("\n")
    .filter((line) => {
      const pid = /pid=(\d+),/.exec(line)?.[1]
      if (pid === undefined) return false
      try {
        return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("test/integration/fixtures/")
      } catch {
        return false
      }
    }).length
