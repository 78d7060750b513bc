import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Fiber, Layer } from "effect"
import { TestClock } from "effect/testing"
import { InFlight, Lifecycle, type Report, Resource } from "../src/index.ts"
import * as GracefulTest from "../src/testing.ts"
import { settle, start } from "./support/run.ts"
import { shutdownSpanNames } from "./support/spans.ts"

const releaseNames = (report: Report.ShutdownReport) => report.releases.map((r) => `${r.name}:${r.outcome}`)

class Log extends Context.Service<Log, { readonly lines: Array<string> }>()("test/Log") {}
class Db extends Context.Service<Db, { readonly name: string }>()("test/Db") {}
class Cache extends Context.Service<Cache, { readonly name: string }>()("test/Cache") {}
class Http extends Context.Service<Http, { readonly name: string }>()("test/Http") {}

describe("release order", () => {
  it.effect("reverse acquisition order across a layer graph", () =>
    Effect.gen(function*() {
      const events: Array<string> = []
      const managed = <I, S>(tag: Context.Key<I, S>, name: string, value: S) =>
        Resource.layer(tag, name, {
          acquire: Effect.sync(() => {
            events.push(`acquire ${name}`)
            return value
          }),
          release: () => Effect.sync(() => events.push(`release ${name}`))
        })
      const LogLive = managed(Log, "log", { lines: [] })
      const DbLive = managed(Db, "db", { name: "db" }).pipe(Layer.provide(LogLive))
      const CacheLive = managed(Cache, "cache", { name: "cache" }).pipe(Layer.provide(LogLive))
      const HttpLive = Resource.layer(Http, "http", {
        acquire: Effect.gen(function*() {
          yield* Db
          yield* Cache
          events.push("acquire http")
          return { name: "http" }
        }),
        release: () => Effect.sync(() => events.push("release http"))
      }).pipe(Layer.provide(Layer.mergeAll(DbLive, CacheLive)))

      const fiber = yield* start(Layer.launch(HttpLive))
      yield* GracefulTest.send("SIGTERM")
      const report = yield* Fiber.join(fiber)

      const acquired = events.filter((e) => e.startsWith("acquire")).map((e) => e.slice(8))
      const released = events.filter((e) => e.startsWith("release")).map((e) => e.slice(8))
      expect(acquired[0]).toBe("log")
      expect(acquired.at(-1)).toBe("http")
      expect(released).toEqual([...acquired].reverse())
      expect(report.releases.map((r) => r.name)).toEqual(released)
      expect(report.exitCode).toBe(0)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("a failing release is reported and does not skip the others", () =>
    Effect.gen(function*() {
      const released: Array<string> = []
      const fiber = yield* start(Effect.gen(function*() {
        yield* Resource.addFinalizer("first", Effect.sync(() => released.push("first")))
        yield* Resource.addFinalizer("broken", Effect.fail(new Error("disk gone")))
        yield* Resource.addFinalizer("dies", Effect.die("bug"))
        yield* Resource.addFinalizer("last", Effect.sync(() => released.push("last")))
        return yield* Effect.never
      }))
      yield* GracefulTest.send("SIGTERM")
      const report = yield* Fiber.join(fiber)
      expect(released).toEqual(["last", "first"])
      expect(releaseNames(report)).toEqual(["last:released", "dies:failed", "broken:failed", "first:released"])
      expect(report.releases.find((r) => r.name === "broken")?.error).toContain("disk gone")
      expect(report.outcome).toBe("degraded")
      expect(report.exitCode).toBe(1)
    }).pipe(Effect.provide(GracefulTest.layer)))
})

describe("deadlines", () => {
  it.effect("a hung release is bounded by its own timeout and the rest still run", () =>
    Effect.gen(function*() {
      const released: Array<string> = []
      const fiber = yield* start(Effect.gen(function*() {
        yield* Resource.addFinalizer("db", Effect.sync(() => released.push("db")))
        yield* Resource.addFinalizer("hangs", Effect.never, { timeout: "2 seconds" })
        return yield* Effect.never
      }))
      yield* GracefulTest.send("SIGTERM")
      yield* TestClock.adjust("1999 millis")
      expect(released).toEqual([])
      yield* TestClock.adjust("1 millis")
      const report = yield* Fiber.join(fiber)
      expect(released).toEqual(["db"])
      expect(releaseNames(report)).toEqual(["hangs:timedOut", "db:released"])
      expect(report.releases[0]!.durationMs).toBe(2000)
      expect(report.exitCode).toBe(1)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("a release that ignores interruption is abandoned at the budget; later ones are skipped", () =>
    Effect.gen(function*() {
      const fiber = yield* start(
        Effect.gen(function*() {
          yield* Resource.addFinalizer("db", Effect.void)
          yield* Resource.addFinalizer("stuck", Effect.uninterruptible(Effect.never))
          return yield* Effect.never
        }),
        { timeout: "5 seconds" }
      )
      yield* GracefulTest.send("SIGTERM")
      yield* TestClock.adjust("5 seconds")
      const report = yield* Fiber.join(fiber)
      expect(releaseNames(report)).toEqual(["stuck:timedOut", "db:skipped"])
      expect(report.durationMs).toBe(5000)
      expect(report.outcome).toBe("degraded")
      expect(report.exitCode).toBe(1)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("an unmanaged finalizer that never ends cannot hold the shutdown past the budget", () =>
    Effect.gen(function*() {
      const fiber = yield* start(
        Effect.gen(function*() {
          yield* Effect.addFinalizer(() => Effect.never)
          return yield* Effect.never
        }),
        { timeout: "3 seconds" }
      )
      yield* GracefulTest.send("SIGTERM")
      yield* TestClock.adjust("3 seconds")
      const report = yield* Fiber.join(fiber)
      expect(report.durationMs).toBe(3000)
      expect(report.exitCode).toBe(1)
      expect(yield* GracefulTest.exits).toEqual([])
    }).pipe(Effect.provide(GracefulTest.layer)))
})

describe("drain", () => {
  it.effect("lame duck, then waits for in-flight work to finish before releasing", () =>
    Effect.gen(function*() {
      const events: Array<string> = []
      let lifecycle: Lifecycle.LifecycleService | undefined
      const fiber = yield* start(
        Effect.gen(function*() {
          lifecycle = yield* Lifecycle.Lifecycle
          yield* Resource.addFinalizer("db", Effect.sync(() => events.push("release db")))
          yield* Effect.forkChild(
            InFlight.track(Effect.sleep("4 seconds").pipe(Effect.andThen(Effect.sync(() => events.push("job done")))), {
              kind: "job",
              label: "j1"
            })
          )
          return yield* Effect.never
        }),
        { timeout: "20 seconds", delay: "2 seconds", drainTimeout: "10 seconds" }
      )
      expect(lifecycle!.phaseUnsafe()).toBe("Ready")
      yield* GracefulTest.send("SIGTERM")
      expect(lifecycle!.phaseUnsafe()).toBe("Draining")
      yield* TestClock.adjust("2 seconds")
      expect(lifecycle!.phaseUnsafe()).toBe("Closing")
      yield* TestClock.adjust("2 seconds")
      const report = yield* Fiber.join(fiber)
      expect(events).toEqual(["job done", "release db"])
      expect(report.cut).toEqual([])
      expect(report.inFlight).toEqual({ atDrainStart: 1, atDrainEnd: 0 })
      expect(report.phases.map((p) => [p.phase, p.at, p.durationMs])).toEqual([
        ["draining", 0, 2000],
        ["closing", 2000, 2000],
        ["releasing", 4000, 0]
      ])
      expect(report.exitCode).toBe(0)
      expect(lifecycle!.phaseUnsafe()).toBe("Stopped")
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("work still running at the drain deadline is cut and recorded", () =>
    Effect.gen(function*() {
      const fiber = yield* start(
        Effect.gen(function*() {
          yield* Effect.forkChild(InFlight.track(Effect.never, { kind: "request", label: "GET /slow" }))
          return yield* Effect.never
        }),
        { timeout: "10 seconds", drainTimeout: "3 seconds" }
      )
      yield* TestClock.adjust("500 millis")
      yield* GracefulTest.send("SIGTERM")
      yield* TestClock.adjust("3 seconds")
      const report = yield* Fiber.join(fiber)
      expect(report.cut).toEqual([{ kind: "request", label: "GET /slow", ageMs: 3500 }])
      expect(report.inFlight).toEqual({ atDrainStart: 1, atDrainEnd: 1 })
      expect(report.phases.map((p) => p.phase)).toEqual(["draining", "closing", "cutting", "releasing"])
      expect(report.outcome).toBe("degraded")
      expect(report.exitCode).toBe(1)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("Closing hooks run once, in reverse registration order, before the drain", () =>
    Effect.gen(function*() {
      const events: Array<string> = []
      const fiber = yield* start(Effect.gen(function*() {
        yield* Lifecycle.addHook("listener a", "Closing", Effect.sync(() => events.push("close a")))
        yield* Lifecycle.addHook("listener b", "Closing", Effect.sync(() => events.push("close b")))
        yield* Lifecycle.addHook("broken", "Closing", Effect.fail("nope"))
        yield* Lifecycle.addHook("lame duck", "Draining", Effect.sync(() => events.push("draining")))
        yield* Resource.addFinalizer("db", Effect.sync(() => events.push("release db")))
        return yield* Effect.never
      }))
      yield* GracefulTest.send("SIGTERM")
      const report = yield* Fiber.join(fiber)
      expect(events).toEqual(["draining", "close b", "close a", "release db"])
      expect(report.hooks.map((h) => `${h.name}:${h.outcome}`)).toEqual([
        "lame duck:released",
        "broken:failed",
        "listener b:released",
        "listener a:released"
      ])
      expect(report.releases.map((r) => r.name)).toEqual(["db"])
      expect(report.outcome).toBe("degraded")
    }).pipe(Effect.provide(GracefulTest.layer)))
})

describe("triggers", () => {
  it.effect("triggering twice runs nothing twice; the first trigger is recorded", () =>
    Effect.gen(function*() {
      let releases = 0
      let hooks = 0
      const fiber = yield* start(Effect.gen(function*() {
        yield* Lifecycle.addHook("hook", "Closing", Effect.sync(() => hooks++))
        yield* Resource.addFinalizer("db", Effect.sleep("1 second").pipe(Effect.andThen(Effect.sync(() => releases++))))
        yield* Lifecycle.shutdown("config reload")
        yield* Lifecycle.shutdown("again")
        return yield* Effect.never
      }))
      // A signal during a programmatic shutdown is the first signal: no escalation.
      yield* GracefulTest.send("SIGTERM")
      yield* TestClock.adjust("1 second")
      const report = yield* Fiber.join(fiber)
      expect(report.trigger).toEqual({ _tag: "Requested", reason: "config reload" })
      expect(releaseNames(report)).toEqual(["db:released"])
      expect(report.hooks.map((h) => `${h.name}:${h.outcome}`)).toEqual(["hook:released"])
      expect(releases).toBe(1)
      expect(hooks).toBe(1)
      expect(report.signals).toBe(1)
      expect(report.exitCode).toBe(0)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("PM2's shutdown message triggers like a signal; Ready notifies PM2 once", () =>
    Effect.gen(function*() {
      const fiber = yield* start(Effect.never)
      const signals = yield* GracefulTest.TestSignals
      const host = yield* GracefulTest.TestHost
      expect(host.readyCount()).toBe(1)
      signals.message("shutdown")
      const report = yield* Fiber.join(fiber)
      expect(report.trigger).toEqual({ _tag: "Message", message: "shutdown" })
      expect(signals.listeners()).toBe(0)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("a program that completes shuts down cleanly without waiting for a signal", () =>
    Effect.gen(function*() {
      const released: Array<string> = []
      const fiber = yield* start(Effect.gen(function*() {
        yield* Resource.addFinalizer("db", Effect.sync(() => released.push("db")))
        yield* Effect.sleep("1 second")
      }))
      yield* TestClock.adjust("1 second")
      const report = yield* Fiber.join(fiber)
      expect(report.trigger).toEqual({ _tag: "Completed" })
      expect(released).toEqual(["db"])
      expect(report.exitCode).toBe(0)
    }).pipe(Effect.provide(GracefulTest.layer)))
})

describe("escalation", () => {
  it.effect("2nd signal stops the drain, cuts, and releases within the emergency budget", () =>
    Effect.gen(function*() {
      const fiber = yield* start(
        Effect.gen(function*() {
          yield* Resource.addFinalizer("slow", Effect.sleep("10 seconds"))
          yield* Effect.forkChild(InFlight.track(Effect.never, { kind: "job", label: "stuck" }))
          return yield* Effect.never
        }),
        { timeout: "20 seconds", drainTimeout: "15 seconds", emergencyTimeout: "1 second" }
      )
      yield* GracefulTest.send("SIGTERM")
      yield* TestClock.adjust("2 seconds")
      yield* GracefulTest.send("SIGTERM")
      yield* TestClock.adjust("1 second")
      const report = yield* Fiber.join(fiber)
      expect(report.signals).toBe(2)
      expect(report.cut.map((c) => c.label)).toEqual(["stuck"])
      expect(releaseNames(report)).toEqual(["slow:timedOut"])
      expect(report.durationMs).toBe(3000)
      expect(report.exitCode).toBe(1)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("one signal delivered twice within 50 ms (Ctrl-C under npm start) counts once; a later one escalates", () =>
    Effect.gen(function*() {
      const fiber = yield* start(
        Effect.gen(function*() {
          yield* Resource.addFinalizer("slow", Effect.sleep("5 seconds"))
          return yield* Effect.never
        }),
        { timeout: "20 seconds", emergencyTimeout: "1 second" }
      )
      yield* GracefulTest.send("SIGINT")
      yield* TestClock.adjust("10 millis")
      yield* GracefulTest.send("SIGINT")
      yield* TestClock.adjust("1 second")
      // Not escalated: the release still has its time.
      expect(fiber.pollUnsafe()).toBeUndefined()
      yield* GracefulTest.send("SIGINT")
      yield* TestClock.adjust("1 second")
      const report = yield* Fiber.join(fiber)
      expect(report.signals).toBe(2)
      expect(releaseNames(report)).toEqual(["slow:timedOut"])
      expect(report.durationMs).toBe(2010)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("3rd signal exits at once with 143 (SIGTERM) and writes what it knows", () =>
    Effect.gen(function*() {
      const fiber = yield* start(Effect.gen(function*() {
        yield* Resource.addFinalizer("slow", Effect.never)
        return yield* Effect.never
      }))
      yield* GracefulTest.send("SIGTERM")
      yield* TestClock.adjust("100 millis")
      yield* GracefulTest.send("SIGTERM")
      yield* TestClock.adjust("100 millis")
      expect(yield* GracefulTest.exits).toEqual([])
      yield* GracefulTest.send("SIGTERM")
      expect(yield* GracefulTest.exits).toEqual([143])
      const report = yield* Fiber.join(fiber)
      expect(report.outcome).toBe("forced")
      expect(report.signals).toBe(3)
      expect(releaseNames(report)).toEqual(["slow:timedOut"])
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("3rd SIGINT exits with 130", () =>
    Effect.gen(function*() {
      yield* start(Effect.gen(function*() {
        yield* Resource.addFinalizer("slow", Effect.never)
        return yield* Effect.never
      }))
      for (let i = 0; i < 3; i++) {
        yield* GracefulTest.send("SIGINT")
        yield* TestClock.adjust("100 millis")
      }
      expect((yield* GracefulTest.exits)[0]).toBe(130)
    }).pipe(Effect.provide(GracefulTest.layer)))
})

describe("defect path", () => {
  it.effect("an uncaught exception skips the lame duck and the drain and exits 1", () =>
    Effect.gen(function*() {
      const events: Array<string> = []
      const fiber = yield* start(
        Effect.gen(function*() {
          yield* Resource.addFinalizer("db", Effect.sync(() => events.push("release db")))
          yield* Effect.forkChild(InFlight.track(Effect.never, { kind: "request", label: "GET /work" }))
          return yield* Effect.never
        }),
        { timeout: "20 seconds", delay: "5 seconds", emergencyTimeout: "1 second" }
      )
      yield* GracefulTest.crash(new Error("boom"))
      const report = yield* Fiber.join(fiber)
      expect(report.trigger._tag).toBe("Defect")
      expect(report.trigger._tag === "Defect" && report.trigger.cause).toContain("boom")
      expect(report.phases.map((p) => p.phase)).toEqual(["cutting", "releasing"])
      expect(report.cut.map((c) => c.label)).toEqual(["GET /work"])
      expect(events).toEqual(["release db"])
      expect(report.durationMs).toBeLessThan(1000)
      expect(report.outcome).toBe("defect")
      expect(report.exitCode).toBe(1)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("a defect releases within the emergency budget", () =>
    Effect.gen(function*() {
      const fiber = yield* start(
        Effect.gen(function*() {
          yield* Resource.addFinalizer("slow", Effect.sleep("10 seconds"))
          return yield* Effect.never
        }),
        { timeout: "20 seconds", emergencyTimeout: "1 second" }
      )
      yield* GracefulTest.crash("rejected", "unhandledRejection")
      yield* TestClock.adjust("1 second")
      const report = yield* Fiber.join(fiber)
      expect(report.trigger).toMatchObject({ _tag: "Defect", source: "unhandledRejection" })
      expect(releaseNames(report)).toEqual(["slow:timedOut"])
      expect(report.durationMs).toBe(1000)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("a program that dies takes the defect path", () =>
    Effect.gen(function*() {
      const fiber = yield* start(
        Effect.gen(function*() {
          yield* Resource.addFinalizer("db", Effect.void)
          yield* Effect.sleep("1 second")
          return yield* Effect.die(new Error("invariant broken"))
        }),
        { timeout: "20 seconds", delay: "5 seconds" }
      )
      yield* TestClock.adjust("1 second")
      const report = yield* Fiber.join(fiber)
      expect(report.trigger).toMatchObject({ _tag: "Defect", source: "program" })
      expect(releaseNames(report)).toEqual(["db:released"])
      expect(report.phases.map((p) => p.phase)).not.toContain("draining")
      expect(report.exitCode).toBe(1)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("emergency budget 0 exits at once", () =>
    Effect.gen(function*() {
      yield* start(Effect.never, { emergencyTimeout: "0 millis" })
      yield* GracefulTest.crash(new Error("boom"))
      expect(yield* GracefulTest.exits).toEqual([1])
    }).pipe(Effect.provide(GracefulTest.layer)))
})

describe("observability", () => {
  it.effect("in-flight gauge, cut counter, drain and shutdown histograms", () =>
    Effect.gen(function*() {
      const { Metric } = yield* Effect.promise(() => import("effect"))
      const { Metrics } = yield* Effect.promise(() => import("../src/index.ts"))
      // The metric registry is shared by the tests in this file: compare deltas.
      const cutBefore = (yield* Metric.value(Metrics.cut)).count
      const drainsBefore = (yield* Metric.value(Metrics.drainDuration)).count
      const shutdownsBefore = (yield* Metric.value(Metrics.shutdownDuration)).count
      let gaugeWhileRunning = -1
      const fiber = yield* start(
        Effect.gen(function*() {
          yield* Effect.forkChild(InFlight.track(Effect.never, { kind: "job", label: "a" }))
          yield* Effect.forkChild(InFlight.track(Effect.sleep("1 second"), { kind: "job", label: "b" }))
          return yield* Effect.never
        }),
        { timeout: "10 seconds", drainTimeout: "2 seconds" }
      )
      gaugeWhileRunning = (yield* Metric.value(Metrics.inFlight)).value
      yield* GracefulTest.send("SIGTERM")
      yield* TestClock.adjust("2 seconds")
      yield* Fiber.join(fiber)
      expect(gaugeWhileRunning).toBe(2)
      expect((yield* Metric.value(Metrics.inFlight)).value).toBe(0)
      expect((yield* Metric.value(Metrics.cut)).count - cutBefore).toBe(1)
      const drain = yield* Metric.value(Metrics.drainDuration)
      expect(drain.count - drainsBefore).toBe(1)
      expect(drain.max).toBeGreaterThanOrEqual(2000)
      expect((yield* Metric.value(Metrics.shutdownDuration)).count - shutdownsBefore).toBe(1)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("phase changes are observable as a stream", () =>
    Effect.gen(function*() {
      const { Stream } = yield* Effect.promise(() => import("effect"))
      const seen: Array<Lifecycle.Phase> = []
      const fiber = yield* start(
        Effect.gen(function*() {
          const lifecycle = yield* Lifecycle.Lifecycle
          yield* Effect.forkDetach(Stream.runForEach(lifecycle.changes, (phase) => Effect.sync(() => seen.push(phase))))
          return yield* Effect.never
        }),
        { timeout: "10 seconds", delay: "1 second" }
      )
      yield* GracefulTest.send("SIGTERM")
      yield* TestClock.adjust("1 second")
      yield* Fiber.join(fiber)
      // The detached stream fiber sees the last change once it has run.
      yield* settle
      expect(seen).toEqual(["Ready", "Draining", "Closing", "Releasing", "Stopped"])
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("work that arrives after the cut is interrupted and recorded", () =>
    Effect.gen(function*() {
      let late: Effect.Effect<void, never, InFlight.InFlight> | undefined
      let lateRan = false
      const fiber = yield* start(Effect.gen(function*() {
        yield* Resource.addFinalizer(
          "late work",
          Effect.gen(function*() {
            // A release that tries to start tracked work after the drain.
            yield* late!
          }).pipe(Effect.provideService(InFlight.InFlight, yield* InFlight.InFlight))
        )
        return yield* Effect.never
      }))
      late = InFlight.track(
        Effect.sync(() => {
          lateRan = true
        }),
        { kind: "job", label: "late" }
      )
      yield* GracefulTest.send("SIGTERM")
      const report = yield* Fiber.join(fiber)
      expect(lateRan).toBe(false)
      expect(report.cut).toEqual([{ kind: "job", label: "late", ageMs: 0 }])
    }).pipe(Effect.provide(GracefulTest.layer)))
})

describe("tracing", () => {
  it.effect("a span for the shutdown, each phase and each release", () =>
    Effect.gen(function*() {
      const { Tracer } = yield* Effect.promise(() => import("effect"))
      const names: Array<string> = []
      const tracer = Tracer.make({
        span: (options) => {
          names.push(options.name)
          return Tracer.nativeTracer.span(options)
        }
      })
      const fiber = yield* start(
        Effect.gen(function*() {
          yield* Resource.addFinalizer("db", Effect.void)
          yield* Effect.forkChild(InFlight.track(Effect.never, { kind: "job", label: "a" }))
          return yield* Effect.never
        }),
        { timeout: "10 seconds", delay: "1 second", drainTimeout: "2 seconds" }
      ).pipe(Effect.withTracer(tracer))
      yield* GracefulTest.send("SIGTERM")
      yield* TestClock.adjust("3 seconds")
      yield* Fiber.join(fiber)
      expect(names).toEqual(expect.arrayContaining([...shutdownSpanNames]))
    }).pipe(Effect.provide(GracefulTest.layer)))
})
