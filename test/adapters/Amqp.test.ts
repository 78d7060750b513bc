import { describe, expect, it } from "@effect/vitest"
import type * as amqp from "amqplib"
import { Effect, Fiber } from "effect"
import { TestClock } from "effect/testing"
import * as Amqp from "../../src/adapters/Amqp.ts"
import * as GracefulTest from "../../src/testing.ts"
import { counted, settle, start } from "../support/run.ts"

/** An in-memory amqplib connection: records what the adapter asks of the broker. */
const makeBroker = () => {
  const events: Array<string> = []
  let onMessage: ((message: amqp.ConsumeMessage | null) => void) | undefined
  let deliveryTag = 0
  const confirms: Array<(error: unknown) => void> = []
  let waitForConfirms: (() => void) | undefined
  const idOf = (message: amqp.Message) => message.properties.messageId as string
  const channel = {
    on: () => channel,
    prefetch: (count: number) => {
      events.push(`prefetch ${count}`)
      return Promise.resolve({})
    },
    consume: (queue: string, callback: (message: amqp.ConsumeMessage | null) => void) => {
      events.push(`consume ${queue}`)
      onMessage = callback
      return Promise.resolve({ consumerTag: "ctag-1" })
    },
    cancel: (tag: string) => {
      events.push(`cancel ${tag}`)
      return Promise.resolve({ consumerTag: tag })
    },
    ack: (message: amqp.Message) => void events.push(`ack ${idOf(message)}`),
    nack: (message: amqp.Message, _all: boolean, requeue: boolean) =>
      void events.push(`nack ${idOf(message)}${requeue ? " requeue" : ""}`),
    close: () => {
      events.push("close channel")
      return Promise.resolve()
    },
    publish: (
      _exchange: string,
      routingKey: string,
      _content: Buffer,
      _options: unknown,
      callback: (error: unknown) => void
    ) => {
      events.push(`publish ${routingKey}`)
      confirms.push(callback)
      return true
    },
    waitForConfirms: () =>
      new Promise<void>((resolve) => {
        waitForConfirms = resolve
      })
  }
  const connection: Amqp.Connection = {
    createChannel: () => Promise.resolve(channel as unknown as amqp.Channel),
    createConfirmChannel: () => Promise.resolve(channel as unknown as amqp.ConfirmChannel),
    close: () => Promise.resolve(),
    on: () => connection
  }
  return {
    events,
    connection,
    deliver: (id: string, ms: number) =>
      onMessage!({
        content: Buffer.from(String(ms)),
        fields: {
          deliveryTag: ++deliveryTag,
          redelivered: false,
          exchange: "",
          routingKey: "jobs",
          consumerTag: "ctag-1"
        },
        properties: { messageId: id, headers: {} }
      } as unknown as amqp.ConsumeMessage),
    confirmAll: () => {
      for (const confirm of confirms.splice(0)) confirm(null)
      waitForConfirms?.()
    }
  }
}

const consumer = (broker: ReturnType<typeof makeBroker>, concurrency: number) =>
  Amqp.consume({
    connection: broker.connection,
    queue: "jobs",
    concurrency,
    name: "jobs",
    handler: (message) =>
      Effect.sleep(Number(message.content.toString())).pipe(
        Effect.andThen(Effect.sync(() => broker.events.push(`done ${message.properties.messageId}`)))
      )
  })

describe("Amqp.consume", () => {
  it.effect("prefetch follows concurrency; at Closing: basic.cancel, unstarted deliveries requeued, in-flight ones finish and are acked, then the channel closes", () =>
    Effect.gen(function*() {
      const broker = makeBroker()
      let stats: Effect.Effect<Amqp.ConsumerStats> | undefined
      const fiber = yield* start(
        Effect.gen(function*() {
          stats = (yield* consumer(broker, 2)).stats
          return yield* Effect.never
        }),
        { timeout: "10 seconds", drainTimeout: "5 seconds" }
      )
      for (let i = 0; i < 5; i++) broker.deliver(`m${i}`, 1000)
      yield* settle
      yield* TestClock.adjust("500 millis")
      yield* GracefulTest.send("SIGTERM")
      // already on the wire when the consumer was cancelled
      broker.deliver("late", 10)
      yield* TestClock.adjust("500 millis")
      const report = yield* Fiber.join(fiber)
      expect(broker.events).toEqual([
        "prefetch 2",
        "consume jobs",
        "cancel ctag-1",
        "nack m2 requeue",
        "nack m3 requeue",
        "nack m4 requeue",
        "nack late requeue",
        "done m0",
        "ack m0",
        "done m1",
        "ack m1",
        "close channel"
      ])
      expect(yield* stats!).toMatchObject({ delivered: 6, acked: 2, handedBack: 4, interrupted: 0 })
      expect(report.inFlight).toEqual({ atDrainStart: 2, atDrainEnd: 0 })
      expect(report.releases.map((r) => `${r.name}:${r.outcome}`)).toEqual(["jobs (channel):released"])
      expect(report.exitCode).toBe(0)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("a message still running at the drain deadline is cut and nacked with requeue (must-retry)", () =>
    Effect.gen(function*() {
      const broker = makeBroker()
      const fiber = yield* start(consumer(broker, 1).pipe(Effect.andThen(Effect.never)), {
        timeout: "10 seconds",
        drainTimeout: "2 seconds"
      })
      broker.deliver("slow", 60_000)
      yield* settle
      yield* GracefulTest.send("SIGTERM")
      yield* TestClock.adjust("2 seconds")
      const report = yield* Fiber.join(fiber)
      expect(broker.events.filter((e) => e.includes("slow"))).toEqual(["nack slow requeue"])
      expect(report.cut).toEqual([{ kind: "message", label: "slow", ageMs: 2000 }])
      expect(report.exitCode).toBe(1)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("a failed handler's message is requeued by default, rejected with onFailure: reject", () =>
    Effect.gen(function*() {
      const broker = makeBroker()
      const fiber = yield* start(Effect.gen(function*() {
        yield* Amqp.consume({
          connection: broker.connection,
          queue: "jobs",
          name: "jobs",
          onFailure: "reject",
          handler: () => Effect.fail(new Error("poison"))
        })
        return yield* Effect.never
      }))
      broker.deliver("bad", 0)
      yield* settle
      expect(broker.events).toContain("nack bad")
      yield* GracefulTest.send("SIGTERM")
      expect((yield* Fiber.join(fiber)).exitCode).toBe(0)
    }).pipe(Effect.provide(GracefulTest.layer)))
})

/** A publisher with a 2 s release slice under `Graceful.run`, started and settled. */
const startPublisher = (broker: ReturnType<typeof makeBroker>) =>
  Effect.gen(function*() {
    let publisher: Amqp.Publisher | undefined
    const fiber = yield* start(Effect.gen(function*() {
      publisher = yield* Amqp.publisher({ connection: broker.connection, name: "events", timeout: "2 seconds" })
      return yield* Effect.never
    }))
    return { fiber, publisher: publisher! }
  })

describe("Amqp.publisher", () => {
  it.effect("at release, outstanding confirms are awaited within the slice, then the channel closes", () =>
    Effect.gen(function*() {
      const broker = makeBroker()
      const { fiber, publisher } = yield* startPublisher(broker)
      const published = yield* publisher.publish("orders", "order.paid", Buffer.from("{}")).pipe(
        counted,
        Effect.forkChild
      )
      yield* settle
      expect(publisher.outstanding()).toBe(1)
      yield* GracefulTest.send("SIGTERM")
      yield* TestClock.adjust("1 second")
      expect(broker.events).toEqual(["publish order.paid"])
      broker.confirmAll()
      const report = yield* Fiber.join(fiber)
      yield* Fiber.join(published)
      expect(broker.events).toEqual(["publish order.paid", "close channel"])
      expect(report.releases.map((r) => `${r.name}:${r.outcome}`)).toEqual(["events:released"])
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("confirms still outstanding at the end of the slice fail the release with their count; the channel still closes", () =>
    Effect.gen(function*() {
      const broker = makeBroker()
      const { fiber, publisher } = yield* startPublisher(broker)
      yield* publisher.publish("orders", "a", Buffer.from("{}")).pipe(counted, Effect.forkChild)
      yield* publisher.publish("orders", "b", Buffer.from("{}")).pipe(counted, Effect.forkChild)
      yield* settle
      yield* GracefulTest.send("SIGTERM")
      // 2 s slice: 1.5 s for the confirms, the rest for the close
      yield* TestClock.adjust("1499 millis")
      expect(broker.events).not.toContain("close channel")
      yield* TestClock.adjust("1 millis")
      const report = yield* Fiber.join(fiber)
      expect(broker.events).toContain("close channel")
      const release = report.releases.find((r) => r.name === "events")!
      expect(release.outcome).toBe("failed")
      expect(release.error).toContain("events: 2 published message(s) still unconfirmed after 1500 ms")
      expect(report.exitCode).toBe(1)
    }).pipe(Effect.provide(GracefulTest.layer)))
})
