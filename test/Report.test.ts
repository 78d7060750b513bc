import { describe, expect, it } from "@effect/vitest"
import { Schema } from "effect"
import { Report } from "../src/index.ts"

const bytes = (text: string) => Buffer.byteLength(text, "utf8")
const decode = (text: string) => Schema.decodeUnknownSync(Report.ShutdownReport)(JSON.parse(text))

/** A report as the example service makes it when `cut` requests were cut at the deadline. */
const reportWith = (cut: number, extra: Partial<Report.ShutdownReport> = {}): Report.ShutdownReport => ({
  outcome: "degraded",
  exitCode: 1,
  durationMs: 17_043,
  trigger: { _tag: "Signal", signal: "SIGTERM" },
  startedAt: 1_763_712_000_000,
  budgetMs: 25_000,
  signals: 1,
  inFlight: { atDrainStart: cut + 2, atDrainEnd: cut },
  phases: [
    { phase: "draining", at: 0, durationMs: 5000 },
    { phase: "closing", at: 5000, durationMs: 12_000 },
    { phase: "cutting", at: 17_000, durationMs: 2 },
    { phase: "releasing", at: 17_002, durationMs: 41 }
  ],
  hooks: [{ name: "http listener", outcome: "released", at: 5000, durationMs: 1, deadlineMs: 12_000 }],
  releases: [
    { name: "http", outcome: "released", at: 17_003, durationMs: 3, deadlineMs: 7997 },
    { name: "jsonl", outcome: "timedOut", at: 17_006, durationMs: 30, deadlineMs: 30 },
    { name: "db", outcome: "released", at: 17_036, durationMs: 8, deadlineMs: 7964 }
  ],
  cut: Array.from({ length: cut }, (_, i) => ({
    kind: i % 10 === 9 ? "websocket" : "request",
    label: i % 10 === 9 ? "GET /ws" : `GET /work?ms=${60_000 + i}`,
    // Arrival order: the first item is the oldest.
    ageMs: 20_000 - i * 10
  })),
  ...extra
})

describe("Report.toJson", () => {
  it("puts the outcome, the exit code and the duration first, and the cut list last", () => {
    const json = Report.toJson(reportWith(3))
    expect(json.startsWith("{\"outcome\":\"degraded\",\"exitCode\":1,\"durationMs\":17043,\"trigger\":")).toBe(true)
    expect(Object.keys(JSON.parse(json)).at(-1)).toBe("cut")
  })

  it("decodes a report written before the new fields existed", () => {
    const old =
      "{\"trigger\":{\"_tag\":\"Signal\",\"signal\":\"SIGTERM\"},\"startedAt\":0,\"signals\":1,\"phases\":[]," +
      "\"hooks\":[],\"releases\":[],\"inFlight\":{\"atDrainStart\":0,\"atDrainEnd\":0},\"cut\":[]," +
      "\"outcome\":\"clean\",\"exitCode\":0,\"durationMs\":3}"
    expect(decode(old).exitCode).toBe(0)
  })
})

describe("Report.fit", () => {
  it("returns the full JSON when it fits", () => {
    const report = reportWith(2)
    expect(Report.fit(report, 4096)).toBe(Report.toJson(report))
  })

  it("300 cut requests (16 KB in full) fit 4096 bytes: summary first, cut counted by kind, the oldest named", () => {
    const report = reportWith(300)
    expect(bytes(Report.toJson(report))).toBeGreaterThan(16_000)
    const text = Report.fit(report, Report.TERMINATION_LOG_MAX_BYTES)
    expect(bytes(text)).toBeLessThanOrEqual(4096)
    expect(text.startsWith("{\"outcome\":\"degraded\",\"exitCode\":1,")).toBe(true)
    const fitted = decode(text)
    expect(fitted.cutByKind).toEqual([
      { kind: "request", count: 270, oldestAgeMs: 20_000 },
      { kind: "websocket", count: 30, oldestAgeMs: 19_910 }
    ])
    expect(fitted.cut.map((c) => c.label)).toEqual([
      "GET /work?ms=60000",
      "GET /work?ms=60001",
      "GET /work?ms=60002",
      "GET /work?ms=60003",
      "GET /work?ms=60004"
    ])
    expect(fitted.omitted?.cut).toBe(295)
    expect(fitted.cut.length + fitted.omitted!.cut!).toBe(300)
    // The rest is kept whole when there is room.
    expect(fitted.releases).toEqual(report.releases)
    expect(fitted.phases).toEqual(report.phases)
    expect(fitted.inFlight).toEqual(report.inFlight)
  })

  it("keeps a release's detail while everything fits, drops it (counted) before any failure", () => {
    const detail = { shardsHeld: 10, shardsReleased: 10, handlersCut: 0 }
    const withDetail = reportWith(2, {
      releases: [{
        name: "cluster runner",
        outcome: "released",
        at: 17_003,
        durationMs: 61,
        deadlineMs: 20_000,
        detail
      }]
    })
    expect(decode(Report.fit(withDetail, 4096)).releases[0]!.detail).toEqual(detail)
    // 60 released pools do not fit 2048 bytes: released entries go, then details.
    const pools = Array.from({ length: 60 }, (_, i): Report.ReleaseRecord => ({
      name: `pool-${i}`,
      outcome: "released",
      at: 17_000 + i,
      durationMs: 1,
      deadlineMs: 5000
    }))
    const crowded = reportWith(300, {
      releases: [
        ...pools,
        {
          name: "cluster runner",
          outcome: "failed",
          at: 17_003,
          durationMs: 61,
          deadlineMs: 20_000,
          detail,
          error: "x"
        }
      ]
    })
    const fitted = decode(Report.fit(crowded, 2048))
    expect(fitted.releases.map((r) => [r.name, r.outcome, r.detail])).toEqual([["cluster runner", "failed", undefined]])
    expect(fitted.omitted?.details).toBe(1)
  })

  it("keeps failures longest: released entries go before a timed-out one", () => {
    const releases = Array.from({ length: 60 }, (_, i): Report.ReleaseRecord => ({
      name: `pool-${i}`,
      outcome: i === 7 ? "timedOut" : "released",
      at: 17_000 + i,
      durationMs: 1,
      deadlineMs: 5000
    }))
    const text = Report.fit(reportWith(300, { releases }), 2048)
    expect(bytes(text)).toBeLessThanOrEqual(2048)
    const fitted = decode(text)
    expect(fitted.releases.map((r) => `${r.name}:${r.outcome}`)).toEqual(["pool-7:timedOut"])
    expect(fitted.omitted?.releases).toBe(59)
  })

  it("shortens a long defect cause, marked with …", () => {
    const cause = "Error: boom\n" +
      Array.from({ length: 200 }, (_, i) => `    at frame${i} (/app/src/file${i}.ts:1:1)`).join("\n")
    const report = reportWith(300, {
      outcome: "defect",
      trigger: { _tag: "Defect", source: "uncaughtException", cause }
    })
    const text = Report.fit(report, 4096)
    expect(bytes(text)).toBeLessThanOrEqual(4096)
    const fitted = decode(text)
    expect(fitted.trigger._tag).toBe("Defect")
    const kept = (fitted.trigger as { cause: string }).cause
    expect(kept.startsWith("Error: boom\n    at frame0")).toBe(true)
    expect(kept.endsWith("…")).toBe(true)
  })

  it("fits any report into the smallest limit, still decodable, multi-byte text included", () => {
    const huge = "é".repeat(5000)
    const report = reportWith(2000, {
      trigger: { _tag: "Requested", reason: huge },
      hooks: Array.from({ length: 50 }, (_, i) => ({
        name: `hook ${i} ${huge.slice(0, 50)}`,
        outcome: "failed" as const,
        at: 0,
        durationMs: 0,
        deadlineMs: 0,
        error: huge
      })),
      heldBy: {
        at: 25_000,
        reason: "watchdog",
        openReleases: Array.from({ length: 40 }, (_, i) => `release ${i}`),
        activeResources: Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`Type${i}`, i + 1])),
        handles: Array.from({ length: 10 }, (_, i) => `Socket 127.0.0.1:${40_000 + i} -> 127.0.0.1:5432`)
      }
    })
    for (const limit of [512, 1024, 4096, 8192]) {
      const text = Report.fit(report, limit)
      expect(bytes(text), `limit ${limit}`).toBeLessThanOrEqual(limit)
      const fitted = decode(text)
      expect(fitted.exitCode).toBe(1)
      expect(fitted.outcome).toBe("degraded")
    }
    // A larger limit keeps more.
    expect(decode(Report.fit(report, 8192)).cut.length).toBeGreaterThanOrEqual(
      decode(Report.fit(report, 1024)).cut.length
    )
  })

  it("keeps what held the event loop, largest counts first", () => {
    const report = reportWith(300, {
      heldBy: {
        at: 25_050,
        reason: "watchdog",
        openReleases: ["db"],
        activeResources: { Timeout: 1, TCPSocketWrap: 3 },
        handles: ["Socket 127.0.0.1:41234 -> 127.0.0.1:5432"]
      }
    })
    const fitted = decode(Report.fit(report, 4096))
    expect(fitted.heldBy).toEqual(report.heldBy)
  })
})

describe("Report.summary", () => {
  it("names the oldest five cut items and counts the rest by kind", () => {
    const lines = Report.summary(reportWith(300)).split("\n")
    expect(lines.filter((l) => l.startsWith("  cut "))).toHaveLength(5)
    expect(lines).toContain("  and 295 more cut (270 request, 30 websocket in all)")
    expect(lines.length).toBeLessThan(15)
  })

  it("reads a fitted report the same way", () => {
    const fitted = decode(Report.fit(reportWith(300), 4096))
    expect(Report.summary(fitted)).toContain("300 cut")
    expect(Report.summary(fitted)).toContain("and 295 more cut (270 request, 30 websocket in all)")
  })

  it("says what held the event loop", () => {
    const text = Report.summary(reportWith(0, {
      heldBy: {
        at: 2050,
        reason: "watchdog",
        openReleases: ["stuck", "db"],
        activeResources: { Timeout: 2, TCPServerWrap: 1 }
      }
    }))
    expect(text).toContain("event loop held at +2050 ms (watchdog) by: releases stuck, db; 2 Timeout, 1 TCPServerWrap")
  })
})
