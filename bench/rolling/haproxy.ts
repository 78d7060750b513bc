/**
 * HAProxy for the rolling-restart benchmark: installed from Debian's
 * packages when missing, configured on loopback, run in the foreground as a
 * child, and watched through its stats page.
 *
 * The configuration is what a careful production deployment would use,
 * scaled down in time so that a run fits in a few minutes:
 *
 * - active health checks on `GET /health/ready`, `http-check expect status
 *   200`, every `inter`; a server is taken out after `fall` failed checks in
 *   a row and put back after `rise` good ones. So a server that starts
 *   answering 503 receives no new requests at most `fall × inter` (plus one
 *   check's latency) later: the service's lame-duck delay must be at least
 *   that long (the rule `SHUTDOWN_DELAY ≥ fall × inter`, with a margin).
 * - `retries 3` with `option redispatch 1`: a connection that fails to open
 *   is retried, each retry on another server. `retry-on` stays at its
 *   default (`conn-failure`), because retrying a request already sent is only
 *   safe for idempotent requests; so a request that the server accepted and
 *   then dropped (reset, closed without answer) reaches the client as an
 *   error, which is what we want to count.
 * - HTTP keep-alive on both sides (HAProxy's default, `option
 *   http-keep-alive`) with `http-reuse safe` (the default): the client keeps
 *   its connections to HAProxy, and HAProxy reuses idle server connections,
 *   as any real deployment does. This is exactly where a naive shutdown hurts:
 *   an idle server connection closed by the server while HAProxy sends on it.
 * - Logs: every request (`option httplog`), to stdout, kept in a file, so
 *   that every failure can be explained by HAProxy's status and termination
 *   state. (`dontlog-normal` would hide the requests HAProxy ends by closing
 *   the client connection without an answer.)
 */
import { spawnSync } from "node:child_process"

export interface HaproxySettings {
  /** Health-check interval, ms. */
  readonly interMs: number
  /** Failed checks in a row before a server is marked DOWN. */
  readonly fall: number
  /** Good checks in a row before a server is marked UP again. */
  readonly rise: number
  /** How long a single check may take to answer, ms. */
  readonly checkTimeoutMs: number
  /** Connection retries (each redispatched to another server). */
  readonly retries: number
  readonly connectTimeoutMs: number
  /** Longest wait for a server's response. */
  readonly serverTimeoutMs: number
  /** Client-side idle keep-alive timeout. */
  readonly keepAliveTimeoutMs: number
}

export const defaultSettings: HaproxySettings = {
  interMs: 250,
  fall: 2,
  rise: 2,
  checkTimeoutMs: 1_000,
  retries: 3,
  connectTimeoutMs: 1_000,
  serverTimeoutMs: 10_000,
  keepAliveTimeoutMs: 30_000
}

export interface HaproxyPorts {
  readonly frontend: number
  readonly stats: number
  readonly servers: ReadonlyArray<{ readonly name: string; readonly port: number }>
}

const run = (command: string, args: ReadonlyArray<string>) =>
  spawnSync(command, args, {
    encoding: "utf8",
    env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
    timeout: 300_000
  })

/** `HAProxy version 2.6.12-1+deb12u4 2025/...`, or undefined when not installed. */
export const version = (): string | undefined => {
  const result = run("haproxy", ["-v"])
  if (result.error !== undefined || result.status !== 0) return undefined
  return result.stdout.split("\n")[0]?.trim()
}

/** Installs the Debian package when `haproxy` is not on the PATH. */
export const ensureInstalled = (): string => {
  const found = version()
  if (found !== undefined) return found
  console.log("  haproxy not found: apt-get install -y haproxy")
  let install = run("apt-get", ["install", "-y", "--no-install-recommends", "haproxy"])
  if (install.status !== 0) {
    // A fresh machine may have no package lists yet.
    run("apt-get", ["update"])
    install = run("apt-get", ["install", "-y", "--no-install-recommends", "haproxy"])
  }
  const installed = version()
  if (installed === undefined) {
    throw new Error(`could not install haproxy:\n${install.stderr ?? ""}${install.error?.message ?? ""}`)
  }
  return installed
}

/** The configuration file's text. */
export const config = (ports: HaproxyPorts, settings: HaproxySettings = defaultSettings): string =>
  `# Written by bench/rolling/run.ts for one benchmark run; loopback only.
global
  log stdout format raw local0 info
  maxconn 4096
  # One thread is plenty at this rate and leaves the two CPUs to the services.
  nbthread 1

defaults
  mode http
  log global
  # Every request is logged (to a file): the log explains each failure.
  option httplog
  # Keep-alive on both sides (HAProxy's default, stated for the reader).
  option http-keep-alive
  http-reuse safe
  timeout connect ${settings.connectTimeoutMs}ms
  timeout client 60s
  timeout server ${settings.serverTimeoutMs}ms
  timeout http-request 10s
  timeout http-keep-alive ${settings.keepAliveTimeoutMs}ms
  timeout check ${settings.checkTimeoutMs}ms
  # A connection that fails to open is retried on another server.
  retries ${settings.retries}
  option redispatch 1

frontend web
  bind 127.0.0.1:${ports.frontend}
  default_backend service

backend service
  balance roundrobin
  option httpchk GET /health/ready
  http-check expect status 200
  # Out of the pool after fall x inter of 503s; the lame-duck delay covers it.
  default-server check inter ${settings.interMs}ms fall ${settings.fall} rise ${settings.rise}
${ports.servers.map((server) => `  server ${server.name} 127.0.0.1:${server.port}`).join("\n")}

listen stats
  bind 127.0.0.1:${ports.stats}
  stats enable
  stats uri /stats
`

/** One row of HAProxy's stats CSV, keyed by column name. */
export type StatsRow = Readonly<Record<string, string>>

/** Reads `/stats;csv` from the stats listener. */
export const readStats = async (statsPort: number): Promise<ReadonlyArray<StatsRow>> => {
  const response = await fetch(`http://127.0.0.1:${statsPort}/stats;csv`, { signal: AbortSignal.timeout(2_000) })
  const text = await response.text()
  const [header, ...lines] = text.trim().split("\n")
  const columns = (header ?? "").replace(/^# /, "").split(",")
  return lines.map((line) => {
    const values = line.split(",")
    return Object.fromEntries(columns.map((column, i) => [column, values[i] ?? ""]))
  })
}
