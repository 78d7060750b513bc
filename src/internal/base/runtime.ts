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

/**
 * Whether a `node:http` guard was asked for (`Http.layer`, `Http.guard`, ...):
 * noted when those functions are called, which for a layer is when the app
 * composes it, before `Graceful.run` starts. Process-wide on purpose: the
 * start-up check must know before any layer is built, and nothing else
 * could tell it.
 */
let nodeHttpGuardRequested = false

/** Notes that a `node:http` guard will be set up. */
export const requestNodeHttpGuard = (): void => {
  nodeHttpGuardRequested = true
}

/**
 * At start-up, before anything is acquired: why the guard asked for so far
 * cannot run on this runtime, or `undefined`. The guard's own setup checks
 * again, for a guard asked for later (inside a program).
 */
export const unsupportedAtStart = (): string | undefined => nodeHttpGuardRequested ? runtimeCheck() : undefined
