/**
 * Every read or write of a Node private field the HTTP guard depends on, in
 * one place, with a self-check run once when the first guard is attached:
 * if a Node version renames or drops one of them, start-up fails with a
 * message naming the field instead of the guard silently misbehaving.
 *
 * @internal
 */
import * as Http from "node:http"
import type * as Net from "node:net"

/** Node's fields of a server response (head written, queued behind another one, will close). */
interface ResponseFields {
  _header: string | null
  /** The head says `Connection: close`: Node ends the socket after this response. */
  _last: boolean
  shouldKeepAlive: boolean
  outputData: Array<{ data: unknown }>
  socket: Net.Socket | null
}

/** The response being written on a socket (Node's `socket._httpMessage`). */
export const currentResponse = (socket: Net.Socket): Http.ServerResponse | null | undefined =>
  (socket as unknown as { _httpMessage?: Http.ServerResponse | null })._httpMessage

/** Whether the response's head is written and says `Connection: close` (Node will end the socket after it). */
export const closesConnection = (response: Http.ServerResponse): boolean =>
  response.headersSent && (response as unknown as ResponseFields)._last === true

const KEEP_ALIVE_HEAD = /\r\nconnection: keep-alive\r\n(?:keep-alive: [^\r]*\r\n)?/i

/**
 * A response whose head is written but still waits in Node's queue behind
 * the response being sent (pipelining): rewrites `Connection: keep-alive` to
 * `close` in the queued head and tells Node to close after it. Returns
 * whether the head now says close.
 */
export const closeQueuedHead = (response: Http.ServerResponse): boolean => {
  const queued = response as unknown as ResponseFields
  if (queued._last === true) return true
  const head = queued._header
  const first = queued.outputData?.[0]
  if (queued.socket != null || head == null || first === undefined || typeof first.data !== "string") return false
  if (!first.data.startsWith(head)) return false
  const closing = head.replace(KEEP_ALIVE_HEAD, "\r\nConnection: close\r\n")
  if (closing === head) return false
  first.data = closing + first.data.slice(head.length)
  queued._header = closing
  queued._last = true
  queued.shouldKeepAlive = false
  return true
}

const CLOSE_HEAD = /\r\nconnection: close\r\n/i

/**
 * The inverse of {@link closeQueuedHead}, for a head the guard closed that is
 * still queued when a newer pipelined request arrives: the newer one becomes
 * the last, so this one keeps the connection open. Returns whether it did.
 */
export const reopenQueuedHead = (response: Http.ServerResponse): boolean => {
  const queued = response as unknown as ResponseFields
  const head = queued._header
  const first = queued.outputData?.[0]
  if (queued.socket != null || head == null || first === undefined || typeof first.data !== "string") return false
  if (!first.data.startsWith(head) || !CLOSE_HEAD.test(head)) return false
  const opened = head.replace(CLOSE_HEAD, "\r\nConnection: keep-alive\r\n")
  first.data = opened + first.data.slice(head.length)
  queued._header = opened
  queued._last = false
  queued.shouldKeepAlive = true
  return true
}

/** The listener's handle, to shrink its backlog (`listen(0)`) before it closes. */
export const listenHandle = (server: Net.Server): { readonly listen?: (backlog: number) => number } | undefined =>
  (server as unknown as { _handle?: { listen?: (backlog: number) => number } | null })._handle ?? undefined

/** Node's list of HTTP/1 connections (what `server.closeIdleConnections` reads). */
export interface ConnectionsList {
  readonly active: () => ReadonlyArray<{ readonly socket?: unknown }>
}

export const connectionsListOf = (server: object): ConnectionsList | undefined => {
  for (const symbol of Object.getOwnPropertySymbols(server)) {
    if (symbol.description === "http.server.connections") {
      const list = (server as Record<symbol, unknown>)[symbol]
      if (typeof list === "object" && list !== null && typeof (list as ConnectionsList).active === "function") {
        return list as ConnectionsList
      }
    }
  }
  return undefined
}

/** `ws` keeps its WebSocket on the socket under a symbol described "websocket". */
export interface WsLike {
  readonly close: (code: number, reason: string) => void
  readonly terminate: () => void
}

export const webSocketOf = (socket: Net.Socket): WsLike | undefined => {
  for (const symbol of Object.getOwnPropertySymbols(socket)) {
    if (symbol.description === "websocket") {
      const value = (socket as unknown as Record<symbol, unknown>)[symbol]
      if (typeof value === "object" && value !== null && "close" in value && "terminate" in value) {
        return value as WsLike
      }
    }
  }
  return undefined
}

let checked: string | undefined | null = null

/**
 * Checks, once per process, that this Node version still has the private
 * fields the guard reads. Returns a message naming what is missing, or
 * `undefined` when all is there.
 */
export const selfCheck = (): string | undefined => {
  if (checked !== null) return checked
  const missing: Array<string> = []
  const server = Http.createServer()
  if (!("_handle" in server)) missing.push("net.Server._handle")
  const request = new Http.IncomingMessage(null as unknown as Net.Socket)
  const response = new Http.ServerResponse(request) as unknown as Record<string, unknown>
  for (const field of ["_header", "_last", "shouldKeepAlive", "outputData"]) {
    if (!(field in response)) missing.push(`http.ServerResponse.${field}`)
  }
  if (!Array.isArray(response.outputData)) missing.push("http.ServerResponse.outputData (an array)")
  if (typeof (Http.ServerResponse.prototype as unknown as Record<string, unknown>)._implicitHeader !== "function") {
    missing.push("http.ServerResponse._implicitHeader")
  }
  checked = missing.length === 0
    ? undefined
    : `effect-graceful: this Node version (${process.version}) lacks internals the HTTP guard reads: ${
      missing.join(", ")
    }. Supported: Node 22.19+, 24, 26.`
  return checked
}
