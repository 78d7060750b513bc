/**
 * @internal
 */
import * as Duration from "effect/Duration"

/** Milliseconds of a duration option, or `fallback` when it is not given. */
export function millisOr(input: Duration.Input | undefined, fallback: number): number
export function millisOr(input: Duration.Input | undefined, fallback?: undefined): number | undefined
export function millisOr(input: Duration.Input | undefined, fallback?: number): number | undefined {
  return input === undefined ? fallback : Duration.toMillis(Duration.fromInputUnsafe(input))
}
