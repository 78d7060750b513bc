import { describe, expect, it } from "@effect/vitest"
import type { Msg, NatsConnection, Subscription, SubscriptionOptions } from "@nats-io/transport-node"
import { Effect, Fiber } from "effect"
import { TestClock } from "effect/testing"
import * as Nats from "../../src/adapters/Nats.ts"
import { Lifecycle } from "../../src/index.ts"
import * as GracefulTest from "../../src/testing.ts"
import { start } from "../support/run.ts"

/** A connection whose drain finishes when the test says so. */
const makeConnection = () => {
  const events: Array<string> = []
  let finishDrain: (() => void) | undefined
  let closed = false
  const connection = {
    drain: () => {
      events.push("drain")
      return new Promise<void>((resolve) => {
        finishDrain = () => {
          closed = true
          resolve()
        }
      })
    },
    close: () => {
      events.push("close")
      closed = true
      return Promise.resolve()
    },
    closed: () => Promise.resolve(),
    isClosed: () => closed,
    isDraining: () => false
  }
  return { events, connection, finishDrain: () => finishDrain?.() }
}

describe("Nats.fromConnection", () => {
  it.effect("is released with drain() at Releasing", () =>
    Effect.gen(function*() {
      const nc = makeConnection()
      const fiber = yield* start(
        Nats.fromConnection(nc.connection, { timeout: "3 seconds" }).pipe(Effect.andThen(Effect.never))
      )
      yield* GracefulTest.send("SIGTERM")
      yield* TestClock.adjust("1 second")
      expect(nc.events).toEqual(["drain"])
      nc.finishDrain()
      const report = yield* Fiber.join(fiber)
      expect(nc.events).toEqual(["drain"])
      expect(report.releases.map((r) => `${r.name}:${r.outcome}`)).toEqual(["nats:released"])
      expect(report.exitCode).toBe(0)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("a drain that does not finish within the slice: closed outright, the release fails and says so", () =>
    Effect.gen(function*() {
      const nc = makeConnection()
      const fiber = yield* start(
        Nats.fromConnection(nc.connection, { timeout: "2 seconds" }).pipe(Effect.andThen(Effect.never))
      )
      yield* GracefulTest.send("SIGTERM")
      // 2 s slice: 1.75 s for the drain, then close
      yield* TestClock.adjust("1749 millis")
      expect(nc.events).toEqual(["drain"])
      yield* TestClock.adjust("1 millis")
      const report = yield* Fiber.join(fiber)
      expect(nc.events).toEqual(["drain", "close"])
      const release = report.releases.find((r) => r.name === "nats")!
      expect(release.outcome).toBe("failed")
      expect(release.error).toContain("nats: drain did not finish within 1750 ms; the connection was closed")
      expect(report.exitCode).toBe(1)
    }).pipe(Effect.provide(GracefulTest.layer)))
})

describe("Nats.subscribe", () => {
  it.effect("unsubscribes at Closing: handlers already running finish, none starts after", () =>
    Effect.gen(function*() {
      const events: Array<string> = []
      let deliver: ((message: Msg) => void) | undefined
      const connection = {
        subscribe: (subject: string, options: SubscriptionOptions) => {
          events.push(`subscribe ${subject}`)
          deliver = (message) => options.callback!(null, message)
          let closed = false
          return {
            unsubscribe: () => {
              events.push("unsubscribe")
              closed = true
            },
            isClosed: () => closed
          } as unknown as Subscription
        }
      } as unknown as NatsConnection
      const message = (n: number) => ({ subject: "events", string: () => String(n) }) as unknown as Msg
      let stats: Effect.Effect<Nats.SubscriptionStats> | undefined
      const fiber = yield* start(
        Effect.gen(function*() {
          // hooks run in reverse registration order: this one after the unsubscribe
          yield* Lifecycle.addHook("after unsubscribe", "Closing", Effect.sync(() => events.push("closing")))
          const subscription = yield* Nats.subscribe({
            connection,
            subject: "events",
            name: "events",
            handler: (message) =>
              Effect.sleep("1 second").pipe(
                Effect.andThen(Effect.sync(() => events.push(`handled ${message.string()}`)))
              )
          })
          stats = subscription.stats
          return yield* Effect.never
        }),
        { timeout: "10 seconds", drainTimeout: "5 seconds" }
      )
      deliver!(message(1))
      deliver!(message(2))
      yield* TestClock.adjust("500 millis")
      yield* GracefulTest.send("SIGTERM")
      deliver!(message(3))
      yield* TestClock.adjust("500 millis")
      const report = yield* Fiber.join(fiber)
      expect(events).toEqual(["subscribe events", "unsubscribe", "closing", "handled 1", "handled 2"])
      expect(yield* stats!).toEqual({ received: 3, handled: 2, failed: 0, dropped: 1, running: 0 })
      expect(report.inFlight).toEqual({ atDrainStart: 2, atDrainEnd: 0 })
      expect(report.exitCode).toBe(0)
    }).pipe(Effect.provide(GracefulTest.layer)))
})
