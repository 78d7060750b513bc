/**
 * The in-flight set's implementation: the public `InFlight` surface, the
 * adapters' synchronous entry points, and the cut the sequence runs.
 *
 * @internal
 */
import * as Clock from "effect/Clock"
import type * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Latch from "effect/Latch"
import * as Metric from "effect/Metric"
import type { InFlightRegistryService, Item } from "../../Adapter.ts"
import type { TrackOptions } from "../../InFlight.ts"
import * as Metrics from "../../Metrics.ts"
import type { CutItem } from "../../Report.ts"

/** The whole set: what adapters see, plus what only the sequence does. */
export interface InFlightState extends InFlightRegistryService {
  /** Work in flight whose cut would be reported (bookkeeping entries excluded). */
  readonly reportableSizeUnsafe: () => number
  /**
   * Interrupts all work in flight without waiting for it, closes the set
   * (later `track` calls are cut on arrival), and returns what was cut.
   */
  readonly cut: Effect.Effect<ReadonlyArray<CutItem>>
  /** Waits for the fibers of cut work to finish, at most `millis`. */
  readonly awaitCut: (millis: number) => Effect.Effect<void>
}

/**
 * The in-flight gauge, brought up to date once per turn of the event loop,
 * not once per request: under load many requests start and end in one turn.
 */
const makeGauge = (size: () => number, context: Context.Context<never>) => {
  let scheduled = false
  const update = () => {
    scheduled = false
    Metrics.inFlight.updateUnsafe(size(), context)
  }
  return () => {
    if (scheduled) return
    scheduled = true
    setImmediate(update)
  }
}

/**
 * Creates an empty in-flight set. `onCutOnArrival` is told about work that
 * arrives after the cut (it is interrupted at once).
 */
export const make = (
  options: { readonly onCutOnArrival?: ((item: CutItem) => void) | undefined } = {}
): Effect.Effect<InFlightState> =>
  Effect.gen(function*() {
    const clock = yield* Clock.Clock
    // Metrics are updated synchronously with the context the set was made in:
    // tracking must stay cheap enough for every request.
    const context = yield* Effect.context<never>()
    const entries = new Set<Item>()
    const gauge = makeGauge(() => entries.size, context)
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
      return {
        kind,
        label: trackOptions?.label ?? kind,
        reportCut: trackOptions?.reportCut ?? true,
        startedAt: 0,
        interrupt
      }
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
