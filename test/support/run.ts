/**
 * Starting a program under `Graceful.run` in a unit test (TestClock, no real
 * time): `start` forks it and waits until every fiber it started has blocked;
 * `settle` waits for that again after the test has acted (a signal, a message
 * from a double). Shared by the unit tests of the adapters and the core.
 *
 * What `settle` waits for is a fact, not a number of turns: the program runs
 * on a scheduler that counts the tasks its fibers have queued and not yet run
 * (a fiber resumed, forked, or yielding). When none is left, every fiber of
 * the program is suspended on something outside the scheduler (a Deferred, a
 * queue, a TestClock sleep, a pending promise): what moves it on next is the
 * test (a signal, `TestClock.adjust`) or a callback from outside Effect.
 * Callbacks queued as promise reactions or nextTicks run within the turn
 * `settle` waits; real I/O that takes longer (a file write) is not waited
 * for: a test that needs it waits for it as a fact (`Fiber.join`, a
 * `Deferred`).
 */
import { Effect, Scheduler } from "effect"
import { Graceful } from "../../src/index.ts"

/** The program's tasks: queued and not yet run, and queued in all. */
const tasks = { pending: 0, queued: 0 }

/** `parent`, counting the tasks of every fiber that runs on it (forked fibers inherit it). */
const counting = (parent: Scheduler.Scheduler): Scheduler.Scheduler => ({
  executionMode: parent.executionMode,
  shouldYield: (fiber) => parent.shouldYield(fiber),
  makeDispatcher: () => {
    const dispatcher = parent.makeDispatcher()
    return {
      scheduleTask: (task, priority) => {
        tasks.pending++
        tasks.queued++
        dispatcher.scheduleTask(() => {
          tasks.pending--
          task()
        }, priority)
      },
      flush: () => dispatcher.flush()
    }
  }
})

/** Runs `effect` (and every fiber it forks) on the counting scheduler that {@link settle} watches. */
export const counted = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.gen(function*() {
    const parent = yield* Scheduler.Scheduler
    return yield* Effect.provideService(effect, Scheduler.Scheduler, counting(parent))
  })

/**
 * A bound, not a count to wait: a program still queueing tasks after this
 * many turns of the event loop never blocks (a busy loop), and the test dies
 * naming that instead of hanging.
 */
const maxTurns = 10_000

/**
 * Waits until every fiber of the programs started with {@link start} (or run
 * {@link counted}) is suspended, no time passing: a whole turn of the event
 * loop (a `setImmediate`, after which every promise callback and nextTick
 * queued before it has run, so a double's callbacks too) passed with no task
 * of the program queued in it, and none left to run.
 */
export const settle: Effect.Effect<void> = Effect.gen(function*() {
  for (let turns = 0; turns < maxTurns; turns++) {
    const queued = tasks.queued
    yield* Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))
    if (tasks.pending === 0 && tasks.queued === queued) return
  }
  return yield* Effect.die(new Error(`the program's fibers were still running after ${maxTurns} turns`))
})

/** Runs `program` under `Graceful.run` (default budget 10 s) in a child fiber and waits until it has settled. */
export const start = <A, E, R>(program: Effect.Effect<A, E, R>, options?: Graceful.RunOptions) =>
  Effect.gen(function*() {
    const fiber = yield* program.pipe(Graceful.run(options ?? { timeout: "10 seconds" }), counted, Effect.forkChild)
    yield* settle
    return fiber
  })
