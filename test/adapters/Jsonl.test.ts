import { afterEach, describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Logger, Scope } from "effect"
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as Jsonl from "../../src/adapters/Jsonl.ts"
import { Lifecycle } from "../../src/index.ts"
import * as GracefulTest from "../../src/testing.ts"
import { start } from "../support/run.ts"

const dirs: Array<string> = []
const tempFile = (name = "out.jsonl") => {
  const dir = mkdtempSync(join(tmpdir(), "effect-graceful-jsonl-"))
  dirs.push(dir)
  return join(dir, name)
}
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true })
})

const lines = (path: string): Array<unknown> =>
  readFileSync(path, "utf8").split("\n").filter((line, i, all) => i < all.length - 1 || line !== "").map((line) =>
    JSON.parse(line)
  )

/** A writer in a scope of its own, with a live Lifecycle from Graceful.run. */
const withWriter = <A, E>(
  path: string,
  options: Jsonl.JsonlOptions,
  use: (writer: Jsonl.JsonlWriter) => Effect.Effect<A, E>
) =>
  Effect.gen(function*() {
    const lifecycle = yield* Lifecycle.Lifecycle
    const scope = yield* Scope.make()
    const writer = yield* Jsonl.make(path, options).pipe(
      Effect.provideService(Lifecycle.Lifecycle, lifecycle),
      Scope.provide(scope)
    )
    const exit = yield* Effect.exit(use(writer))
    yield* Scope.close(scope, Exit.void)
    return { writer, exit }
  })

describe("Jsonl", () => {
  it.effect("write succeeds once the whole line is in the file; lines keep the order of the writes", () =>
    Effect.gen(function*() {
      const path = tempFile()
      const fiber = yield* start(Effect.gen(function*() {
        const writer = yield* Jsonl.make(path)
        yield* writer.write({ n: 1, text: "multi\nline\r\nstring" })
        // acknowledged = handed to the OS: another reader sees it now
        expect(readFileSync(path, "utf8")).toBe("{\"n\":1,\"text\":\"multi\\nline\\r\\nstring\"}\n")
        yield* writer.write({ n: 2 })
        yield* writer.write("three")
        yield* writer.write(null)
        expect(lines(path)).toEqual([{ n: 1, text: "multi\nline\r\nstring" }, { n: 2 }, "three", null])
      }))
      const report = yield* Fiber.join(fiber)
      expect(report.exitCode).toBe(0)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("concurrent writes are batched into few write(2) calls; every line is whole and parses", () =>
    Effect.gen(function*() {
      const path = tempFile()
      const fiber = yield* start(Effect.gen(function*() {
        const writer = yield* Jsonl.make(path)
        const payload = "x".repeat(300)
        yield* Effect.forEach(
          Array.from({ length: 2000 }, (_, i) => i),
          (i) => writer.write({ i, payload }),
          { concurrency: "unbounded", discard: true }
        )
        const stats = yield* writer.stats
        expect(stats.written).toBe(2000)
        expect(stats.writes).toBeLessThan(100)
        const read = lines(path) as Array<{ i: number }>
        expect(read.map((line) => line.i).sort((a, b) => a - b)).toEqual(Array.from({ length: 2000 }, (_, i) => i))
      }))
      expect((yield* Fiber.join(fiber)).exitCode).toBe(0)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("a value with no JSON form is refused with a typed error and nothing is written", () =>
    Effect.gen(function*() {
      const path = tempFile()
      const fiber = yield* start(Effect.gen(function*() {
        const writer = yield* Jsonl.make(path)
        const cyclic: Record<string, unknown> = {}
        cyclic.self = cyclic
        for (const bad of [undefined, 10n, cyclic, () => 1]) {
          const error = yield* Effect.flip(writer.write(bad))
          expect(error._tag).toBe("JsonlEncodeError")
        }
        expect(writer.writeUnsafe(undefined)).toBe(false)
        yield* writer.write({ ok: true })
        expect(lines(path)).toEqual([{ ok: true }])
      }))
      expect((yield* Fiber.join(fiber)).exitCode).toBe(0)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("at release: queued lines are written, fsynced and the file closed; a later write fails with JsonlClosedError", () =>
    Effect.gen(function*() {
      const path = tempFile()
      let writer: Jsonl.JsonlWriter | undefined
      const fiber = yield* start(Effect.gen(function*() {
        writer = yield* Jsonl.make(path, { name: "events" })
        return yield* Effect.never
      }))
      // queued without waiting, right before the shutdown
      for (let i = 0; i < 500; i++) expect(writer!.writeUnsafe({ i })).toBe(true)
      yield* GracefulTest.send("SIGTERM")
      const report = yield* Fiber.join(fiber)
      expect(report.releases.map((r) => `${r.name}:${r.outcome}`)).toEqual(["events:released"])
      expect(lines(path)).toEqual(Array.from({ length: 500 }, (_, i) => ({ i })))
      const stats = yield* writer!.stats
      expect(stats.fsyncs).toBeGreaterThanOrEqual(1)
      expect(stats.queued).toBe(0)
      expect(writer!.isOpen()).toBe(false)
      const error = yield* Effect.flip(writer!.write({ late: true }))
      expect(error).toBeInstanceOf(Jsonl.JsonlClosedError)
      expect(error.message).toBe(`${path} is closed: the writer was released`)
      expect(writer!.writeUnsafe({ late: true })).toBe(false)
      expect(lines(path)).toHaveLength(500)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("durability fsync: every acknowledged batch is covered by an fsync", () =>
    Effect.gen(function*() {
      const path = tempFile()
      const fiber = yield* start(Effect.gen(function*() {
        const writer = yield* Jsonl.make(path, { durability: "fsync" })
        yield* writer.write({ a: 1 })
        expect((yield* writer.stats).fsyncs).toBe(1)
        yield* Effect.forEach([1, 2, 3, 4], (b) => writer.write({ b }), { concurrency: "unbounded", discard: true })
        const stats = yield* writer.stats
        expect(stats.fsyncs).toBeGreaterThanOrEqual(2)
        expect(stats.fsyncs).toBe(stats.writes)
        yield* writer.flush
        expect((yield* writer.stats).fsyncs).toBe(stats.fsyncs + 1)
      }))
      expect((yield* Fiber.join(fiber)).exitCode).toBe(0)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("on open, a torn last line left by a crash is cut off and appending goes on from the last whole line", () =>
    Effect.gen(function*() {
      const path = tempFile()
      writeFileSync(path, "{\"a\":1}\n{\"b\":2}\n{\"c\":")
      const fiber = yield* start(Effect.gen(function*() {
        const writer = yield* Jsonl.make(path)
        yield* writer.write({ d: 4 })
      }))
      yield* Fiber.join(fiber)
      expect(lines(path)).toEqual([{ a: 1 }, { b: 2 }, { d: 4 }])
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("a file that is only a torn line is emptied; a whole file is left as it is", () =>
    Effect.gen(function*() {
      const torn = tempFile("torn.jsonl")
      const whole = tempFile("whole.jsonl")
      writeFileSync(torn, "{\"partial\":")
      writeFileSync(whole, "{\"a\":1}\n")
      const fiber = yield* start(Effect.gen(function*() {
        yield* Jsonl.make(torn)
        yield* Jsonl.make(whole)
      }))
      yield* Fiber.join(fiber)
      expect(readFileSync(torn, "utf8")).toBe("")
      expect(readFileSync(whole, "utf8")).toBe("{\"a\":1}\n")
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("a file that cannot be opened fails acquisition with JsonlOpenError", () =>
    Effect.gen(function*() {
      const path = join(tempFile(), "no-such-dir", "x.jsonl")
      const fiber = yield* start(Effect.gen(function*() {
        const error = yield* Effect.flip(Jsonl.make(path))
        expect(error._tag).toBe("JsonlOpenError")
        expect(error.message).toContain("ENOENT")
      }))
      yield* Fiber.join(fiber)
      expect(existsSync(path)).toBe(false)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("a write the OS refuses (disk full) fails with JsonlWriteError; the writer keeps working", () =>
    Effect.gen(function*() {
      // /dev/full accepts opens and fails every write with ENOSPC.
      const fiber = yield* start(Effect.gen(function*() {
        const outcome = yield* withWriter("/dev/full", { repairTornTail: false }, (writer) =>
          Effect.gen(function*() {
            const error = yield* Effect.flip(writer.write({ a: 1 }))
            expect(error._tag).toBe("JsonlWriteError")
            expect(error.message).toContain("ENOSPC")
            const again = yield* Effect.flip(writer.write({ a: 2 }))
            expect(again._tag).toBe("JsonlWriteError")
            return (yield* writer.stats).written
          }))
        expect(outcome.exit).toEqual(Exit.succeed(0))
      }))
      expect((yield* Fiber.join(fiber)).exitCode).toBe(0)
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("as the log sink: log events are JSON lines; after release they go to stderr, not lost", () =>
    Effect.gen(function*() {
      const path = tempFile("app.jsonl")
      let writer: Jsonl.JsonlWriter | undefined
      const stderr: Array<string> = []
      const original = process.stderr.write.bind(process.stderr)
      const fiber = yield* start(Effect.gen(function*() {
        writer = yield* Jsonl.make(path)
        yield* Effect.logInfo("hello", { user: 7 }).pipe(
          Effect.annotateLogs("request", "r1"),
          Effect.provide(Logger.layer([Jsonl.logger(writer)]))
        )
        yield* writer.flush
        const [line] = lines(path) as Array<{ level: string; message: unknown; annotations: Record<string, unknown> }>
        expect(line!.level).toBe("INFO")
        expect(line!.message).toEqual(["hello", { user: 7 }])
        expect(line!.annotations).toEqual({ request: "r1" })
        return yield* Effect.never
      }))
      yield* GracefulTest.send("SIGTERM")
      yield* Fiber.join(fiber)
      process.stderr.write = ((chunk: string | Uint8Array) => {
        stderr.push(String(chunk))
        return true
      }) as typeof process.stderr.write
      try {
        yield* Effect.logWarning("after release").pipe(Effect.provide(Logger.layer([Jsonl.logger(writer!)])))
      } finally {
        process.stderr.write = original
      }
      expect(lines(path)).toHaveLength(1)
      expect(stderr).toHaveLength(1)
      expect(JSON.parse(stderr[0]!)).toMatchObject({ level: "WARN", message: "after release" })
    }).pipe(Effect.provide(GracefulTest.layer)))

  it.effect("layerLogger opens the file as a managed release and logs to it", () =>
    Effect.gen(function*() {
      const path = tempFile("service.jsonl")
      const fiber = yield* start(
        Effect.gen(function*() {
          yield* Effect.logInfo("serving")
          return yield* Effect.never
        }).pipe(Effect.provide(Jsonl.layerLogger(path, { name: "log sink" })))
      )
      yield* GracefulTest.send("SIGTERM")
      const report = yield* Fiber.join(fiber)
      expect(report.releases.map((r) => `${r.name}:${r.outcome}`)).toEqual(["log sink:released"])
      expect(lines(path)).toEqual([expect.objectContaining({ level: "INFO", message: "serving" })])
    }).pipe(Effect.provide(GracefulTest.layer)))
})
