import mqtt from "mqtt"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import { type Fixture, start, uniqueName } from "./harness.ts"
import { describeResult, fixtureConnectionsToPort, jobs, runRounds, shutdownEnv, TOTAL } from "./rounds.ts"

let publisher: mqtt.MqttClient
let running: Array<Fixture> = []
const run = (env: Record<string, string>) => {
  const child = start("mqtt-worker.ts", env)
  running.push(child)
  return child
}
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** Watches a topic (the will) and records what arrives. */
const watch = async (topic: string) => {
  const received: Array<{ readonly payload: string; readonly at: number }> = []
  const client = await mqtt.connectAsync("mqtt://127.0.0.1:1883", { clientId: uniqueName("it-watch"), clean: true })
  client.on("message", (_, payload) => received.push({ payload: payload.toString(), at: Date.now() }))
  await client.subscribeAsync(topic, { qos: 1 })
  return { received, close: () => client.endAsync() }
}

/** Ends a persistent session: a clean connection with the same client id discards it. */
const dropSession = async (clientId: string) => {
  const client = await mqtt.connectAsync("mqtt://127.0.0.1:1883", { clientId, clean: true })
  await client.endAsync()
}

const sessions: Array<string> = []
beforeAll(async () => {
  publisher = await mqtt.connectAsync("mqtt://127.0.0.1:1883", { clientId: uniqueName("it-pub"), clean: true })
})
afterAll(async () => {
  for (const clientId of sessions) await dropSession(clientId)
  await publisher.endAsync()
})
afterEach(() => {
  for (const child of running) child.cleanup()
  running = []
})

describe("MQTT subscriber, real Mosquitto, real signals", () => {
  it("1,000 QoS 1 messages, the subscriber SIGTERMed mid-flight 10 times: none lost, none handled twice, no will published", async () => {
    const topic = uniqueName("it/jobs")
    const willTopic = uniqueName("it/will")
    const clientId = uniqueName("it-mqtt")
    sessions.push(clientId)
    const will = await watch(willTopic)
    // The persistent session and its subscription exist before the first message is published.
    const first = await mqtt.connectAsync("mqtt://127.0.0.1:1883", { clientId, clean: false })
    await first.subscribeAsync(topic, { qos: 1 })
    await first.endAsync()
    // One message at a time (MQTT acknowledges in order): fewer long jobs (every 100th, 700 ms).
    // Odd rounds are stopped 100 ms into a long job (cut, and carried to the next round), even
    // rounds 1.5 s after their first job started.
    const all = jobs({ longEvery: 100, longMs: 700, shortMs: (id) => 2 + (id % 4) * 2 })
    const result = await runRounds({
      start: () => run({ ...shutdownEnv, MQTT_TOPIC: topic, MQTT_CLIENT_ID: clientId, MQTT_WILL_TOPIC: willTopic }),
      // a tenth of the messages before each of the ten processes: the broker queues them for the session
      beforeRound: async (round) => {
        if (round >= 10) return
        for (const job of all.slice(round * 100, round * 100 + 100)) {
          await publisher.publishAsync(topic, JSON.stringify(job), { qos: 1 })
        }
      },
      sigtermAfterStartOf: (round, id) => round % 2 === 0 || id % 100 === 0,
      sigtermAfter: (round) => round % 2 === 1 ? 100 : 1500,
      drained: async () => true
    })
    await sleep(200)
    const ackFailures = result.stats.reduce((sum, s) => sum + (s.ackFailures ?? 0), 0)
    const handedBack = result.stats.reduce((sum, s) => sum + (s.handedBack ?? 0), 0)
    expect(result.lost, result.lost.map(result.trace).join("\n")).toEqual([])
    expect(result.handledTwice.length).toBeLessThanOrEqual(ackFailures)
    expect(result.handledTwice, result.handledTwice.map(result.trace).join("\n")).toEqual([])
    expect(
      result.cuts.length,
      `${result.inFlightAtSigterm} in flight; ${JSON.stringify(result.stats)}; ${result.trace(100)}`
    ).toBeGreaterThan(0)
    // every cut message came back
    // Cut work came back: handled again (a redelivery) or, when it was cut
    // before its handler started, handled for the first time; `lost` above
    // proves every cut job was handled in the end. Not `>= cuts`: a job cut
    // before it printed START shows no repeat.
    expect(result.redeliveries).toBeGreaterThan(0)
    // eleven clean DISCONNECTs: the broker published no will
    expect(will.received).toEqual([])
    await will.close()
    const left = fixtureConnectionsToPort(1883)
    expect(left).toBe(0)
    console.log(
      `[measured] ${
        describeResult(
          "mqtt",
          result,
          `, left unacknowledged at Closing ${handedBack}, wills published 0 of 11 stops, connections left ${left}`
        )
      }`
    )
    expect(TOTAL).toBe(1000)
  })

  it("a crash (SIGKILL, no DISCONNECT) makes the broker publish the will; a SIGTERM does not", async () => {
    const willTopic = uniqueName("it/will")
    const will = await watch(willTopic)
    const env = { MQTT_TOPIC: uniqueName("it/none"), MQTT_WILL_TOPIC: willTopic }
    const stopped = run({ ...env, MQTT_CLIENT_ID: uniqueName("it-mqtt-term") })
    await stopped.waitFor("ready")
    stopped.kill("SIGTERM")
    expect((await stopped.exited).code, stopped.output()).toBe(0)
    const crashed = run({ ...env, MQTT_CLIENT_ID: uniqueName("it-mqtt-kill") })
    await crashed.waitFor("ready")
    const killedAt = crashed.kill("SIGKILL")
    await crashed.exited
    for (let i = 0; i < 50 && will.received.length === 0; i++) await sleep(50)
    await sleep(300)
    // exactly one will: the crash's
    expect(will.received.map((m) => m.payload)).toEqual(["gone"])
    await will.close()
    console.log(
      `[measured] mqtt will: SIGTERM published none; SIGKILL published it ${
        will.received[0]!.at - killedAt
      } ms after the kill`
    )
  })
})

describe("MQTT subscriber with a clean session, real Mosquitto, real signals", () => {
  it("unsubscribes at Closing: the message in flight finishes, none starts after, a clean DISCONNECT (no will)", async () => {
    const topic = uniqueName("it/events")
    const willTopic = uniqueName("it/will")
    const will = await watch(willTopic)
    const subscriber = run({
      MQTT_CLEAN: "1",
      MQTT_TOPIC: topic,
      MQTT_CLIENT_ID: uniqueName("it-mqtt-clean"),
      MQTT_WILL_TOPIC: willTopic
    })
    await subscriber.waitFor("ready")
    let id = 0
    let publishing = true
    const published = (async () => {
      while (publishing) {
        await publisher.publishAsync(topic, JSON.stringify({ id: id++, ms: 300 }), { qos: 1 })
        await sleep(25)
      }
    })()
    while (subscriber.lines().filter((l) => l.startsWith("START ")).length < 3) await sleep(10)
    const sent = subscriber.kill("SIGTERM")
    const exit = await subscriber.exited
    publishing = false
    await published
    expect(exit.code, subscriber.output()).toBe(0)
    const lines = subscriber.lines()
    const started = lines.filter((l) => l.startsWith("START ")).map((l) => l.split(" "))
    const done = new Set(lines.filter((l) => l.startsWith("DONE ")).map((l) => l.split(" ")[1]))
    // no message started once the program was Closing; every one that started finished
    expect(started.map((s) => s[3]).filter((phase) => phase !== "Ready" && phase !== "Draining")).toEqual([])
    expect(started.map((s) => s[1]).filter((n) => !done.has(n))).toEqual([])
    const report = subscriber.report()
    expect(report.inFlight).toEqual({ atDrainStart: 1, atDrainEnd: 0 })
    expect(report.cut).toEqual([])
    // end(): the UNSUBACK was read, then DISCONNECT: released in time, and no will
    expect(report.releases.map((r) => `${r.name}:${r.outcome}`)).toEqual(["jobs:released"])
    await sleep(300)
    expect(will.received).toEqual([])
    await will.close()
    console.log(
      `[measured] mqtt clean session: ${started.length} messages started, all finished; ${
        id - started.length
      } published meanwhile ` +
        `not started; exit ${exit.code} after ${exit.at - sent} ms; no will`
    )
  })
})
