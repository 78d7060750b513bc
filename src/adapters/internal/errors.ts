/**
 * Errors the adapters share.
 *
 * @internal
 */
import type * as Cause from "effect/Cause"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"

/** The default time a readiness ping may take. */
export const DEFAULT_PING_TIMEOUT: Duration.Duration = Duration.seconds(1)

/** The fields of an adapter's operation error. */
export interface OperationErrorFields {
  /** The resource's name, as in logs and in the report. */
  readonly resource: string
  /** What failed: `connect`, `subscribe`, `consume`... */
  readonly operation: string
  readonly reason: string
}

/** The fields of a readiness ping error. */
export interface PingErrorFields {
  /** The resource's name, as in logs and in the report (not `Error.name`, which stays the tag). */
  readonly resource: string
  readonly reason: string
}

/** A tagged error class with these fields. */
export type ErrorClass<Tag extends string, Fields> = new(
  args: Fields
) => Cause.YieldableError & { readonly _tag: Tag } & Readonly<Fields>

/**
 * The error class of an adapter whose operations (connect, subscribe,
 * consume...) fail with `{ resource, operation, reason }`. Each adapter
 * exports its own class under its own tag (`AmqpError`, `MqttError`,
 * `NatsError`) built from this one.
 */
export const OperationError = <const Tag extends string>(tag: Tag): ErrorClass<Tag, OperationErrorFields> =>
  class extends Data.TaggedError(tag)<OperationErrorFields> {
    override get message(): string {
      return `${this.resource}: ${this.operation} failed: ${this.reason}`
    }
  }

/**
 * The error class of a readiness ping that did not answer in time, or
 * failed: `{ resource, reason }`. `PgPingError` and `MysqlPingError` are
 * built from it.
 */
export const PingError = <const Tag extends string>(tag: Tag): ErrorClass<Tag, PingErrorFields> =>
  class extends Data.TaggedError(tag)<PingErrorFields> {
    override get message(): string {
      return `${this.resource}: ping failed: ${this.reason}`
    }
  }
