/**
 * The example's entity: an account counter whose state is rows in Postgres.
 * `Increment` is persisted (stored before it is delivered, replayed by the
 * next owner of its shard) and inserts one row keyed by a key the client
 * chose, so "lost" and "processed twice" are counted from the table:
 * a key without a row, a key with two. `Ping` is volatile (sent over the
 * network only).
 */
import { Effect, Schema } from "effect"
import { ClusterSchema, Entity } from "effect/cluster"
import { Rpc } from "effect/rpc"
import { SqlClient } from "effect/sql"
import * as Cluster from "../../src/adapters/Cluster.ts"

export const Increment = Rpc.make("Increment", {
  payload: { key: Schema.String },
  success: Schema.Number
}).annotate(ClusterSchema.Persisted, true)

export const Ping = Rpc.make("Ping", { success: Schema.String })

export const Account = Entity.make("Account", [Increment, Ping])

/** The entity state: one row per applied `Increment` (no unique key: a replay shows as a second row). */
export const createTable = (sql: SqlClient.SqlClient) =>
  sql`CREATE TABLE IF NOT EXISTS account_increments (
    key text NOT NULL,
    account text NOT NULL,
    runner text NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
  )`.pipe(Effect.andThen(sql`CREATE INDEX IF NOT EXISTS account_increments_key ON account_increments (key)`))

/** The handlers, each wrapped with `Cluster.handler` (a no-op when the runner is not under `Cluster.layer`). */
export const AccountLive = (runner: string) =>
  Account.toLayer(Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const address = yield* Entity.CurrentAddress
    return Account.of({
      Increment: ({ payload }) =>
        Cluster.handler(
          sql`INSERT INTO account_increments (key, account, runner) VALUES (${payload.key}, ${address.entityId}, ${runner})`
            .pipe(Effect.as(1), Effect.orDie)
        ),
      Ping: () => Cluster.handler(Effect.succeed(runner))
    })
  }))
