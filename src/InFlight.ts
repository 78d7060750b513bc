/**
 * The set of work that must finish before resources are released: requests,
 * jobs, messages being handled, anything wrapped in {@link track}.
 *
 * Tracking costs one small record and no extra fiber: the work runs on the
 * caller's fiber. The drain waits until the set is empty; at the drain
 * deadline whatever is left is *cut*: its fiber is interrupted and the cut is
 * recorded (kind, label, age) in the shutdown report. Work tracked after the
 * cut is interrupted at once and recorded too, so nothing slips past the
 * drain unseen.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Latch from "effect/Latch"
import * as Metric from "effect/Metric"
import * as Metrics from "./Metrics.ts"
import type { CutItem } from "./Report.ts"

/**
 * How tracked work is named in the report: a kind (`request`, `job`,
 * `message`, ...) and a label (`GET /work`, a job id).
 *
 * @since 0.1.0
 */
export interface TrackOptions {
  readonly kind?: string | undefined
  readonly label?: string | undefined
  /**
   * Whether a cut of this item is a failure worth reporting (default true).
   * Bookkeeping entries the drain should wait for, but whose cut loses
   * nothing (sockets already told to close), set it to false.
   */
  readonly reportCut?: boolean | undefined
}

/**
 * One unit of in-flight work, as adapters hand it to {@link InFlightSet.addUnsafe}.
 * An adapter implements it on an object it already keeps per request (a
 * class with prototype methods, a getter for the label), so tracking costs
 * no closure and no string until a cut needs one.
 *
 * @since 0.1.0
 */
export interface Item {
  readonly kind: string
  /** Read only when the item is cut: a getter is fine. */
  readonly label: string
  /** Whether a cut of this item is reported (see {@link TrackOptions.reportCut}). */
  readonly reportCut: boolean
  /** Set by the set when the item is added. */
  startedAt: number
  /** Called once, at the drain deadline, if the item is still in flight. */
  interrupt(): void
}


/**
 * The in-flight set.
 *
 * @since 0.1.0
 */
export interface InFlightSet {
  /**
   * Runs `effect` as tracked work. The drain waits for it; at the drain
   * deadline it is interrupted and reported as cut.
   */
  readonly track: <A, E, R>(effect: Effect.Effect<A, E, R>, options?: TrackOptions) => Effect.Effect<A, E, R>
  /**
   * Enters work that is not an Effect (a request on a plain Node server)
   * into the set. `onCut` is called if the work is still in flight at the
   * drain deadline; call the returned function when the work is done.
   * Returns `undefined` if the set is already closed (the work arrived after
   * the cut): the caller should refuse it.
   */
  readonly enterUnsafe: (options: TrackOptions & { readonly onCut: () => void }) => (() => void) | undefined
  /**
   * Adds an item (see {@link Item}); returns false, having recorded it as cut,
   * if the set is already closed. Remove it with `removeUnsafe` when done.
   */
  readonly addUnsafe: (item: Item) => boolean
  /** Removes an item added with `addUnsafe` (no-op if absent). */
  readonly removeUnsafe: (item: Item) => void
  /** How much work is in flight now. */
  readonly size: Effect.Effect<number>
  /** The same, synchronously. */
  readonly sizeUnsafe: () => number
  /** Work in flight whose cut would be reported (bookkeeping entries excluded). */
  readonly reportableSizeUnsafe: () => number
  /** Completes when nothing is in flight (at once if the set is empty). */
  readonly awaitEmpty: Effect.Effect<void>
  /**
   * Interrupts all work in flight without waiting for it, closes the set
   * (later `track` calls are cut on arrival), and returns what was cut.
   */
  readonly cut: Effect.Effect<ReadonlyArray<CutItem>>
  /** Waits for the fibers of cut work to finish, at most `millis`. */
  readonly awaitCut: (millis: number) => Effect.Effect<void>
}

/**
 * The in-flight set of the running program. Provided by `Graceful.run`.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { InFlight } from "effect-graceful"
 *
 * const handleJob = (id: string) =>
 *   Effect.gen(function*() {
 *     const inFlight = yield* InFlight.InFlight
 *     yield* inFlight.track(Effect.sleep("2 seconds"), { kind: "job", label: id })
 *   })
 * ```
 *
 * @since 0.1.0
 */
export class InFlight extends Context.Service<InFlight, InFlightSet>()("effect-graceful/InFlight") {}

/**
 * Runs `effect` as tracked work in the current program's in-flight set.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { InFlight } from "effect-graceful"
 *
 * const job = InFlight.track(Effect.sleep("1 second"), { kind: "job", label: "invoice-42" })
 * ```
 *
 * @since 0.1.0
 */
export const track = <A, E, R>(
  effect: Effect.Effect<A, E, R>,
  options?: TrackOptions
): Effect.Effect<A, E, R | InFlight> => InFlight.use((set) => set.track(effect, options))

/**
 * Creates an empty in-flight set. `onCutOnArrival` is told about work that
 * arrives after the cut (it is interrupted at once).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { InFlight } from "effect-graceful"
 *
 * const program = Effect.gen(function*() {
 *   const set = yield* InFlight.make()
 *   yield* set.track(Effect.sleep(10), { kind: "job", label: "a" })
 *   yield* set.awaitEmpty
 * })
 * ```
 *
 * @since 0.1.0
 */
export const make = (
  options: { readonly onCutOnArrival?: ((item: CutItem) => void) | undefined } = {}
): Effect.Effect<InFlightSet> =>
  Effect.gen(function*() {
    const clock = yield* Clock.Clock
    // Metrics are updated synchronously with the context the set was made in:
    // tracking must stay cheap enough for every request.
    const context = yield* Effect.context<never>()
    // The gauge is brought up to date once per turn of the event loop, not
    // once per request: under load many requests start and end in one turn.
    let gaugeScheduled = false
    const updateGauge = () => {
      gaugeScheduled = false
      Metrics.inFlight.updateUnsafe(entries.size, context)
    }
    const gauge = () => {
      if (gaugeScheduled) return
      gaugeScheduled = true
      setImmediate(updateGauge)
    }
    const entries = new Set<Item>()
    const empty = Latch.makeUnsafe(true)
    let closed = false

    const removeUnsafe = (item: Item) => {
      if (!entries.delete(item)) return
      if (entries.size === 0) empty.openUnsafe()
      gauge()
    }

    const addUnsafe = (item: Item): boolean => {
      if (closed) {
        // Arrived after the cut: refused, and reported like any other cut.
        if (item.reportCut) {
          options.onCutOnArrival?.({ kind: item.kind, label: item.label, ageMs: 0 })
          Metrics.cut.updateUnsafe(1, context)
        }
        return false
      }
      item.startedAt = clock.currentTimeMillisUnsafe()
      entries.add(item)
      if (entries.size === 1) empty.closeUnsafe()
      gauge()
      return true
    }

    const itemOf = (trackOptions: TrackOptions | undefined, interrupt: () => void): Item => {
      const kind = trackOptions?.kind ?? "work"
      return { kind, label: trackOptions?.label ?? kind, reportCut: trackOptions?.reportCut ?? true, startedAt: 0, interrupt }
    }

    const track = <A, E, R>(effect: Effect.Effect<A, E, R>, trackOptions?: TrackOptions): Effect.Effect<A, E, R> =>
      Effect.withFiber((fiber) => {
        const item = itemOf(trackOptions, () => fiber.interruptUnsafe())
        return addUnsafe(item) ? Effect.onExit(effect, () => Effect.sync(() => removeUnsafe(item))) : Effect.interrupt
      })

    const enterUnsafe = (enterOptions: TrackOptions & { readonly onCut: () => void }) => {
      const item = itemOf(enterOptions, enterOptions.onCut)
      return addUnsafe(item) ? () => removeUnsafe(item) : undefined
    }

    const cut = Effect.sync(() => {
      closed = true
      const now = clock.currentTimeMillisUnsafe()
      const items: Array<CutItem> = []
      for (const entry of entries) {
        if (entry.reportCut) items.push({ kind: entry.kind, label: entry.label, ageMs: now - entry.startedAt })
        entry.interrupt()
      }
      return items
    }).pipe(Effect.tap((items) => items.length > 0 ? Metric.update(Metrics.cut, items.length) : Effect.void))

    // Cut work leaves the set when its interruption has run its finalizers.
    const awaitCut = (millis: number) =>
      Effect.suspend(() => {
        if (entries.size === 0 || millis <= 0) return Effect.void
        return empty.await.pipe(Effect.timeoutOption(millis), Effect.asVoid)
      })

    return {
      track,
      enterUnsafe,
      addUnsafe,
      removeUnsafe,
      size: Effect.sync(() => entries.size),
      sizeUnsafe: () => entries.size,
      reportableSizeUnsafe: () => {
        let count = 0
        for (const entry of entries) if (entry.reportCut) count++
        return count
      },
      awaitEmpty: empty.await,
      cut,
      awaitCut
    }
  })
