/**
 * Publishing the report: a human summary and one JSON line in the log, and
 * the JSON in `SHUTDOWN_REPORT_FILE` when set.
 *
 * @internal
 */
import { writeFileSync } from "node:fs"
import * as Effect from "effect/Effect"
import * as Report from "../Report.ts"

export const publish = (snapshot: Report.ShutdownReport, reportFile: string | undefined): Effect.Effect<void> =>
  Effect.gen(function*() {
    const level = snapshot.outcome === "clean"
      ? Effect.logInfo
      : snapshot.outcome === "degraded"
      ? Effect.logWarning
      : Effect.logError
    const json = Report.toJson(snapshot)
    yield* level(Report.summary(snapshot))
    yield* level("shutdown report").pipe(Effect.annotateLogs("report", json))
    if (reportFile !== undefined) {
      yield* Effect.try({
        try: () => writeFileSync(reportFile, json + "\n"),
        catch: (error) => error
      }).pipe(
        Effect.catch((error) => {
          const code = (error as NodeJS.ErrnoException).code
          const detail = error instanceof Error ? error.message : String(error)
          return Effect.logWarning(`could not write the shutdown report to ${reportFile}: ${code ?? "error"}: ${detail}`)
        })
      )
    }
  })
