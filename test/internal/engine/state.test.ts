/**
 * The shutdown state's transitions, as plain functions: no fiber, no clock.
 * See docs/design.md#the-state-and-its-transitions.
 */
import { Duration } from "effect"
import { describe, expect, it } from "vitest"
import * as State from "../../../src/internal/engine/state.ts"

const limits: State.Limits = { timeout: Duration.seconds(25), emergencyTimeout: Duration.seconds(1) }
const sigterm = (): State.Event => ({
  _tag: "Signal",
  name: "SIGTERM",
  trigger: { _tag: "Signal", signal: "SIGTERM" },
  exitCode: 143
})
const sigint = (): State.Event => ({
  _tag: "Signal",
  name: "SIGINT",
  trigger: { _tag: "Signal", signal: "SIGINT" },
  exitCode: 130
})

/** Applies `events` in order, each at its own time; returns every step. */
const run = (state: State.State, events: ReadonlyArray<readonly [State.Event, number]>) => {
  const steps: Array<State.Step> = []
  for (const [event, now] of events) {
    const step = State.transition(state, event, now)
    steps.push(step)
    state = step.state
  }
  return { state, steps, reactions: steps.map((s) => s.reaction._tag) }
}

const ready = State.transition(State.initial(limits), { _tag: "Ready" }, 0).state

describe("State.transition: signals", () => {
  it("1st signal: the trigger, t = 0, the deadline t0 + B, one signal counted", () => {
    const { reactions, state } = run(ready, [[sigterm(), 1_000]])
    expect(reactions).toEqual(["Triggered"])
    const shutdown = State.shutdownOf(state)!
    expect(shutdown.trigger).toEqual({ _tag: "Signal", signal: "SIGTERM" })
    expect(shutdown.t0).toBe(1_000)
    expect(shutdown.deadline).toBe(26_000)
    expect(shutdown.signals).toBe(1)
    expect(shutdown.escalated).toBe(false)
    expect(State.phaseOf(state)).toBe("Ready")
    expect(State.budgetOf(shutdown)).toBe(25_000)
  })

  it("2nd signal: escalates, the deadline moves to now + the emergency budget", () => {
    const { reactions, state } = run(ready, [[sigterm(), 1_000], [sigterm(), 3_000]])
    expect(reactions).toEqual(["Triggered", "SecondSignal"])
    expect(run(ready, [[sigterm(), 1_000], [sigterm(), 3_000]]).steps[1]!.reaction).toEqual({
      _tag: "SecondSignal",
      signal: "SIGTERM",
      escalated: true
    })
    const shutdown = State.shutdownOf(state)!
    expect(shutdown.signals).toBe(2)
    expect(shutdown.escalated).toBe(true)
    expect(shutdown.deadline).toBe(4_000)
    expect(State.budgetOf(shutdown)).toBe(3_000)
    // The trigger stays the first one.
    expect(shutdown.trigger).toEqual({ _tag: "Signal", signal: "SIGTERM" })
  })

  it("3rd signal: exit at once with the signal's code", () => {
    const { reactions, steps } = run(ready, [[sigterm(), 1_000], [sigterm(), 2_000], [sigint(), 2_100]])
    expect(reactions).toEqual(["Triggered", "SecondSignal", "Exit"])
    expect(steps[2]!.reaction).toEqual({ _tag: "Exit", exitCode: 130 })
  })

  it("the same signal within the duplicate window is one delivery; a storm still escalates", () => {
    const window = Duration.toMillis(State.DUPLICATE_SIGNAL_WINDOW)
    const twice = run(ready, [[sigterm(), 1_000], [sigterm(), 1_000 + window - 1]])
    expect(twice.reactions).toEqual(["Triggered", "None"])
    expect(State.shutdownOf(twice.state)!.signals).toBe(1)
    // Anchored at the counted delivery: a delivery every 30 ms still counts every other one.
    const storm = run(ready, [[sigterm(), 0], [sigterm(), 30], [sigterm(), 60], [sigterm(), 90], [sigterm(), 120]])
    expect(storm.reactions).toEqual(["Triggered", "None", "SecondSignal", "None", "Exit"])
    // A different signal is never a duplicate.
    expect(run(ready, [[sigterm(), 0], [sigint(), 1]]).reactions).toEqual(["Triggered", "SecondSignal"])
  })

  it("a signal after a programmatic trigger is counted; the next one escalates", () => {
    const { reactions, state } = run(ready, [
      [{ _tag: "Requested", reason: "deploy" }, 0],
      [sigterm(), 100],
      [sigterm(), 200]
    ])
    expect(reactions).toEqual(["Triggered", "None", "SecondSignal"])
    expect(State.shutdownOf(state)!.trigger).toEqual({ _tag: "Requested", reason: "deploy" })
  })
})

describe("State.transition: the sequence's stages", () => {
  it("phases follow the stages; advancing backwards does nothing", () => {
    const { state } = run(ready, [[sigterm(), 0], [{ _tag: "Advance", to: "Closing" }, 10]])
    expect(State.phaseOf(state)).toBe("Closing")
    expect(State.transition(state, { _tag: "Advance", to: "Draining" }, 20).state).toBe(state)
    const releasing = State.transition(state, { _tag: "Advance", to: "Releasing" }, 30).state
    expect(releasing._tag).toBe("Releasing")
    expect(State.phaseOf(releasing)).toBe("Releasing")
  })

  it("a trigger before Ready: the phase stays Starting, wasReady is false, Ready is refused", () => {
    const { reactions, state } = run(State.initial(limits), [[sigterm(), 0], [{ _tag: "Ready" }, 5]])
    expect(reactions).toEqual(["Triggered", "None"])
    expect(State.phaseOf(state)).toBe("Starting")
    expect(State.shutdownOf(state)!.wasReady).toBe(false)
  })

  it("a defect during the drain escalates the shutdown under way, keeping the first trigger", () => {
    const defect: State.Event = {
      _tag: "Defect",
      trigger: { _tag: "Defect", source: "uncaughtException", cause: "boom" }
    }
    const { reactions, state } = run(ready, [[sigterm(), 0], [{ _tag: "Advance", to: "Closing" }, 0], [defect, 2_000]])
    expect(reactions).toEqual(["Triggered", "None", "Escalated"])
    const shutdown = State.shutdownOf(state)!
    expect(shutdown.trigger._tag).toBe("Signal")
    expect(shutdown.deadline).toBe(3_000)
    // A first defect is the trigger itself.
    expect(State.shutdownOf(State.transition(ready, defect, 0).state)!.trigger._tag).toBe("Defect")
  })

  it("escalation during the release moves the deadline only earlier", () => {
    const late = run(ready, [[sigterm(), 0], [{ _tag: "Advance", to: "Releasing" }, 24_500], [sigterm(), 24_600]])
    expect(late.state._tag).toBe("Releasing")
    // now + 1 s would be 25 600: past t0 + B, so the deadline stays at 25 000.
    expect(State.shutdownOf(late.state)!.deadline).toBe(25_000)
    const early = run(ready, [[sigterm(), 0], [{ _tag: "Advance", to: "Releasing" }, 2_000], [sigterm(), 2_500]])
    expect(State.shutdownOf(early.state)!.deadline).toBe(3_500)
    expect(State.remaining(early.state, 3_000)).toBe(500)
  })

  it("the program's end: a trigger; on the fast path after a trigger, an escalation", () => {
    const completed = State.transition(ready, { _tag: "ProgramEnded", trigger: { _tag: "Completed" } }, 0).state
    expect(State.shutdownOf(completed)).toMatchObject({ trigger: { _tag: "Completed" }, programEnded: true })
    const failed: State.Event = { _tag: "ProgramEnded", trigger: { _tag: "Failed", cause: "x" } }
    const afterSignal = run(ready, [[sigterm(), 0], [failed, 100]])
    expect(afterSignal.reactions).toEqual(["Triggered", "Escalated"])
    expect(State.shutdownOf(afterSignal.state)).toMatchObject({ programEnded: true, escalated: true })
    const interrupted = run(ready, [[sigterm(), 0], [{ _tag: "ProgramEnded", trigger: { _tag: "Interrupted" } }, 100]])
    expect(interrupted.reactions).toEqual(["Triggered", "None"])
    expect(State.shutdownOf(interrupted.state)).toMatchObject({ programEnded: true, escalated: false })
  })

  it("remaining is the whole budget before any trigger", () => {
    expect(State.remaining(ready, 123)).toBe(25_000)
  })

  it("Stopped: a forced stop wins over the sequence's; a forced stop is kept", () => {
    const report = { exitCode: 1 } as never
    const triggered = State.transition(ready, sigterm(), 0).state
    const forced = State.transition(triggered, { _tag: "Force", report }, 10).state
    expect(forced).toMatchObject({ _tag: "Stopped", forced: true })
    expect(State.phaseOf(forced)).toBe("Stopped")
    expect(State.transition(forced, { _tag: "Stop", report }, 20).state).toBe(forced)
    const stopped = State.transition(triggered, { _tag: "Stop", report }, 10).state
    expect(State.transition(stopped, { _tag: "Force", report }, 20).state).toMatchObject({ forced: true })
  })
})
