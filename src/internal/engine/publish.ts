/**
 * Publishing the report: a human summary and one JSON line in the log, and
 * the JSON in `SHUTDOWN_REPORT_FILE` when set, within its size limit.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Report from "../../Report.ts"
import * as ReportFile from "./reportFile.ts"

export const publish = (
  snapshot: Report.ShutdownReport,
  reportFile: ReportFile.ReportFileTarget | undefined
): Effect.Effect<void> =>
  Effect.gen(function*() {
    const level = snapshot.outcome === "clean"
      ? Effect.logInfo
      : snapshot.outcome === "degraded"
      ? Effect.logWarning
      : Effect.logError
    yield* level(Report.summary(snapshot))
    yield* level("shutdown report").pipe(Effect.annotateLogs("report", Report.toJson(snapshot)))
    if (reportFile !== undefined) {
      // The errno, not "An error occurred in Effect.try".
      yield* ReportFile.write(reportFile, snapshot).pipe(Effect.catch((error) => Effect.logWarning(error.message)))
    }
  })
