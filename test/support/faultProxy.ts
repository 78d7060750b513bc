/**
 * A fault-injecting TCP proxy for the integration suite: it sits between a
 * service and a real server (Postgres, Redis) on loopback and can
 *
 * - `forward` bytes both ways (the default),
 * - `freeze`: stop forwarding in both directions and accept new connections
 *   without ever connecting them upstream, keeping every socket open (a
 *   server that hangs: a stopped VM, a network partition that drops packets),
 * - `reset`: destroy every connection with a TCP RST on both sides (a server
 *   that crashed or failed over), then forward again,
 * - `close`: stop listening and reset what is left.
 *
 * It never answers on behalf of the server: every byte the service sees
 * comes from the real server.
 */
import * as Net from "node:net"

export interface FaultProxy {
  /** The port the proxy listens on (127.0.0.1). */
  readonly port: number
  /** Connections accepted so far. */
  readonly accepted: () => number
  /** Connections open now. */
  readonly open: () => number
  /** Forward again (after `freeze`); bytes held while frozen are delivered. */
  readonly forward: () => void
  /** Stop forwarding; keep every socket open; park new connections. */
  readonly freeze: () => void
  /** Reset every open connection (RST on both sides); then forward. */
  readonly reset: () => void
  /** Stop listening and reset every connection. */
  readonly close: () => Promise<void>
}

interface Pair {
  readonly client: Net.Socket
  upstream: Net.Socket | undefined
}

/** Starts a proxy on an ephemeral loopback port in front of `target`. */
export const startFaultProxy = async (
  target: { readonly host?: string; readonly port: number }
): Promise<FaultProxy> => {
  const host = target.host ?? "127.0.0.1"
  const pairs = new Set<Pair>()
  let frozen = false
  let accepted = 0

  const connectUpstream = (pair: Pair) => {
    const upstream = Net.connect({ host, port: target.port })
    pair.upstream = upstream
    upstream.setNoDelay(true)
    pair.client.pipe(upstream)
    upstream.pipe(pair.client)
    upstream.on("error", () => pair.client.destroy())
    upstream.on("close", () => pair.client.destroy())
  }

  const server = Net.createServer((client) => {
    accepted++
    client.setNoDelay(true)
    const pair: Pair = { client, upstream: undefined }
    pairs.add(pair)
    client.on("error", () => pair.upstream?.destroy())
    client.on("close", () => {
      pair.upstream?.destroy()
      pairs.delete(pair)
    })
    if (frozen) client.pause()
    else connectUpstream(pair)
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const address = server.address() as Net.AddressInfo

  const resetAll = () => {
    for (const pair of pairs) {
      pair.client.resetAndDestroy()
      if (pair.upstream !== undefined && !pair.upstream.destroyed) pair.upstream.resetAndDestroy()
    }
    pairs.clear()
  }

  return {
    port: address.port,
    accepted: () => accepted,
    open: () => pairs.size,
    freeze: () => {
      frozen = true
      for (const pair of pairs) {
        // Unpipe so that paused sockets buffer instead of flowing; reading
        // stops, the kernel's windows fill, nothing is lost or answered.
        if (pair.upstream !== undefined) {
          pair.client.unpipe(pair.upstream)
          pair.upstream.unpipe(pair.client)
          pair.upstream.pause()
        }
        pair.client.pause()
      }
    },
    forward: () => {
      frozen = false
      for (const pair of pairs) {
        if (pair.upstream === undefined) connectUpstream(pair)
        else {
          pair.client.pipe(pair.upstream)
          pair.upstream.pipe(pair.client)
        }
        pair.client.resume()
        pair.upstream?.resume()
      }
    },
    reset: () => {
      resetAll()
      frozen = false
    },
    close: () =>
      new Promise<void>((resolve) => {
        resetAll()
        server.close(() => resolve())
      })
  }
}
