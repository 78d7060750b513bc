/**
 * The pub/sub shutdown both subscriber fixtures (NATS core, Redis pub/sub)
 * go through: messages published every 25 ms, a SIGTERM once five handlers
 * have started, and what must hold after: exit 0, no handler started at
 * Closing nor for a message published after the unsubscribe, every handler
 * that started finished, nothing cut, the unsubscribe hook released.
 */
import { expect } from "vitest"
import type { Fixture } from "./harness.ts"

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** `subscriber` prints `STARTED <n> <phase>`, `ENDED <n>` and `MARK unsubscribed`; `publish` sends message `n`. */
export const publishThroughShutdown = async (subscriber: Fixture, publish: (message: string) => unknown) => {
  const published: Array<{ readonly n: number; readonly at: number }> = []
  let n = 0
  let publishing = true
  const publisher = (async () => {
    while (publishing) {
      n++
      published.push({ n, at: Date.now() })
      await publish(String(n))
      await sleep(25) // the behaviour under test: a steady stream of messages
    }
  })()
  while (subscriber.lines().filter((l) => l.startsWith("STARTED ")).length < 5) await sleep(10) // polling interval
  const sent = subscriber.kill("SIGTERM")
  const exit = await subscriber.exited
  publishing = false
  await publisher

  expect(exit.code, subscriber.output()).toBe(0)
  const lines = subscriber.lines()
  const started = lines.filter((l) => l.startsWith("STARTED ")).map((l) => l.split(" "))
  const ended = new Set(lines.filter((l) => l.startsWith("ENDED ")).map((l) => l.split(" ")[1]))
  const unsubscribedAt = await subscriber.waitFor("unsubscribed")
  // no handler started once the program was Closing ...
  expect(started.map((s) => s[2]).filter((phase) => phase !== "Ready" && phase !== "Draining")).toEqual([])
  // ... nor for any message published after the unsubscribe
  const lastStarted = Math.max(...started.map((s) => Number(s[1])))
  const publishedAfter = published.filter((p) => p.at > unsubscribedAt)
  expect(publishedAfter.length).toBeGreaterThan(0)
  expect(publishedAfter.every((p) => p.n > lastStarted)).toBe(true)
  // every handler that started finished
  expect(started.map((s) => s[1]).filter((id) => !ended.has(id))).toEqual([])
  const report = subscriber.report()
  expect(report.inFlight.atDrainStart).toBeGreaterThan(0)
  expect(report.cut).toEqual([])
  expect(report.hooks.map((h) => `${h.name}:${h.outcome}`)).toEqual([
    "events: unsubscribe:released",
    "mark unsubscribed:released"
  ])
  return { started, publishedAfter, report, exit, sent }
}
