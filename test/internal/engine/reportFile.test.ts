import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect } from "effect"
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll } from "vitest"
import { Report, ShutdownConfig } from "../../../src/index.ts"
import * as ReportFile from "../../../src/internal/engine/reportFile.ts"

/** The report file as `Graceful.run` resolves it: the configuration first (the one reader of SHUTDOWN_REPORT_FILE). */
const load = (options?: ShutdownConfig.ShutdownOptions) =>
  Effect.flatMap(ShutdownConfig.load(options), (config) => ReportFile.load(config, options))

const withEnv = (env: Record<string, string>) => Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env })))

const dir = mkdtempSync(join(tmpdir(), "effect-graceful-report-file-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

const report = (cut: number): Report.ShutdownReport => ({
  outcome: "degraded",
  exitCode: 1,
  durationMs: 1200,
  trigger: { _tag: "Signal", signal: "SIGTERM" },
  startedAt: 1_763_712_000_000,
  signals: 1,
  inFlight: { atDrainStart: cut, atDrainEnd: cut },
  phases: [],
  hooks: [],
  releases: [],
  cut: Array.from({ length: cut }, (_, i) => ({ kind: "request", label: `GET /work?ms=${i}`, ageMs: 5000 - i }))
})

describe("ReportFile.load", () => {
  it.effect("no file configured: nothing to write", () =>
    Effect.gen(function*() {
      expect(yield* load().pipe(withEnv({}))).toBeUndefined()
      expect(yield* load().pipe(withEnv({ SHUTDOWN_REPORT_FILE: "" }))).toBeUndefined()
      // Blank is unset, as for every other variable (it used to be a path of spaces here).
      expect(yield* load().pipe(withEnv({ SHUTDOWN_REPORT_FILE: "  " }))).toBeUndefined()
    }))

  it.effect("the termination log gets 4096 bytes by default, other paths no limit", () =>
    Effect.gen(function*() {
      expect(yield* load().pipe(withEnv({ SHUTDOWN_REPORT_FILE: "/dev/termination-log" }))).toEqual({
        path: "/dev/termination-log",
        maxBytes: 4096,
        variable: "SHUTDOWN_REPORT_FILE"
      })
      expect((yield* load().pipe(withEnv({ SHUTDOWN_REPORT_FILE: "/var/log/report.json" })))?.maxBytes)
        .toBeUndefined()
    }))

  it.effect("SHUTDOWN_REPORT_MAX_BYTES and the option set the limit; the option wins", () =>
    Effect.gen(function*() {
      const env = { SHUTDOWN_REPORT_FILE: "/var/log/report.json", SHUTDOWN_REPORT_MAX_BYTES: "2048" }
      expect((yield* load().pipe(withEnv(env)))?.maxBytes).toBe(2048)
      expect((yield* load({ reportMaxBytes: 8192 }).pipe(withEnv(env)))?.maxBytes).toBe(8192)
      expect(yield* load({ reportFile: "/tmp/r.json" }).pipe(withEnv(env))).toEqual({
        path: "/tmp/r.json",
        maxBytes: 2048,
        variable: "option reportFile"
      })
    }))

  it.effect("a limit that is not a whole number of bytes, or too small, names the variable", () =>
    Effect.gen(function*() {
      for (const value of ["4k", "-1", "100", "1.5", "abc"]) {
        const error = yield* load().pipe(
          withEnv({ SHUTDOWN_REPORT_FILE: "/tmp/r.json", SHUTDOWN_REPORT_MAX_BYTES: value }),
          Effect.flip
        )
        expect(error._tag).toBe("ShutdownConfigError")
        expect(error.message).toBe(
          `SHUTDOWN_REPORT_MAX_BYTES=${JSON.stringify(value)}: must be a whole number of bytes, at least 1024`
        )
      }
    }))
})

describe("ReportFile.checkWritable", () => {
  const check = (path: string) =>
    ReportFile.checkWritable({ path, maxBytes: 4096, variable: "SHUTDOWN_REPORT_FILE" }).pipe(Effect.flip)

  it.effect("a missing directory: ENOENT, named with the variable, and nothing is created", () =>
    Effect.gen(function*() {
      const path = join(dir, "missing", "report.json")
      const error = yield* check(path)
      expect(error.message).toBe(
        `SHUTDOWN_REPORT_FILE=${JSON.stringify(path)}: the shutdown report cannot be written there: ` +
          `ENOENT: the directory ${join(dir, "missing")} does not exist`
      )
    }))

  it.effect("a directory in place of the file: EISDIR", () =>
    Effect.gen(function*() {
      const error = yield* check(dir)
      expect(error.message).toContain("EISDIR")
    }))

  it.effect("a file in place of the directory: ENOTDIR", () =>
    Effect.gen(function*() {
      const file = join(dir, "plain-file")
      writeFileSync(file, "")
      const error = yield* check(join(file, "report.json"))
      expect(error.message).toContain("ENOTDIR")
    }))

  it.effect("a file that exists, or a new file in a writable directory, passes and is left untouched", () =>
    Effect.gen(function*() {
      const existing = join(dir, "existing.json")
      writeFileSync(existing, "previous")
      yield* ReportFile.checkWritable({ path: existing, maxBytes: 4096, variable: "SHUTDOWN_REPORT_FILE" })
      expect(readFileSync(existing, "utf8")).toBe("previous")
      const fresh = join(dir, "fresh", "report.json")
      mkdirSync(join(dir, "fresh"))
      yield* ReportFile.checkWritable({ path: fresh, maxBytes: undefined, variable: "SHUTDOWN_REPORT_FILE" })
      expect(ReportFile.whyNotWritable(fresh, 1)).toBeUndefined()
    }))

  it.effect("a device passes (the termination log may be one)", () =>
    ReportFile.checkWritable({ path: "/dev/null", maxBytes: 4096, variable: "SHUTDOWN_REPORT_FILE" }))
})

describe("ReportFile.write", () => {
  it.effect("writes the fitted report and a newline, within the limit", () =>
    Effect.gen(function*() {
      const path = join(dir, "fitted.json")
      yield* ReportFile.write({ path, maxBytes: 4096 }, report(300))
      const text = readFileSync(path, "utf8")
      expect(Buffer.byteLength(text)).toBeLessThanOrEqual(4096)
      expect(text.endsWith("}\n")).toBe(true)
      expect(JSON.parse(text).cutByKind).toEqual([{ kind: "request", count: 300, oldestAgeMs: 5000 }])
    }))

  it.effect("with no limit, writes the whole report", () =>
    Effect.gen(function*() {
      const path = join(dir, "whole.json")
      yield* ReportFile.write({ path, maxBytes: undefined }, report(300))
      expect(readFileSync(path, "utf8")).toBe(Report.toJson(report(300)) + "\n")
    }))

  it.effect("a write that fails gives the errno: ENOSPC on a full device", () =>
    Effect.gen(function*() {
      const error = yield* ReportFile.write({ path: "/dev/full", maxBytes: 4096 }, report(1)).pipe(Effect.flip)
      expect(error._tag).toBe("ReportFileError")
      expect(error.code).toBe("ENOSPC")
      expect(error.message).toBe(
        "could not write the shutdown report to /dev/full: ENOSPC: no space left on device, write"
      )
    }))

  it.effect("a write into a missing directory gives ENOENT", () =>
    Effect.gen(function*() {
      const error = yield* ReportFile.write({ path: join(dir, "gone", "r.json"), maxBytes: undefined }, report(0)).pipe(
        Effect.flip
      )
      expect(error.code).toBe("ENOENT")
      expect(error.message).toContain("ENOENT: no such file or directory, open")
    }))
})
