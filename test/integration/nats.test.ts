import { AckPolicy, jetstream, type JetStreamManager, jetstreamManager } from "@nats-io/jetstream"
import { connect, type NatsConnection } from "@nats-io/transport-node"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import { type Fixture, start, uniqueName } from "./harness.ts"
import { publishThroughShutdown } from "./pubsub.ts"
import { describeResult, fixtureConnectionsToPort, jobs, runRounds, shutdownEnv, TOTAL } from "./rounds.ts"

let nc: NatsConnection
let jsm: JetStreamManager
const streams: Array<string> = []
let running: Array<Fixture> = []
const run = (env: Record<string, string>) => {
  const child = start("nats-worker.ts", env)
  running.push(child)
  return child
}

beforeAll(async () => {
  nc = await connect({ servers: "127.0.0.1:4222", name: "effect-graceful-it-admin" })
  jsm = await jetstreamManager(nc)
})
afterAll(async () => {
  for (const stream of streams) await jsm.streams.delete(stream)
  await nc.close()
})
afterEach(() => {
  for (const child of running) child.cleanup()
  running = []
})

describe("NATS JetStream pull consumer, real server, real signals", () => {
  it("1,000 messages, the consumer SIGTERMed mid-flight 10 times: none lost, none handled twice, nothing left pending", async () => {
    const stream = uniqueName("IT_JOBS").toUpperCase()
    const subject = `${stream.toLowerCase()}.jobs`
    streams.push(stream)
    await jsm.streams.add({ name: stream, subjects: [subject] })
    // ack_wait longer than the test: a redelivery here comes from a nak, never from a timeout
    await jsm.consumers.add(stream, {
      durable_name: "workers",
      ack_policy: AckPolicy.Explicit,
      ack_wait: 120_000_000_000
    })
    const js = jetstream(nc)
    for (const job of jobs()) await js.publish(subject, JSON.stringify(job))
    expect((await jsm.streams.info(stream)).state.messages).toBe(TOTAL)

    const result = await runRounds({
      start: () =>
        run({
          ...shutdownEnv,
          NATS_MODE: "jetstream",
          NATS_STREAM: stream,
          NATS_CONSUMER: "workers",
          NATS_CONNECTION_NAME: uniqueName("it-nats")
        }),
      overlap: true,
      afterExit: async (_, othersRunning) => {
        const info = await jsm.consumers.info(stream, "workers")
        // its pull request is gone (nak'ed messages stay in ack-pending until redelivered)
        expect(info.num_waiting).toBeLessThanOrEqual(othersRunning)
      },
      drained: async () => {
        const info = await jsm.consumers.info(stream, "workers")
        return info.num_pending === 0 && info.num_ack_pending === 0
      }
    })
    const info = await jsm.consumers.info(stream, "workers")
    const ackFailures = result.stats.reduce((sum, s) => sum + (s.ackFailures ?? 0), 0)
    const handedBack = result.stats.reduce((sum, s) => sum + (s.handedBack ?? 0), 0)
    expect(result.lost, result.lost.map(result.trace).join("\n")).toEqual([])
    expect(result.handledTwice.length).toBeLessThanOrEqual(ackFailures)
    expect(result.handledTwice, result.handledTwice.map(result.trace).join("\n")).toEqual([])
    expect(info.num_pending).toBe(0)
    expect(info.num_ack_pending).toBe(0)
    expect(info.num_redelivered).toBe(0)
    expect(result.inFlightAtSigterm).toBeGreaterThan(10)
    expect(result.cuts.length).toBeGreaterThan(0)
    // Cut work came back: handled again (a redelivery) or, when it was cut
    // before its handler started, handled for the first time; `lost` above
    // proves every cut job was handled in the end. Not `>= cuts`: a job cut
    // before it printed START shows no repeat.
    expect(result.redeliveries).toBeGreaterThan(0)
    const left = fixtureConnectionsToPort(4222)
    expect(left).toBe(0)
    console.log(
      `[measured] ${
        describeResult(
          "nats jetstream",
          result,
          `, handed back unstarted at Closing ${handedBack}, ack failures ${ackFailures}, connections left ${left}`
        )
      }`
    )
  })
})

describe("NATS core subscription, real server, real signals", () => {
  it("unsubscribes at Closing: handlers that started finish, none starts after, the connection drains", async () => {
    const subject = uniqueName("it.events")
    const subscriber = run({
      NATS_MODE: "core",
      NATS_SUBJECT: subject,
      NATS_CONNECTION_NAME: uniqueName("it-nats-core"),
      HANDLER_MS: "800"
    })
    await subscriber.waitFor("ready")
    const { exit, publishedAfter, report, sent, started } = await publishThroughShutdown(
      subscriber,
      (message) => nc.publish(subject, message)
    )
    expect(report.releases.map((r) => `${r.name}:${r.outcome}`)).toEqual(["nats:released"])
    const left = fixtureConnectionsToPort(4222)
    expect(left).toBe(0)
    console.log(
      `[measured] nats core: ${started.length} handlers started, all finished; ${report.inFlight.atDrainStart} in flight at SIGTERM; ` +
        `${publishedAfter.length} published after the unsubscribe, none handled; exit ${exit.code} after ${
          exit.at - sent
        } ms; connections left ${left}`
    )
  })
})
