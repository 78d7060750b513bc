import { describe, expect, it } from "@effect/vitest"
import { connect, createServer, type Server, type Socket } from "node:net"
import * as EventLoop from "../../../src/internal/base/eventLoop.ts"
import { ReportBuilder } from "../../../src/internal/engine/reportBuilder.ts"

const listen = (server: Server) =>
  new Promise<number>((resolve) => {
    server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port))
  })

describe("EventLoop.snapshot", () => {
  it("counts what the process holds by type and describes the sockets and servers", async () => {
    const server = createServer()
    const port = await listen(server)
    const client: Socket = connect(port, "127.0.0.1")
    await new Promise((resolve) => client.on("connect", resolve))
    const timer = setTimeout(() => {}, 60_000)
    try {
      const loop = EventLoop.snapshot()
      expect(loop.activeResources.TCPServerWrap).toBeGreaterThanOrEqual(1)
      expect(loop.activeResources.TCPSocketWrap).toBeGreaterThanOrEqual(2)
      expect(loop.activeResources.Timeout).toBeGreaterThanOrEqual(1)
      expect(loop.handles).toContain(`Server 127.0.0.1:${port}`)
      expect(loop.handles).toContain(`Socket 127.0.0.1:${client.localPort} -> 127.0.0.1:${port}`)
    } finally {
      clearTimeout(timer)
      client.destroy()
      server.close()
    }
  })

  it("does not count what does not hold the loop (unref'd)", async () => {
    const server = createServer()
    const port = await listen(server)
    const before = EventLoop.snapshot()
    server.unref()
    const after = EventLoop.snapshot()
    expect(after.activeResources.TCPServerWrap ?? 0).toBe((before.activeResources.TCPServerWrap ?? 0) - 1)
    expect(after.handles).not.toContain(`Server 127.0.0.1:${port}`)
    server.close()
  })

  it("counts every resource but describes at most ten handles", () => {
    const fake = {
      getActiveResourcesInfo: () => Array.from({ length: 30 }, (_, i) => (i < 25 ? "TCPSocketWrap" : "Timeout")),
      _getActiveHandles: () =>
        Array.from({ length: 25 }, (_, i) => ({
          localAddress: "10.0.0.1",
          localPort: 40_000 + i,
          remoteAddress: "::1",
          remotePort: 5432
        }))
    }
    const loop = EventLoop.snapshot(fake)
    expect(loop.activeResources).toEqual({ TCPSocketWrap: 25, Timeout: 5 })
    expect(loop.handles).toHaveLength(EventLoop.MAX_HANDLES)
    expect(loop.handles[0]).toBe("Object 10.0.0.1:40000 -> [::1]:5432")
  })

  it("a handle whose getters throw is counted, not described", () => {
    const broken = Object.defineProperty({ remotePort: 1 }, "localAddress", {
      get: () => {
        throw new Error("torn down")
      }
    })
    expect(EventLoop.describeHandle(broken)).toBeUndefined()
  })
})

describe("EventLoop.whenStillAlive", () => {
  it("fires only while something else holds the loop, and does not hold it itself", async () => {
    const before = EventLoop.snapshot().activeResources.Timeout ?? 0
    let fired = false
    const cancel = EventLoop.whenStillAlive(10, () => {
      fired = true
    })
    expect(EventLoop.snapshot().activeResources.Timeout ?? 0).toBe(before)
    await new Promise((resolve) => setTimeout(resolve, 50))
    expect(fired).toBe(true)
    let firedAfterCancel = false
    EventLoop.whenStillAlive(10, () => {
      firedAfterCancel = true
    })()
    cancel()
    await new Promise((resolve) => setTimeout(resolve, 50))
    expect(firedAfterCancel).toBe(false)
  })
})

describe("ReportBuilder.markHeld", () => {
  const loop: EventLoop.EventLoopSnapshot = { activeResources: { Timeout: 1 }, handles: [] }

  it("names the releases still open, in release order, and the loop's resources", () => {
    const builder = new ReportBuilder()
    const header = { trigger: { _tag: "Signal", signal: "SIGTERM" } as const, t0: 1000, signals: 0 }
    const log = { name: "log" }
    const db = { name: "db" }
    const stuck = { name: "stuck" }
    builder.register(log)
    builder.register(db)
    builder.register(stuck)
    builder.register({ name: "close listener", hook: true })
    builder.beginRelease(stuck, 100, 1900)
    builder.markHeld("watchdog", 3050, {
      activeResources: { Timeout: 2, TCPServerWrap: 1 },
      handles: ["Server 0.0.0.0:3000"]
    }, header.t0)
    const report = builder.snapshot({
      outcome: "watchdog",
      exitCode: 1,
      now: 3050,
      header: { ...header, budgetMs: 2000 }
    })
    expect(report.heldBy).toEqual({
      at: 2050,
      reason: "watchdog",
      openReleases: ["stuck", "db", "log"],
      activeResources: { Timeout: 2, TCPServerWrap: 1 },
      handles: ["Server 0.0.0.0:3000"]
    })
    expect(report.budgetMs).toBe(2000)
  })

  it("the first overrun is kept; a later aliveAfterStop replaces it", () => {
    const builder = new ReportBuilder()
    const header = { trigger: { _tag: "Signal", signal: "SIGTERM" } as const, t0: 0, signals: 0 }
    builder.markHeld("budget", 100, loop, header.t0)
    builder.markHeld("watchdog", 150, loop, header.t0)
    expect(builder.snapshot({ outcome: "degraded", exitCode: 1, now: 200, header }).heldBy?.reason).toBe("budget")
    builder.markHeld("aliveAfterStop", 1200, { activeResources: { TCPSocketWrap: 1 }, handles: [] }, header.t0)
    const held = builder.snapshot({ outcome: "degraded", exitCode: 1, now: 1200, header }).heldBy
    expect(held).toEqual({
      at: 1200,
      reason: "aliveAfterStop",
      openReleases: [],
      activeResources: { TCPSocketWrap: 1 }
    })
  })

  it("a report with nothing overrun has no heldBy", () => {
    const builder = new ReportBuilder()
    const header = { trigger: { _tag: "Signal", signal: "SIGTERM" } as const, t0: 0, signals: 0 }
    expect("heldBy" in builder.snapshot({ outcome: "clean", exitCode: 0, now: 5, header })).toBe(false)
  })
})

describe("ReportBuilder: abandoned releases and overruns", () => {
  const loop: EventLoop.EventLoopSnapshot = { activeResources: {}, handles: [] }

  it("a release left running at its deadline stays open until its fiber ends", () => {
    const builder = new ReportBuilder()
    const header = { trigger: { _tag: "Signal", signal: "SIGTERM" } as const, t0: 0, signals: 0 }
    const db = { name: "db" }
    builder.register(db)
    builder.register({ name: "log" })
    expect(builder.overran()).toBe(false)
    builder.addRelease({ name: "stuck", outcome: "timedOut", at: 0, durationMs: 2000, deadlineMs: 2000 })
    const settled = builder.abandon("stuck")
    expect(builder.overran()).toBe(true)
    expect(builder.openReleases()).toEqual(["stuck", "log", "db"])
    settled()
    expect(builder.openReleases()).toEqual(["log", "db"])
    builder.markHeld("budget", 2000, loop, header.t0)
    expect(builder.snapshot({ outcome: "degraded", exitCode: 1, now: 2000, header }).heldBy?.openReleases).toEqual([
      "log",
      "db"
    ])
  })

  it("a skipped release is an overrun too", () => {
    const builder = new ReportBuilder()
    builder.addRelease({ name: "db", outcome: "skipped", at: 0, durationMs: 0, deadlineMs: 0 })
    expect(builder.overran()).toBe(true)
  })
})
