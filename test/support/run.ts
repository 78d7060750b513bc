/**
 * Starting a program under `Graceful.run` in a unit test (TestClock, no real
 * time): `start` forks it and lets it settle, `settle` lets forked fibers
 * run until they block. Shared by the unit tests of the adapters.
 */
import { Effect } from "effect"
import { Graceful } from "../../src/index.ts"

/**
 * Lets every runnable fiber take its next steps, no time passing: 20 yields
 * to the scheduler (a count, not a fact: what a test then asserts is the
 * state it needs).
 */
export const settle = Effect.gen(function*() {
  for (let i = 0; i < 20; i++) yield* Effect.yieldNow
})

/**
 * {@link settle} for tests over a real client's in-memory double: five
 * rounds of a `setImmediate` (its promise callbacks and nextTicks run) and
 * ten yields. No time passes.
 */
export const settleIo = Effect.gen(function*() {
  for (let i = 0; i < 5; i++) {
    yield* Effect.promise(() => new Promise((resolve) => setImmediate(resolve)))
    for (let j = 0; j < 10; j++) yield* Effect.yieldNow
  }
})

/** `start`, settling with `settled` instead of {@link settle}. */
export const startWith =
  (settled: Effect.Effect<void>) => <A, E, R>(program: Effect.Effect<A, E, R>, options?: Graceful.RunOptions) =>
    Effect.gen(function*() {
      const fiber = yield* program.pipe(Graceful.run(options ?? { timeout: "10 seconds" }), Effect.forkChild)
      yield* settled
      return fiber
    })

/** Runs `program` under `Graceful.run` (default budget 10 s) in a child fiber and lets it settle. */
export const start = startWith(settle)
