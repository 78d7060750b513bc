import * as Http from "node:http"

/**
 * Checks, by feature, that this runtime's `node:http` server has what the
 * HTTP guard's listener close needs: the private `_handle` it reads and the
 * `_emitCloseIfDrained` that `net.Server.close` calls. Bun 1.x's `node:http`
 * lacks them, so the guard would fail at the first SIGTERM; this returns a
 * message naming the runtime and the missing parts instead, for a refusal at
 * start-up. `undefined` when all is there.
 */
export const runtimeCheck = (): string | undefined => {
  const server = Http.createServer() as unknown as Record<string, unknown>
  const missing: Array<string> = []
  if (!("_handle" in server)) missing.push("net.Server._handle")
  if (typeof server._emitCloseIfDrained !== "function") missing.push("net.Server._emitCloseIfDrained")
  if (missing.length === 0) return undefined
  const bun = (process.versions as Record<string, string | undefined>).bun
  const runtime = bun !== undefined ? `Bun ${bun}` : `this runtime (${process.release.name} ${process.version})`
  return `effect-graceful: the HTTP guard is not supported on ${runtime}'s node:http ` +
    `(missing: ${missing.join(", ")}; the guard's listener close needs them)` +
    (bun !== undefined ? "; on Bun, serve with effect-graceful/BunHttp (Bun.serve)" : "") + "; see docs/guide/bun.md"
}
