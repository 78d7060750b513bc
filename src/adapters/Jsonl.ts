/**
 * An append-only JSON Lines file writer whose release is part of the
 * shutdown: one JSON value per line, batched writes, nothing acknowledged
 * lost, no line ever torn.
 *
 * **What "acknowledged" means.** `write(value)` succeeds once the whole line
 * has been handed to the operating system by a `write(2)` call (durability
 * `"write"`, the default): from then on the line survives the process dying
 * in any way (SIGKILL, a crash, the watchdog), though not the machine losing
 * power before the kernel flushes its cache. With durability `"fsync"`,
 * `write` also waits for an `fsync(2)` that covers the line, so it survives
 * power loss too. In both modes `flush` and the release fsync everything
 * written so far.
 *
 * **Batching.** Lines are queued in memory and written by one writer, in the
 * order `write` was called, as many whole lines per `write(2)` as are waiting
 * (up to `maxBatchBytes`): under load, one system call (and one fsync)
 * covers many lines (group commit); alone, a line is written at once.
 *
 * **No torn line.** A batch is always whole lines. A short write is completed
 * before anything else is written; a failed write is rolled back to the last
 * whole line (`ftruncate`), and its writers get a {@link JsonlWriteError}. A
 * value that is not JSON (`undefined`, a `BigInt`, a cycle) is refused before
 * anything is queued. On open, a torn last line left by a power loss or a
 * SIGKILL during a write (never acknowledged, by the rule above) is cut off
 * so the file stays parseable line by line.
 *
 * **Release.** The writer is a managed resource: at Releasing it stops
 * accepting lines (later writes fail with {@link JsonlClosedError}), writes
 * what is queued, fsyncs, and closes the file, within its deadline; the
 * report records it. Acquire it first so it is released last, and it can be
 * the service's log sink ({@link logger}, {@link layerLogger}) until the very
 * end.
 *
 * @since 0.1.0
 */
import type * as Context from "effect/Context"
import * as Data from "effect/Data"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import type * as Scope from "effect/Scope"
import * as fs from "node:fs"
import { reasonOf } from "../internal/base/errors.ts"
import type { Lifecycle } from "../Lifecycle.ts"
import * as Resource from "../Resource.ts"

/**
 * The file could not be opened (or repaired) at acquisition.
 *
 * @example
 * ```ts
 * import * as Jsonl from "effect-graceful/Jsonl"
 *
 * const error = new Jsonl.JsonlOpenError({ path: "/var/log/app.jsonl", reason: "EACCES: permission denied" })
 * error.message // "cannot open /var/log/app.jsonl: EACCES: permission denied"
 * ```
 *
 * @category errors
 * @since 0.1.0
 */
export class JsonlOpenError extends Data.TaggedError("JsonlOpenError")<{
  readonly path: string
  readonly reason: string
}> {
  override get message(): string {
    return `cannot open ${this.path}: ${this.reason}`
  }
}

/**
 * The value has no JSON form (`undefined`, a function, a `BigInt`, a cycle).
 * Nothing was written.
 *
 * @example
 * ```ts
 * import * as Jsonl from "effect-graceful/Jsonl"
 *
 * const error = new Jsonl.JsonlEncodeError({ path: "app.jsonl", reason: "Do not know how to serialize a BigInt" })
 * ```
 *
 * @category errors
 * @since 0.1.0
 */
export class JsonlEncodeError extends Data.TaggedError("JsonlEncodeError")<{
  readonly path: string
  readonly reason: string
}> {
  override get message(): string {
    return `cannot write to ${this.path}: the value is not JSON (${this.reason})`
  }
}

/**
 * The operating system refused the write or the fsync (disk full, I/O
 * error). The line is not in the file (a partial write was rolled back).
 *
 * @example
 * ```ts
 * import * as Jsonl from "effect-graceful/Jsonl"
 *
 * const error = new Jsonl.JsonlWriteError({ path: "app.jsonl", operation: "write", reason: "ENOSPC: no space left on device" })
 * error.message // "write to app.jsonl failed: ENOSPC: no space left on device"
 * ```
 *
 * @category errors
 * @since 0.1.0
 */
export class JsonlWriteError extends Data.TaggedError("JsonlWriteError")<{
  readonly path: string
  readonly operation: "write" | "fsync" | "close"
  readonly reason: string
}> {
  override get message(): string {
    return `${this.operation} to ${this.path} failed: ${this.reason}`
  }
}

/**
 * The writer has been released (or is being released): it takes no more
 * lines.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import * as Jsonl from "effect-graceful/Jsonl"
 *
 * declare const writer: Jsonl.JsonlWriter
 * const audit = writer.write({ event: "login" }).pipe(
 *   Effect.catchTag("JsonlClosedError", () => Effect.logWarning("audit log closed; shutting down"))
 * )
 * ```
 *
 * @category errors
 * @since 0.1.0
 */
export class JsonlClosedError extends Data.TaggedError("JsonlClosedError")<{
  readonly path: string
}> {
  override get message(): string {
    return `${this.path} is closed: the writer was released`
  }
}

/**
 * Counters of a writer: lines accepted and written, `write(2)` and
 * `fsync(2)` calls made, bytes written, and lines queued now.
 *
 * @category models
 * @since 0.1.0
 */
export interface JsonlStats {
  readonly accepted: number
  readonly written: number
  readonly writes: number
  readonly fsyncs: number
  readonly bytes: number
  readonly queued: number
}

/**
 * An open JSON Lines writer.
 *
 * @category models
 * @since 0.1.0
 */
export interface JsonlWriter {
  readonly path: string
  /** Appends `value` as one line; succeeds once the line is acknowledged (see the module docs). */
  readonly write: (value: unknown) => Effect.Effect<void, JsonlEncodeError | JsonlWriteError | JsonlClosedError>
  /**
   * Queues `value` as one line without waiting for it. Returns `false` (and
   * queues nothing) when the writer is closed or the value is not JSON. For
   * loggers; a write error is only counted.
   */
  readonly writeUnsafe: (value: unknown) => boolean
  /** Writes every line queued so far, then fsyncs. */
  readonly flush: Effect.Effect<void, JsonlWriteError | JsonlClosedError>
  /** Whether the writer still takes lines. */
  readonly isOpen: () => boolean
  readonly stats: Effect.Effect<JsonlStats>
}

/**
 * Options of {@link make}.
 *
 * @category models
 * @since 0.1.0
 */
export interface JsonlOptions {
  /** Names the release in the report. Default `jsonl <path>`. */
  readonly name?: string | undefined
  /** When `write` succeeds: after `write(2)` (default) or after `fsync(2)` too. */
  readonly durability?: "write" | "fsync" | undefined
  /** Upper bound of one `write(2)` call, in bytes (a longer single line is still written whole). Default 1 MiB. */
  readonly maxBatchBytes?: number | undefined
  /** File mode when the file is created. Default `0o644`. */
  readonly mode?: number | undefined
  /** Cut off a torn last line found on open. Default `true`. */
  readonly repairTornTail?: boolean | undefined
  /** The release's own deadline (flush, fsync, close). Bounded by the shutdown budget. */
  readonly timeout?: Duration.Input | undefined
}

type Done = (error: JsonlWriteError | undefined) => void

type Item =
  | { readonly _tag: "Line"; readonly data: Buffer; readonly done: Done | undefined }
  | { readonly _tag: "Sync"; readonly done: Done }

/** Serialises one value as one line, or says why it cannot. */
const encode = (value: unknown): Buffer | string => {
  let json: string | undefined
  try {
    json = JSON.stringify(value)
  } catch (error) {
    return reasonOf(error)
  }
  // JSON.stringify escapes every control character, so `json` holds no newline.
  if (json === undefined) return `${typeof value} has no JSON form`
  return Buffer.from(json + "\n", "utf8")
}

/** Cuts a torn last line (one that does not end in a newline) off the file. */
const repairTail = (fd: number): { readonly size: number; readonly dropped: number } => {
  const size = fs.fstatSync(fd).size
  if (size === 0) return { size, dropped: 0 }
  const chunk = Buffer.alloc(Math.min(size, 64 * 1024))
  let end = size
  let first = true
  while (end > 0) {
    const length = Math.min(chunk.length, end)
    const start = end - length
    fs.readSync(fd, chunk, 0, length, start)
    if (first && chunk[length - 1] === 0x0a) return { size, dropped: 0 }
    first = false
    const newline = chunk.subarray(0, length).lastIndexOf(0x0a)
    if (newline >= 0) {
      const keep = start + newline + 1
      fs.ftruncateSync(fd, keep)
      return { size: keep, dropped: size - keep }
    }
    end = start
  }
  fs.ftruncateSync(fd, 0)
  return { size: 0, dropped: size }
}

/** What the engine's steps share: the file, its queue, and where a write stands. */
interface EngineState {
  readonly fd: number
  readonly path: string
  readonly fsyncEachBatch: boolean
  readonly maxBatch: number
  readonly queue: Array<Item>
  /** A `write(2)` or `fsync(2)` is in progress; the next waits for it. */
  busy: boolean
  /** The file's size after the last whole batch: where a failed write is rolled back to. */
  size: number
  readonly stats: { accepted: number; written: number; writes: number; fsyncs: number; bytes: number }
}

type Line = Item & { readonly _tag: "Line" }

const writeAll = (
  state: EngineState,
  data: Buffer,
  offset: number,
  done: (error: NodeJS.ErrnoException | null) => void
): void => {
  // position null: append at the end of the file (O_APPEND), continuing a short write.
  fs.write(state.fd, data, offset, data.length - offset, null, (error, written) => {
    if (error) return done(error)
    state.stats.writes++
    if (offset + written < data.length) return writeAll(state, data, offset + written, done)
    done(null)
  })
}

const fsyncFile = (state: EngineState, done: (error: NodeJS.ErrnoException | null) => void): void => {
  fs.fsync(state.fd, (error) => {
    if (!error) state.stats.fsyncs++
    done(error)
  })
}

/** Takes whole lines off the queue, in order, up to `maxBatch` bytes (at least one line). */
const takeBatch = (state: EngineState): { readonly batch: Array<Line>; readonly bytes: number } => {
  const batch: Array<Line> = []
  let bytes = 0
  for (const item of state.queue) {
    if (item._tag !== "Line") break
    if (batch.length > 0 && bytes + item.data.length > state.maxBatch) break
    batch.push(item)
    bytes += item.data.length
  }
  // One splice per batch, not a shift per line: a burst queues thousands.
  state.queue.splice(0, batch.length)
  return { batch, bytes }
}

/** Writes one batch (and fsyncs it in `fsync` mode), then tells each line's caller. */
const writeBatch = (state: EngineState, batch: ReadonlyArray<Line>, bytes: number): void => {
  const data = batch.length === 1 ? batch[0]!.data : Buffer.concat(batch.map((item) => item.data), bytes)
  const finish = (error: JsonlWriteError | undefined) => {
    state.busy = false
    for (const item of batch) item.done?.(error)
    pump(state)
  }
  writeAll(state, data, 0, (error) => {
    if (error) {
      // Roll a partial write back to the last whole line.
      fs.ftruncate(
        state.fd,
        state.size,
        () => finish(new JsonlWriteError({ path: state.path, operation: "write", reason: reasonOf(error) }))
      )
      return
    }
    state.size += bytes
    state.stats.bytes += bytes
    state.stats.written += batch.length
    if (!state.fsyncEachBatch) return finish(undefined)
    fsyncFile(state, (syncError) =>
      finish(
        syncError
          ? new JsonlWriteError({ path: state.path, operation: "fsync", reason: reasonOf(syncError) })
          : undefined
      ))
  })
}

/** Starts the next write or fsync, unless one is in progress or nothing is queued. */
const pump = (state: EngineState): void => {
  if (state.busy || state.queue.length === 0) return
  state.busy = true
  const head = state.queue[0]!
  if (head._tag === "Sync") {
    state.queue.shift()
    fsyncFile(state, (error) => {
      state.busy = false
      head.done(
        error ? new JsonlWriteError({ path: state.path, operation: "fsync", reason: reasonOf(error) }) : undefined
      )
      pump(state)
    })
    return
  }
  const { batch, bytes } = takeBatch(state)
  writeBatch(state, batch, bytes)
}

/** The writer's engine: plain callbacks, one `write(2)` at a time. */
const makeEngine = (fd: number, path: string, initialSize: number, options: JsonlOptions) => {
  const state: EngineState = {
    fd,
    path,
    fsyncEachBatch: options.durability === "fsync",
    maxBatch: Math.max(1, options.maxBatchBytes ?? 1024 * 1024),
    queue: [],
    busy: false,
    size: initialSize,
    stats: { accepted: 0, written: 0, writes: 0, fsyncs: 0, bytes: 0 }
  }
  return {
    stats: state.stats,
    queued: () => state.queue.reduce((n, item) => n + (item._tag === "Line" ? 1 : 0), 0),
    line: (data: Buffer, done: Done | undefined) => {
      state.stats.accepted++
      state.queue.push({ _tag: "Line", data, done })
      pump(state)
    },
    sync: (done: Done) => {
      state.queue.push({ _tag: "Sync", done })
      pump(state)
    }
  }
}

const open = (path: string, options: JsonlOptions) =>
  Effect.try({
    try: () => {
      const fd = fs.openSync(path, "a+", options.mode ?? 0o644)
      try {
        if (options.repairTornTail === false) return { fd, size: fs.fstatSync(fd).size, dropped: 0 }
        return { fd, ...repairTail(fd) }
      } catch (error) {
        fs.closeSync(fd)
        throw error
      }
    },
    catch: (error) => new JsonlOpenError({ path, reason: reasonOf(error) })
  })

/** A writer opened on the engine's file: the public face, and the `close` its release runs. */
const makeWriter = (
  path: string,
  fd: number,
  engine: ReturnType<typeof makeEngine>
): JsonlWriter & { readonly close: () => Promise<JsonlWriteError | undefined> } => {
  let closed = false
  let closing: Promise<JsonlWriteError | undefined> | undefined
  const closedError = new JsonlClosedError({ path })

  const write = (value: unknown): Effect.Effect<void, JsonlEncodeError | JsonlWriteError | JsonlClosedError> =>
    Effect.suspend((): Effect.Effect<void, JsonlEncodeError | JsonlWriteError | JsonlClosedError> => {
      if (closed) return Effect.fail(closedError)
      const data = encode(value)
      if (typeof data === "string") return Effect.fail(new JsonlEncodeError({ path, reason: data }))
      // Once queued, the line is written even if the caller stops waiting.
      return Effect.callback<void, JsonlWriteError>((resume) => {
        engine.line(data, (error) => resume(error ? Effect.fail(error) : Effect.void))
      })
    })

  const writeUnsafe = (value: unknown): boolean => {
    if (closed) return false
    const data = encode(value)
    if (typeof data === "string") return false
    engine.line(data, undefined)
    return true
  }

  const sync = Effect.callback<void, JsonlWriteError>((resume) => {
    engine.sync((error) => resume(error ? Effect.fail(error) : Effect.void))
  })

  const close = (): Promise<JsonlWriteError | undefined> => {
    closing ??= new Promise((resolve) => {
      closed = true
      engine.sync((syncError) => {
        fs.close(fd, (closeError) => {
          resolve(
            syncError ??
              (closeError ? new JsonlWriteError({ path, operation: "close", reason: reasonOf(closeError) }) : undefined)
          )
        })
      })
    })
    return closing
  }

  return {
    path,
    write,
    writeUnsafe,
    flush: Effect.suspend((): Effect.Effect<void, JsonlWriteError | JsonlClosedError> =>
      closed ? Effect.fail(closedError) : sync
    ),
    isOpen: () => !closed,
    stats: Effect.sync(() => ({ ...engine.stats, queued: engine.queued() })),
    close
  }
}

/**
 * Opens (or creates) `path` for appending and registers its release (flush,
 * fsync, close) in the current scope as a managed resource.
 *
 * @example
 * ```ts
 * import { Clock, Effect } from "effect"
 * import { Graceful } from "effect-graceful"
 * import * as Jsonl from "effect-graceful/Jsonl"
 *
 * const program = Effect.gen(function*() {
 *   const events = yield* Jsonl.make("events.jsonl", { durability: "fsync" })
 *   yield* events.write({ type: "started", at: yield* Clock.currentTimeMillis })
 *   return yield* Effect.never
 * })
 *
 * Effect.runFork(Graceful.run(program))
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = (
  path: string,
  options: JsonlOptions = {}
): Effect.Effect<JsonlWriter, JsonlOpenError, Lifecycle | Scope.Scope> =>
  Resource.make(
    options.name ?? `jsonl ${path}`,
    Effect.gen(function*() {
      const opened = yield* open(path, options)
      if (opened.dropped > 0) {
        yield* Effect.logWarning(`${path}: cut off a torn last line (${opened.dropped} bytes) left by an earlier crash`)
      }
      return makeWriter(path, opened.fd, makeEngine(opened.fd, path, opened.size, options))
    }),
    (writer) =>
      Effect.promise(() => writer.close()).pipe(
        Effect.flatMap((error) => error === undefined ? Effect.void : Effect.fail(error))
      ),
    { timeout: options.timeout }
  )

/**
 * A writer as a `Layer` under your own tag.
 *
 * @example
 * ```ts
 * import { Context } from "effect"
 * import * as Jsonl from "effect-graceful/Jsonl"
 *
 * class AuditLog extends Context.Service<AuditLog, Jsonl.JsonlWriter>()("app/AuditLog") {}
 *
 * const AuditLogLive = Jsonl.layer(AuditLog, "audit.jsonl", { durability: "fsync" })
 * ```
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = <I>(
  tag: Context.Key<I, JsonlWriter>,
  path: string,
  options?: JsonlOptions
): Layer.Layer<I, JsonlOpenError, Lifecycle> => Layer.effect(tag, make(path, options))

/**
 * A logger that writes each log event as one JSON line (Effect's structured
 * format: `message`, `level`, `timestamp`, `annotations`, `spans`, `cause`,
 * `fiberId`). Logging never waits for the disk. Once the writer is released,
 * events go to stderr as JSON lines instead, so the last words of a shutdown
 * are not lost.
 *
 * @example
 * ```ts
 * import { Effect, Layer, Logger } from "effect"
 * import * as Jsonl from "effect-graceful/Jsonl"
 *
 * const LoggerLive = Layer.unwrap(
 *   Effect.map(Jsonl.make("app.jsonl"), (writer) => Logger.layer([Jsonl.logger(writer)]))
 * )
 * ```
 *
 * @category logging
 * @since 0.1.0
 */
export const logger = (writer: JsonlWriter): Logger.Logger<unknown, void> =>
  Logger.map(Logger.formatStructured, (event) => {
    if (writer.writeUnsafe(event)) return
    const line = encode(event)
    process.stderr.write(
      typeof line === "string" ? JSON.stringify({ ...event, message: String(event.message) }) + "\n" : line
    )
  })

/**
 * Opens `path` as the service's log sink: a managed writer (build this layer
 * first, so it is released last) and a logger that writes to it. With
 * `mergeWithExisting`, the current loggers (the console) keep logging too.
 *
 * @example
 * ```ts
 * import { Layer } from "effect"
 * import { Graceful } from "effect-graceful"
 * import * as Jsonl from "effect-graceful/Jsonl"
 *
 * declare const AppLive: Layer.Layer<never>
 *
 * Graceful.runMain(AppLive.pipe(Layer.provide(Jsonl.layerLogger("app.jsonl"))))
 * ```
 *
 * @category layers
 * @since 0.1.0
 */
export const layerLogger = (
  path: string,
  options?: JsonlOptions & { readonly mergeWithExisting?: boolean | undefined }
): Layer.Layer<never, JsonlOpenError, Lifecycle> =>
  Logger.layer([Effect.map(make(path, options), logger)], { mergeWithExisting: options?.mergeWithExisting })
