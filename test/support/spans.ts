/**
 * The spans a graceful shutdown exports, checked by the unit tests (Graceful,
 * Telemetry) and the end-to-end telemetry test.
 */
import { expect } from "vitest"

/** The shutdown's span, its phases' spans, and the release of a resource named `db`. */
export const shutdownSpanNames: ReadonlyArray<string> = [
  "graceful.shutdown",
  "graceful.draining",
  "graceful.closing",
  "graceful.cutting",
  "graceful.releasing",
  "graceful.release db"
]

/** Asserts that `names` holds each of {@link shutdownSpanNames}, listing `names` when one is missing. */
export const expectShutdownSpans = (names: ReadonlyArray<string>) => {
  for (const name of shutdownSpanNames) expect(names, names.join(", ")).toContain(name)
}
