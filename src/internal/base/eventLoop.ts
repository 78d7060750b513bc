/**
 * What holds Node's event loop right now: the answer to "why is this process
 * still alive?" when a shutdown overruns its budget or the process lingers
 * after Stopped.
 *
 * Synchronous on purpose: the watchdog and a third signal call it from a
 * process callback, when every fiber may be stuck.
 *
 * @internal
 */

/** What holds the loop at one moment. */
export interface EventLoopSnapshot {
  /** `process.getActiveResourcesInfo()` counted by type. Unref'd timers and handles are not in it. */
  readonly activeResources: Record<string, number>
  /** A few handles described (sockets with their addresses, servers, child processes). */
  readonly handles: Array<string>
  /**
   * Set when the runtime does not say what holds its loop (Bun's
   * `getActiveResourcesInfo` is always empty): the empty lists then mean
   * "unknown", not "nothing".
   */
  readonly unknown?: string | undefined
}

/** Handles described at most; the counts cover the rest. */
export const MAX_HANDLES = 10

interface ProcessInternals {
  /** Undocumented, but present since Node 0.x: the ref'd libuv handles as JS objects. */
  readonly _getActiveHandles?: () => Array<unknown>
}

const isRecord = (value: unknown): value is Record<string, unknown> => typeof value === "object" && value !== null

const endpoint = (address: unknown, port: unknown): string | undefined =>
  typeof address === "string" && typeof port === "number"
    ? `${address.includes(":") ? `[${address}]` : address}:${port}`
    : undefined

/** One handle in a few words, or undefined when it says nothing useful. */
export const describeHandle = (handle: unknown): string | undefined => {
  if (!isRecord(handle)) return undefined
  const name = typeof handle.constructor === "function" ? handle.constructor.name : "handle"
  try {
    // net.Socket (and tls.TLSSocket): local -> remote.
    if ("remotePort" in handle || "localPort" in handle) {
      const local = endpoint(handle.localAddress, handle.localPort)
      const remote = endpoint(handle.remoteAddress, handle.remotePort)
      if (local !== undefined || remote !== undefined) return `${name} ${local ?? "?"} -> ${remote ?? "?"}`
      // A pipe or a stdio stream.
      if (handle.fd === 0 || handle.fd === 1 || handle.fd === 2) return undefined
      return name
    }
    // net.Server / http.Server: its listening address.
    if (typeof handle.address === "function") {
      const address: unknown = (handle.address as () => unknown).call(handle)
      if (isRecord(address)) return `${name} ${endpoint(address.address, address.port) ?? "?"}`
      if (typeof address === "string") return `${name} ${address}`
      return name
    }
    // ChildProcess.
    if (typeof handle.pid === "number") return `${name} pid ${handle.pid}`
  } catch {
    // A handle half torn down may throw from its getters: count it, do not describe it.
  }
  return undefined
}

/**
 * What holds the event loop now. `proc` defaults to this process; a test
 * passes a stand-in to check the counting.
 */
export const snapshot = (
  proc: Pick<NodeJS.Process, "getActiveResourcesInfo"> & ProcessInternals = process
): EventLoopSnapshot => {
  const activeResources: Record<string, number> = {}
  for (const type of proc.getActiveResourcesInfo()) activeResources[type] = (activeResources[type] ?? 0) + 1
  const handles: Array<string> = []
  if (typeof proc._getActiveHandles === "function") {
    for (const handle of proc._getActiveHandles()) {
      if (handles.length >= MAX_HANDLES) break
      const described = describeHandle(handle)
      if (described !== undefined) handles.push(described)
    }
  }
  const bun = (process.versions as Record<string, string | undefined>).bun
  return bun === undefined ? { activeResources, handles } : {
    activeResources,
    handles,
    unknown: `Bun ${bun} does not report what holds its event loop (process.getActiveResourcesInfo() is empty)`
  }
}

/**
 * Calls `onStillAlive` if the process is still alive `delayMs` after now. The
 * timer is unref'd: it never keeps the process alive itself, and it fires
 * only when something else does, which is the case worth reporting. Returns
 * a function that cancels it.
 */
export const whenStillAlive = (delayMs: number, onStillAlive: () => void): () => void => {
  const timer = setTimeout(onStillAlive, Math.max(0, delayMs))
  timer.unref()
  return () => clearTimeout(timer)
}

/** How long after Stopped a process still alive is reported. */
export const ALIVE_AFTER_STOP_MS = 1_000
