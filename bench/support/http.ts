/**
 * What the HTTP overhead benchmarks share: a fixed load (autocannon, 32
 * keep-alive connections), a median, and a one-off GET for the server's own
 * counters (`/cpu`).
 */
// @ts-expect-error autocannon ships no types
import autocannon from "autocannon"
import * as Net from "node:net"

export interface LoadResult {
  readonly requests: { readonly average: number; readonly total: number }
  readonly latency: { readonly p99: number }
}

/** `duration` seconds of 32 keep-alive connections on `/`. */
export const load = (port: number, duration: number): Promise<LoadResult> =>
  autocannon({ url: `http://127.0.0.1:${port}/`, connections: 32, pipelining: 1, duration })

export const median = (values: ReadonlyArray<number>): number => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

/** The body of `GET path` on its own connection. */
export const get = (port: number, path: string): Promise<string> =>
  new Promise((resolve, reject) => {
    const socket = Net.connect({ port, host: "127.0.0.1" }, () => {
      socket.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)
    })
    let data = ""
    socket.on("data", (chunk) => (data += chunk))
    socket.on("end", () => resolve(data.slice(data.indexOf("\r\n\r\n") + 4)))
    socket.on("error", reject)
  })
