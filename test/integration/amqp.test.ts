import amqp from "amqplib"
import { execFileSync } from "node:child_process"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import { type Fixture, start, uniqueName } from "./harness.ts"
import { describeResult, jobs, runRounds, shutdownEnv, TOTAL } from "./rounds.ts"

let admin: amqp.ChannelModel
let channel: amqp.ConfirmChannel
const queues: Array<string> = []
let running: Array<Fixture> = []
const run = (fixture: string, env: Record<string, string>) => {
  const child = start(fixture, env)
  running.push(child)
  return child
}

/** Connections the broker still lists under a name (rabbitmqctl: the broker's own view). */
const connectionsNamed = (name: string): number =>
  execFileSync("rabbitmqctl", ["-q", "list_connections", "client_properties"], { encoding: "utf8" })
    .split("\n")
    .filter((line) => line.includes(`"${name}"`)).length

beforeAll(async () => {
  admin = await amqp.connect("amqp://guest:guest@127.0.0.1:5672")
  channel = await admin.createConfirmChannel()
})
afterAll(async () => {
  for (const queue of queues) await channel.deleteQueue(queue)
  await admin.close()
})
afterEach(() => {
  for (const child of running) child.cleanup()
  running = []
})

describe("RabbitMQ consumer, real broker, real signals", () => {
  it("1,000 messages, the consumer SIGTERMed mid-flight 10 times: none lost, none handled twice, no consumer or connection left", async () => {
    const queue = uniqueName("it.jobs")
    const connectionName = uniqueName("it-amqp")
    queues.push(queue)
    await channel.assertQueue(queue, { durable: false })
    for (const job of jobs()) {
      channel.sendToQueue(queue, Buffer.from(JSON.stringify(job)), { messageId: String(job.id) })
    }
    await channel.waitForConfirms()
    expect((await channel.checkQueue(queue)).messageCount).toBe(TOTAL)

    const result = await runRounds({
      start: () => run("amqp-worker.ts", { ...shutdownEnv, AMQP_QUEUE: queue, AMQP_CONNECTION_NAME: connectionName }),
      overlap: true,
      afterExit: async (_, othersRunning) => {
        // basic.cancel and the channel's close are seen by the broker: only the successor consumes
        expect((await channel.checkQueue(queue)).consumerCount).toBeLessThanOrEqual(othersRunning)
      },
      drained: async () => {
        const info = await channel.checkQueue(queue)
        return info.messageCount === 0
      }
    })
    const info = await channel.checkQueue(queue)
    const ackFailures = result.stats.reduce((sum, s) => sum + (s.ackFailures ?? 0), 0)
    const handedBack = result.stats.reduce((sum, s) => sum + (s.handedBack ?? 0), 0)
    expect(result.lost, result.lost.map(result.trace).join("\n")).toEqual([])
    // at least once: a job runs twice only when its acknowledgement was lost
    expect(result.handledTwice.length).toBeLessThanOrEqual(ackFailures)
    expect(result.handledTwice, result.handledTwice.map(result.trace).join("\n")).toEqual([])
    expect(info.messageCount).toBe(0)
    expect(info.consumerCount).toBe(0)
    expect(result.inFlightAtSigterm).toBeGreaterThan(10)
    expect(result.cuts.length).toBeGreaterThan(0)
    // every cut job was requeued, redelivered and finished
    // Cut work came back: handled again (a redelivery) or, when it was cut
    // before its handler started, handled for the first time; `lost` above
    // proves every cut job was handled in the end. Not `>= cuts`: a job cut
    // before it printed START shows no repeat.
    expect(result.redeliveries).toBeGreaterThan(0)
    const left = connectionsNamed(connectionName)
    expect(left).toBe(0)
    console.log(
      `[measured] ${
        describeResult(
          "rabbitmq",
          result,
          `, handed back unstarted at Closing ${handedBack}, ack failures ${ackFailures}, connections left ${left}`
        )
      }`
    )
  })
})

describe("RabbitMQ publisher, real broker, real signals", () => {
  it("confirms outstanding at SIGTERM are awaited before the channel closes: every message published is in the queue", async () => {
    const queue = uniqueName("it.events")
    queues.push(queue)
    await channel.assertQueue(queue, { durable: false })
    const count = 20_000
    const publisher = run("amqp-worker.ts", {
      AMQP_MODE: "publish",
      AMQP_QUEUE: queue,
      AMQP_PUBLISH_COUNT: String(count),
      AMQP_CONNECTION_NAME: uniqueName("it-amqp-pub")
    })
    await publisher.waitFor("publishing")
    const sent = publisher.kill("SIGTERM")
    const exit = await publisher.exited
    expect(exit.code, publisher.output()).toBe(0)
    const outstanding = Number(publisher.lines().find((l) => l.startsWith("OUTSTANDING "))!.split(" ")[1])
    // the shutdown began with confirms outstanding ...
    expect(outstanding).toBeGreaterThan(0)
    const release = publisher.report().releases.find((r) => r.name === "events")!
    // ... the release waited for them, then closed the channel
    expect(release.outcome).toBe("released")
    expect((await channel.checkQueue(queue)).messageCount).toBe(count)
    console.log(
      `[measured] rabbitmq publisher: ${count} messages published at once, ${outstanding} confirms outstanding at SIGTERM, ` +
        `awaited in ${Math.round(release.durationMs)} ms of release; ${count} in the queue; exit ${exit.code} after ${
          exit.at - sent
        } ms`
    )
  })
})
