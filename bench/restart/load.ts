/**
 * Steady open-loop load for the restart benchmark, in three streams issued
 * on schedule whatever the server does (a stall shows as latency or
 * failures, never as a quietly lower rate):
 *
 * - `keepAlive`: short requests over a keep-alive agent (a client or proxy
 *   that keeps its connections);
 * - `fresh`: short requests, each on a new connection (`agent: false`): the
 *   accept queue is never empty for long, so a moment without a listener, or
 *   a listener closed with connections queued, shows up;
 * - `long`: requests that take `longMs` on the server, on new connections,
 *   so that some are always in flight when an instance is told to stop;
 * - `storm`: during each restart only, `stormConcurrency` clients opening
 *   new connections back to back, so the accept queue is full when a
 *   listener closes: connections accepted by the kernel and then dropped
 *   (reset) show up here.
 *
 * Anything that is not a complete 200 with the service's body is a failure,
 * classified by what the client saw. Nobody retries.
 */
import * as Http from "node:http"

export interface LoadOptions {
  readonly host: string
  readonly port: number
  /** Requests per second on keep-alive connections. */
  readonly keepAliveRate: number
  /** Requests per second, each on a new connection. */
  readonly freshRate: number
  /** Long requests per second (each on a new connection). */
  readonly longRate: number
  readonly shortMs: number
  readonly longMs: number
  /** A request with no complete answer after this long is a failure. */
  readonly timeoutMs: number
  /** Clients in the storm, while it is on. */
  readonly stormConcurrency: number
}

export type StreamName = "keepAlive" | "fresh" | "long" | "storm"

export interface Failure {
  /** ms since the load started, when the request was sent. */
  readonly at: number
  readonly stream: StreamName
  readonly kind: string
  readonly detail: string
  readonly latencyMs: number
}

export interface StreamSummary {
  readonly sent: number
  readonly ok: number
  readonly failed: number
  readonly kinds: Record<string, number>
}

export interface LoadSummary {
  readonly durationMs: number
  readonly sent: number
  readonly ok: number
  readonly failed: number
  readonly kinds: Record<string, number>
  readonly streams: Record<StreamName, StreamSummary>
  /** Of the successful requests. */
  readonly latencyMs: { readonly p50: number; readonly p99: number; readonly max: number }
  /** Distinct server pids that answered. */
  readonly pids: number
  readonly failures: ReadonlyArray<Failure>
}

const MAX_FAILURE_DETAILS = 100

const kindOf = (error: NodeJS.ErrnoException): string => {
  if (error.message === "timeout") return "timeout"
  switch (error.code) {
    case "ECONNREFUSED":
      return "refused"
    case "ECONNRESET":
      return error.message === "socket hang up"
        ? "closed without response"
        : error.message === "aborted"
        ? "body cut short"
        : "reset"
    case "EPIPE":
      return "reset"
    default:
      return error.code ?? error.message
  }
}

const percentile = (sorted: ReadonlyArray<number>, p: number) =>
  sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]!

/** Starts the load; `stop` stops issuing, waits for what is outstanding, and summarises. */
export const startLoad = (options: LoadOptions) => {
  const startedAt = performance.now()
  const keepAliveAgent = new Http.Agent({ keepAlive: true, maxSockets: 16 })
  const stream = () => ({ sent: 0, ok: 0, failed: 0, kinds: {} as Record<string, number> })
  const streams: Record<StreamName, ReturnType<typeof stream>> = {
    keepAlive: stream(),
    fresh: stream(),
    long: stream(),
    storm: stream()
  }
  const kinds: Record<string, number> = {}
  const failures: Array<Failure> = []
  const latencies: Array<number> = []
  const pids = new Set<string>()
  let outstanding = 0
  /** Send times (performance.now()) of the requests not yet settled. */
  const pending = new Set<{ readonly sentAt: number }>()
  let drained: (() => void) | undefined

  const fail = (stream: StreamName, sentAt: number, kind: string, detail: string) => {
    streams[stream].failed++
    streams[stream].kinds[kind] = (streams[stream].kinds[kind] ?? 0) + 1
    kinds[kind] = (kinds[kind] ?? 0) + 1
    if (failures.length < MAX_FAILURE_DETAILS) {
      failures.push({
        at: Math.round(sentAt - startedAt),
        stream,
        kind,
        detail,
        latencyMs: Math.round(performance.now() - sentAt)
      })
    }
  }

  const send = (stream: StreamName): Promise<void> => {
    let done!: () => void
    const finished = new Promise<void>((resolve) => (done = resolve))
    const sentAt = performance.now()
    streams[stream].sent++
    outstanding++
    const entry = { sentAt }
    pending.add(entry)
    let settled = false
    const settle = (ok: boolean, kind?: string, detail?: string) => {
      if (settled) return
      settled = true
      outstanding--
      pending.delete(entry)
      if (ok) {
        streams[stream].ok++
        latencies.push(performance.now() - sentAt)
      } else {
        fail(stream, sentAt, kind!, detail!)
      }
      if (outstanding === 0) drained?.()
      done()
    }
    const ms = stream === "long" ? options.longMs : options.shortMs
    const request = Http.get({
      host: options.host,
      port: options.port,
      path: `/work?ms=${ms}`,
      agent: stream === "keepAlive" ? keepAliveAgent : false,
      timeout: options.timeoutMs
    }, (response) => {
      let body = ""
      response.setEncoding("utf8")
      response.on("data", (chunk: string) => (body += chunk))
      response.on("end", () => {
        if (response.statusCode === 200 && body.startsWith("ok ")) {
          pids.add(body.slice(3))
          settle(true)
        } else {
          settle(false, `status ${response.statusCode}`, body.slice(0, 200))
        }
      })
      response.on("error", (error: NodeJS.ErrnoException) => settle(false, kindOf(error), error.message))
      response.on("aborted", () => settle(false, "body cut short", "aborted"))
    })
    request.on("timeout", () => request.destroy(new Error("timeout")))
    request.on(
      "error",
      (error: NodeJS.ErrnoException) => settle(false, kindOf(error), `${error.code ?? ""} ${error.message}`)
    )
    return finished
  }

  let storming = false
  let stormWorkers: Promise<unknown> = Promise.resolve()
  /** Starts or stops the storm; stopping resolves once its clients have stopped. */
  const storm = async (on: boolean) => {
    if (on === storming) return
    storming = on
    if (on) {
      stormWorkers = Promise.all(Array.from({ length: options.stormConcurrency }, async () => {
        // A refused connection fails at once: back off a little, so that a
        // closed port is not hammered in a busy loop (which would also steal
        // the CPU the next instance needs to start).
        while (storming) {
          const failedBefore = streams.storm.failed
          await send("storm")
          if (streams.storm.failed > failedBefore) await new Promise((resolve) => setTimeout(resolve, 20))
        }
      }))
    } else {
      await stormWorkers
    }
  }

  // Issue on a 10 ms tick, carrying fractions over, so rates hold exactly.
  const tickMs = 10
  const credit = { keepAlive: 0, fresh: 0, long: 0 }
  const rates = {
    keepAlive: options.keepAliveRate,
    fresh: options.freshRate,
    long: options.longRate
  }
  let last = performance.now()
  const timer = setInterval(() => {
    const now = performance.now()
    const elapsed = now - last
    last = now
    for (const stream of ["keepAlive", "fresh", "long"] as const) {
      credit[stream] += (rates[stream] * elapsed) / 1000
      while (credit[stream] >= 1) {
        credit[stream]--
        send(stream)
      }
    }
  }, tickMs)

  const stop = async (): Promise<LoadSummary> => {
    clearInterval(timer)
    const durationMs = Math.round(performance.now() - startedAt)
    if (outstanding > 0) await new Promise<void>((resolve) => (drained = resolve))
    keepAliveAgent.destroy()
    const sorted = latencies.sort((a, b) => a - b)
    await storm(false)
    const total = (key: "sent" | "ok" | "failed") =>
      streams.keepAlive[key] + streams.fresh[key] + streams.long[key] + streams.storm[key]
    return {
      durationMs,
      sent: total("sent"),
      ok: total("ok"),
      failed: total("failed"),
      kinds,
      streams,
      latencyMs: {
        p50: Math.round(percentile(sorted, 0.5)),
        p99: Math.round(percentile(sorted, 0.99)),
        max: Math.round(sorted[sorted.length - 1] ?? 0)
      },
      pids: pids.size,
      failures
    }
  }

  /** Resolves once every request sent before now has settled (a queue built up during a restart has drained). */
  const settledUpToNow = async () => {
    const now = performance.now()
    const before = () => [...pending].some((entry) => entry.sentAt <= now)
    while (before()) await new Promise((resolve) => setTimeout(resolve, 20))
  }

  return { stop, storm, settledUpToNow, elapsedMs: () => performance.now() - startedAt }
}
