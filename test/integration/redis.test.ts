import { createClient } from "redis"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import { type Fixture, start, uniqueName } from "./harness.ts"
import { publishThroughShutdown } from "./pubsub.ts"

const redis = createClient({ url: "redis://127.0.0.1:6379", name: "effect-graceful-it-admin" })

let running: Array<Fixture> = []
const run = (fixture: string, env: Record<string, string>) => {
  const child = start(fixture, env)
  running.push(child)
  return child
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** Connections the server still holds under a client name. */
const connectionsNamed = async (name: string): Promise<number> => {
  const list = await redis.clientList()
  return list.filter((client) => client.name === name).length
}

const settledConnectionsNamed = async (name: string): Promise<number> => {
  for (let i = 0; i < 20; i++) {
    if (await connectionsNamed(name) === 0) return 0
    await sleep(50)
  }
  return connectionsNamed(name)
}

const counts = async (key: string): Promise<Map<string, number>> => {
  const hash = await redis.hGetAll(key)
  return new Map(Object.entries(hash).map(([id, n]) => [id, Number(n)]))
}

const keys: Array<string> = []
beforeAll(async () => {
  await redis.connect()
})
afterAll(async () => {
  if (keys.length > 0) await redis.del(keys)
  await redis.close()
})
afterEach(() => {
  for (const child of running) child.cleanup()
  running = []
})

describe("Redis Streams consumer group, real server, real signals", () => {
  it("1,000 jobs, the worker SIGTERMed mid-flight 10 times: none lost, each acknowledged exactly once", async () => {
    const startedAt = Date.now()
    const prefix = uniqueName("it:streams")
    const stream = `${prefix}:jobs`
    const clientName = uniqueName("it-worker")
    keys.push(stream, `${prefix}:started`, `${prefix}:done`, `${prefix}:acks`, `${prefix}:ackcalls`)
    // Mostly short jobs; every 20th takes 700 ms, longer than the 250 ms drain: those
    // in flight at SIGTERM are cut and must be retried.
    const ids: Array<string> = []
    const batch = redis.multi()
    for (let i = 0; i < 1000; i++) {
      batch.xAdd(stream, "*", { job: String(i), ms: String(i % 20 === 0 ? 700 : 5 + (i % 7) * 4) })
    }
    for (const id of await batch.exec()) ids.push(String(id))
    expect(new Set(ids).size).toBe(1000)

    const env = {
      REDIS_PREFIX: prefix,
      REDIS_CLIENT_NAME: clientName,
      SHUTDOWN_DRAIN_TIMEOUT: "250 millis",
      SHUTDOWN_TIMEOUT: "5 seconds",
      CLAIM_IDLE: "1 second"
    }
    const cuts: Array<string> = []
    let inFlightAtSigterm = 0
    for (let round = 0; round < 10; round++) {
      // Every other process has a stable name and retries its own pending
      // entries at once; the others reclaim them with XAUTOCLAIM.
      const worker = run("redis-streams-worker.ts", { ...env, CONSUMER: round % 2 === 0 ? "worker-stable" : "" })
      await worker.waitFor("ready")
      await sleep(350 + (round % 3) * 100)
      worker.kill("SIGTERM")
      const exit = await worker.exited
      const report = worker.report()
      // 0 when every job in flight finished within the drain, 1 when one was cut
      expect(report.cut.length === 0 ? 0 : 1, worker.output()).toBe(exit.code)
      expect(report.trigger).toEqual({ _tag: "Signal", signal: "SIGTERM" })
      inFlightAtSigterm += report.inFlight.atDrainStart
      cuts.push(...report.cut.map((c) => `${c.kind} ${c.label}`))
      expect(report.releases.map((r) => r.outcome)).not.toContain("timedOut")
      // both consumer connections are closed when the process is gone
      expect(await settledConnectionsNamed(clientName)).toBe(0)
    }
    const acksBeforeFinal = (await counts(`${prefix}:acks`)).size
    // the ten processes were stopped mid-flight, with work left over
    expect(inFlightAtSigterm).toBeGreaterThan(10)
    expect(cuts.length).toBeGreaterThan(0)
    expect(cuts.every((c) => c.startsWith("job "))).toBe(true)
    expect(acksBeforeFinal).toBeLessThan(1000)

    // The last worker finishes the rest, cut jobs included.
    const last = run("redis-streams-worker.ts", env)
    await last.waitFor("ready")
    const deadline = Date.now() + 30_000
    let pending = -1
    while (Date.now() < deadline) {
      const acked = (await counts(`${prefix}:acks`)).size
      pending = (await redis.xPending(stream, "workers")).pending
      if (acked === 1000 && pending === 0) break
      await sleep(100)
    }
    last.kill("SIGTERM")
    expect((await last.exited).code, last.output()).toBe(0)

    const done = await counts(`${prefix}:done`)
    const acks = await counts(`${prefix}:acks`)
    const ackCalls = await counts(`${prefix}:ackcalls`)
    const lost = ids.filter((id) => (done.get(id) ?? 0) < 1 || acks.get(id) !== 1)
    const ackedTwice = ids.filter((id) => ackCalls.get(id) !== 1)
    const processedTwice = ids.filter((id) => (done.get(id) ?? 0) > 1)
    expect(lost).toEqual([])
    expect(ackedTwice).toEqual([])
    expect(pending).toBe(0)
    expect((await redis.xPending(stream, "workers")).pending).toBe(0)
    // every cut job was retried and finished
    for (const cut of cuts) expect(acks.get(cut.slice("job ".length))).toBe(1)
    expect(await settledConnectionsNamed(clientName)).toBe(0)
    console.log(
      `[measured] streams: 1000 jobs, 10 SIGTERMs + final run; ${inFlightAtSigterm} jobs in flight at the SIGTERMs, ` +
        `${cuts.length} cut and retried, jobs lost ${lost.length}, acknowledged more than once ${ackedTwice.length}, ` +
        `processed twice ${processedTwice.length}, pending left ${pending}, ${Date.now() - startedAt} ms`
    )
  })
})

describe("Redis pub/sub, real server, real signals", () => {
  it("after Closing no handler starts; handlers that had started finish; the subscription and connection are gone", async () => {
    const channel = uniqueName("it:events")
    const clientName = uniqueName("it-sub")
    const subscriber = run("redis-subscriber.ts", {
      CHANNEL: channel,
      REDIS_CLIENT_NAME: clientName,
      HANDLER_MS: "800"
    })
    await subscriber.waitFor("ready")
    expect(await connectionsNamed(clientName)).toBe(1)
    const { exit, publishedAfter, report, sent, started } = await publishThroughShutdown(
      subscriber,
      (message) => redis.publish(channel, message)
    )
    expect(report.inFlight.atDrainEnd).toBe(0)
    expect(report.releases.map((r) => `${r.name}:${r.outcome}`)).toEqual(["events:released"])
    expect(await redis.pubSubNumSub(channel)).toEqual({ [channel]: 0 })
    const left = await settledConnectionsNamed(clientName)
    expect(left).toBe(0)
    console.log(
      `[measured] pub/sub: ${started.length} handlers started, all finished; ${report.inFlight.atDrainStart} in flight at SIGTERM; ` +
        `${publishedAfter.length} messages published after the unsubscribe, none handled; exit ${exit.code} after ${
          exit.at - sent
        } ms; connections left ${left}`
    )
  })
})
