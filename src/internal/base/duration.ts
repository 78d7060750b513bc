/**
 * Durations as users type them.
 *
 * @internal
 */
import * as Duration from "effect/Duration"
import * as Option from "effect/Option"

/**
 * Milliseconds of a duration option, or of `fallback` (a named default, as a
 * `Duration`) when it is not given: for the one call that needs a number.
 */
export function millisOr(input: Duration.Input | undefined, fallback: Duration.Duration): number
export function millisOr(input: Duration.Input | undefined, fallback?: undefined): number | undefined
export function millisOr(input: Duration.Input | undefined, fallback?: Duration.Duration): number | undefined {
  if (input !== undefined) return Duration.toMillis(Duration.fromInputUnsafe(input))
  return fallback === undefined ? undefined : Duration.toMillis(fallback)
}

const goUnits: Record<string, number> = { ns: 1e-6, us: 1e-3, "µs": 1e-3, ms: 1, s: 1_000, m: 60_000, h: 3_600_000 }
const goForm = /^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+$/
const goPart = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/g

/**
 * Parses a duration as Effect writes it (`"5 seconds"`, `"500 millis"`) or
 * as Go, Kubernetes and Spring do (`"30s"`, `"500ms"`, `"1m30s"`, `"1.5h"`).
 */
export const parse = (input: Duration.Input): Option.Option<Duration.Duration> => {
  const effectForm = Duration.fromInput(input)
  if (Option.isSome(effectForm) || typeof input !== "string") return effectForm
  const text = input.trim()
  if (!goForm.test(text)) return Option.none()
  let millis = 0
  for (const [, amount, unit] of text.matchAll(goPart)) millis += Number(amount) * goUnits[unit!]!
  return Option.some(Duration.millis(millis))
}
