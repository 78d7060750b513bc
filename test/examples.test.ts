/**
 * Hermetic checks of the examples' promises that are about their source.
 */
import { Effect } from "effect"
import { describe, expect, it } from "vitest"
import { readFileSync } from "node:fs"
import { join } from "node:path"
import { coalesce } from "../examples/service/Signals.ts"
import type * as Signals from "../src/Signals.ts"

const examples = join(import.meta.dirname, "..", "examples")

/** Lines added plus lines removed between two texts (longest common subsequence). */
const changedLines = (before: string, after: string): number => {
  const a = before.split("\n")
  const b = after.split("\n")
  const lcs: Array<Array<number>> = Array.from({ length: a.length + 1 }, () => new Array<number>(b.length + 1).fill(0))
  for (let i = a.length - 1; i >= 0; i--) {
    for (let j = b.length - 1; j >= 0; j--) {
      lcs[i]![j] = a[i] === b[j] ? lcs[i + 1]![j + 1]! + 1 : Math.max(lcs[i + 1]![j]!, lcs[i]![j + 1]!)
    }
  }
  const common = lcs[0]![0]!
  return (a.length - common) + (b.length - common)
}

describe("examples/express", () => {
  const before = readFileSync(join(examples, "express", "before.ts"), "utf8")
  const after = readFileSync(join(examples, "express", "main.ts"), "utf8")

  it("is made graceful in at most 10 changed lines (added + removed), the app itself untouched", () => {
    expect(changedLines(before, after)).toBeLessThanOrEqual(10)
    expect(changedLines(before, after)).toBeGreaterThan(0)
    // From `const app = express()` to the server: the same lines in both.
    const app = (text: string, end: string) => text.slice(text.indexOf("const app = express()"), text.indexOf(end))
    expect(app(before, "const server")).not.toBe("")
    expect(app(after, "Graceful.runMain")).toBe(app(before, "const server"))
    expect(after).toContain("Http.serveNode")
  })

  it("counts changed lines as a diff would", () => {
    expect(changedLines("a\nb\nc", "a\nb\nc")).toBe(0)
    expect(changedLines("a\nb\nc", "a\nx\nc")).toBe(2)
    expect(changedLines("a\nc", "a\nb\nc")).toBe(1)
  })
})

describe("examples/service/Signals.ts: coalesce", () => {
  it("drops a repeat of the same signal within the window (one Ctrl-C under npm start), keeps the rest", async () => {
    let emit: (event: Signals.SignalEvent) => void = () => {}
    const source: Signals.SignalSource = {
      listen: (handler) => Effect.sync(() => void (emit = handler))
    }
    const seen: Array<string> = []
    await Effect.runPromise(
      coalesce(source, 100).listen((event) => seen.push(event._tag === "Signal" ? event.signal : event._tag)).pipe(
        Effect.scoped
      )
    )
    emit({ _tag: "Signal", signal: "SIGINT" })
    emit({ _tag: "Signal", signal: "SIGINT" }) // npm's forward, a few ms later
    emit({ _tag: "Signal", signal: "SIGTERM" }) // another signal passes
    emit({ _tag: "Message", message: "shutdown" })
    await new Promise((resolve) => setTimeout(resolve, 150))
    emit({ _tag: "Signal", signal: "SIGINT" }) // a deliberate second Ctrl-C escalates
    expect(seen).toEqual(["SIGINT", "SIGTERM", "Message", "SIGINT"])
  })
})
