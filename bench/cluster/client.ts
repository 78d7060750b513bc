/**
 * The bench's load: a client-only cluster client (no shards) that sends
 * `Increment` (persisted, key `<RUN_ID>-<n>`, n = 0, 1, 2, ...) at
 * PERSISTED_RATE a second and `Ping` (volatile) at VOLATILE_RATE a second
 * to ACCOUNTS entities, until SIGUSR2; then it waits for the calls still
 * out (at most 60 s) and prints `summary <json>`: how many of each it sent,
 * and each outcome it saw.
 */
import { NodeClusterSocket, NodeRuntime } from "@effect/platform-node"
import { PgClient } from "@effect/sql-pg"
import { Cause, Deferred, Effect, Fiber, FiberSet, Layer, Redacted } from "effect"
import { Account } from "../../examples/cluster/Counter.ts"

const runId = process.env.RUN_ID ?? "run"
const persistedRate = Number(process.env.PERSISTED_RATE ?? "200")
const volatileRate = Number(process.env.VOLATILE_RATE ?? "50")
const accounts = Number(process.env.ACCOUNTS ?? "100")
const TICK_MS = 50

const kindOf = (cause: Cause.Cause<unknown>): string => {
  const error = Cause.squash(cause)
  if (Cause.hasInterruptsOnly(cause)) return "Interrupt"
  if (typeof error === "object" && error !== null && "_tag" in error) return String((error as { _tag: unknown })._tag)
  return error instanceof Error ? error.name : String(error)
}

const program = Effect.gen(function*() {
  const client = yield* Account.client
  const stop = yield* Deferred.make<void>()
  process.once("SIGUSR2", () => Deferred.doneUnsafe(stop, Effect.void))
  const calls = yield* FiberSet.make()
  const persisted = { sent: 0, ok: 0, failed: {} as Record<string, number> }
  const volatile = { sent: 0, ok: 0, failed: {} as Record<string, number> }
  const count = (record: Record<string, number>, kind: string) => (record[kind] = (record[kind] ?? 0) + 1)
  let pCarry = 0
  let vCarry = 0
  const tick = Effect.suspend(() => {
    pCarry += (persistedRate * TICK_MS) / 1000
    vCarry += (volatileRate * TICK_MS) / 1000
    const effects: Array<Effect.Effect<void>> = []
    for (; pCarry >= 1; pCarry--) {
      const n = persisted.sent++
      effects.push(
        client(`a${n % accounts}`).Increment({ key: `${runId}-${n}` }).pipe(
          Effect.matchCause({
            onSuccess: () => void persisted.ok++,
            onFailure: (cause) => void count(persisted.failed, kindOf(cause))
          })
        )
      )
    }
    for (; vCarry >= 1; vCarry--) {
      const n = volatile.sent++
      effects.push(
        client(`a${(n * 7) % accounts}`).Ping().pipe(
          Effect.timeout("10 seconds"),
          Effect.matchCause({
            onSuccess: () => void volatile.ok++,
            onFailure: (cause) => void count(volatile.failed, kindOf(cause))
          })
        )
      )
    }
    return Effect.forEach(effects, (effect) => FiberSet.run(calls, effect), { discard: true })
  })
  const loop = yield* Effect.forkChild(Effect.forever(Effect.andThen(tick, Effect.sleep(TICK_MS))))
  console.log("sending")
  yield* Deferred.await(stop)
  yield* Fiber.interrupt(loop)
  yield* Effect.timeoutOption(FiberSet.awaitEmpty(calls), "60 seconds")
  console.log(`summary ${JSON.stringify({ persisted, volatile, outstanding: yield* FiberSet.size(calls) })}`)
})

const ClusterLive = NodeClusterSocket.layer({
  clientOnly: true,
  storage: "sql",
  shardingConfig: { shardsPerGroup: Number(process.env.SHARDS ?? "30") }
}).pipe(
  Layer.provide(PgClient.layer({ url: Redacted.make(process.env.DATABASE_URL!), applicationName: "bench-client" }))
)

program.pipe(Effect.scoped, Effect.provide(ClusterLive), NodeRuntime.runMain)
