/**
 * Hermetic checks of the examples' promises that are about their source.
 */
import { readFileSync } from "node:fs"
import { join } from "node:path"
import { describe, expect, it } from "vitest"

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
