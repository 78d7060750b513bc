/**
 * The records of the shutdown report under construction: phase timings,
 * releases, hooks, cut items, what holds the event loop. Plain mutable
 * state, so the watchdog and a third signal can take a snapshot
 * synchronously, naming the releases still running at that moment. The
 * trigger, t = 0, the signals and the budget are not kept here: they are
 * read from the shutdown state (`state.ts`) and passed in as a {@link Header}.
 *
 * @internal
 */
import type * as Report from "../../Report.ts"
import type { EventLoopSnapshot } from "../base/eventLoop.ts"

/** A managed release, from its registration at acquisition until it is recorded. */
export interface ReleaseTicket {
  readonly name: string
  /** A phase hook rather than a release: reported under `hooks`. */
  readonly hook?: boolean | undefined
  started?: { readonly at: number; readonly deadlineMs: number }
}

/** What the report says about the shutdown itself, read from the state. */
export interface Header {
  readonly trigger: Report.Trigger
  /** t = 0, clock milliseconds. */
  readonly t0: number
  readonly signals: number
  /** The release deadline in force, ms after t = 0. */
  readonly budgetMs?: number | undefined
}

export class ReportBuilder {
  private readonly phases: Array<Report.PhaseTiming> = []
  private readonly releases: Array<Report.ReleaseRecord> = []
  private readonly hooks: Array<Report.ReleaseRecord> = []
  private readonly pending = new Set<ReleaseTicket>()
  private readonly cut: Array<Report.CutItem> = []
  private atDrainStart = 0
  private atDrainEnd = 0
  private budgetExhausted = false
  private heldBy: Report.HeldBy | undefined
  /** Releases interrupted at their deadline whose fiber has not ended yet (it ignored the interrupt). */
  private readonly abandoned = new Map<object, string>()

  addPhase(phase: Report.PhaseName, at: number, durationMs: number): void {
    this.phases.push({ phase, at, durationMs })
  }

  register(ticket: ReleaseTicket): void {
    this.pending.add(ticket)
  }

  /** The resource was released outside the shutdown (its scope closed early). */
  forget(ticket: ReleaseTicket): void {
    this.pending.delete(ticket)
  }

  beginRelease(ticket: ReleaseTicket, at: number, deadlineMs: number): void {
    ticket.started = { at, deadlineMs }
  }

  addRelease(record: Report.ReleaseRecord, ticket?: ReleaseTicket): void {
    if (ticket !== undefined) this.pending.delete(ticket)
    if (ticket?.hook === true) this.hooks.push(record)
    else this.releases.push(record)
  }

  addCut(item: Report.CutItem): void {
    this.cut.push(item)
  }

  setInFlightAtDrainStart(count: number): void {
    this.atDrainStart = count
  }

  setInFlightAtDrainEnd(count: number): void {
    this.atDrainEnd = count
  }

  markBudgetExhausted(): void {
    this.budgetExhausted = true
  }

  /**
   * A release (or hook) was left running at its deadline. It stays open, and
   * is named in `heldBy`, until the returned function is called when its
   * fiber really ends.
   */
  abandon(name: string): () => void {
    const key = {}
    this.abandoned.set(key, name)
    return () => void this.abandoned.delete(key)
  }

  /**
   * This library's work not finished yet: releases abandoned at their
   * deadline and still running, then releases not finished, in the order
   * they run (reverse acquisition).
   */
  openReleases(): Array<string> {
    return [
      ...this.abandoned.values(),
      ...[...this.pending].reverse().filter((ticket) => ticket.hook !== true).map((ticket) => ticket.name)
    ]
  }

  /** The budget ran out: the sequence stopped waiting, or a release was cut short or skipped by a deadline. */
  overran(): boolean {
    return this.budgetExhausted || this.abandoned.size > 0 ||
      [...this.releases, ...this.hooks].some((r) => r.outcome === "timedOut" || r.outcome === "skipped")
  }

  /**
   * Records what holds the event loop now: the releases still open and the
   * process's active resources (`EventLoop.snapshot()`). The first record
   * wins, except that a later `aliveAfterStop` replaces it: it is the newer
   * answer to "why is this process still here".
   */
  markHeld(reason: Report.HeldBy["reason"], now: number, loop: EventLoopSnapshot, t0: number): Report.HeldBy {
    if (this.heldBy !== undefined && reason !== "aliveAfterStop") return this.heldBy
    this.heldBy = {
      at: now - t0,
      reason,
      openReleases: this.openReleases(),
      activeResources: loop.activeResources,
      ...(loop.handles.length > 0 ? { handles: loop.handles } : {}),
      ...(loop.unknown !== undefined ? { resourcesUnknown: loop.unknown } : {})
    }
    return this.heldBy
  }

  /** `clean` only when nothing was cut, every release finished and the budget held. */
  outcomeFor(trigger: Report.Trigger): Report.ShutdownReport["outcome"] {
    if (trigger._tag === "Defect") return "defect"
    if (trigger._tag === "Failed") return "degraded"
    const degraded = this.budgetExhausted || this.cut.length > 0 || this.pending.size > 0 ||
      this.releases.some((r) => r.outcome !== "released") || this.hooks.some((r) => r.outcome !== "released")
    return degraded ? "degraded" : "clean"
  }

  snapshot(options: {
    readonly outcome: Report.ShutdownReport["outcome"]
    readonly exitCode: number
    readonly now: number
    readonly header: Header
  }): Report.ShutdownReport {
    const { header } = options
    const offset = options.now - header.t0
    // Releases still running when the snapshot is taken (watchdog, 3rd
    // signal) are reported as timed out: they are why the process is ending.
    // Those that never started are reported as skipped.
    const unfinished: Array<Report.ReleaseRecord> = []
    for (const ticket of [...this.pending].reverse()) {
      unfinished.push(
        ticket.started === undefined
          ? { name: ticket.name, outcome: "skipped", at: offset, durationMs: 0, deadlineMs: 0, error: "never started" }
          : {
            name: ticket.name,
            outcome: "timedOut",
            at: ticket.started.at,
            durationMs: offset - ticket.started.at,
            deadlineMs: ticket.started.deadlineMs,
            error: "still running when the process ended"
          }
      )
    }
    return {
      outcome: options.outcome,
      exitCode: options.exitCode,
      durationMs: offset,
      trigger: header.trigger,
      startedAt: header.t0,
      ...(header.budgetMs !== undefined ? { budgetMs: header.budgetMs } : {}),
      signals: header.signals,
      inFlight: { atDrainStart: this.atDrainStart, atDrainEnd: this.atDrainEnd },
      phases: [...this.phases],
      ...(this.heldBy !== undefined ? { heldBy: this.heldBy } : {}),
      hooks: [...this.hooks],
      releases: [...this.releases, ...unfinished],
      cut: [...this.cut]
    }
  }
}
