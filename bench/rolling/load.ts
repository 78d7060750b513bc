/**
 * An open-loop load generator: a steady request rate over keep-alive
 * connections, counting every outcome.
 *
 * Open loop means requests are issued on schedule (`rate` per second)
 * whatever the server does, so a stall shows up as timeouts and failures
 * rather than as a quietly lower rate (which is what a closed-loop tool like
 * autocannon would report). Connections come from one keep-alive agent, as a
 * real client or an upstream proxy keeps them.
 *
 * A request is a failure when it gets a non-2xx status, when its connection
 * fails (reset, refused, closed without an answer, a body cut short), or when
 * it has no complete answer within `timeoutMs`. Outcomes are counted per
 * time bucket (by completion time), and the first failures are kept with
 * their details.
 */
import * as Http from "node:http"

export interface LoadOptions {
  readonly port: number
  readonly path: string
  /** Requests per second. */
  readonly rate: number
  /** A request with no complete answer after this long is a failure. */
  readonly timeoutMs: number
  /** Most keep-alive connections open at once. */
  readonly maxSockets: number
  readonly bucketMs: number
  /** Reuse connections (default); `false`: one connection per request, as a client without keep-alive. */
  readonly keepAlive?: boolean | undefined
  /** `GET` (default) or another method, e.g. `POST`, sent with `body` (JSON). */
  readonly method?: string | undefined
  readonly body?: string | undefined
}

export interface Bucket {
  /** Requests issued in this bucket. */
  sent: number
  /** Requests that completed with a 2xx in this bucket. */
  ok: number
  failed: number
  readonly kinds: Record<string, number>
  readonly latencies: Array<number>
}

export interface Failure {
  /** ms since the load started, at the failure. */
  readonly at: number
  readonly kind: string
  readonly detail: string
  /** ms the request had been outstanding. */
  readonly latencyMs: number
  /** Whether the request was on a reused keep-alive connection. */
  readonly reusedSocket: boolean
}

export interface LoadSummary {
  readonly sent: number
  readonly completed: number
  readonly ok: number
  readonly failed: number
  readonly kinds: Record<string, number>
  readonly latencyMs: { readonly p50: number; readonly p99: number; readonly p999: number; readonly max: number }
  readonly firstFailures: ReadonlyArray<Failure>
  readonly buckets: ReadonlyArray<Bucket>
}

const MAX_FAILURE_DETAILS = 200

const percentile = (sorted: ReadonlyArray<number>, p: number) =>
  sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]!

/** Classifies a client-side error as a failure kind. */
const kindOf = (error: NodeJS.ErrnoException): string => {
  if (error.message === "timeout") return "timeout"
  switch (error.code) {
    case "ECONNRESET":
      // Node says "socket hang up" when the connection closed with no answer,
      // "aborted" when a body was cut short, and "read ECONNRESET" on a real RST.
      return error.message === "socket hang up"
        ? "closed without response"
        : error.message === "aborted"
        ? "body cut short"
        : "reset"
    case "ECONNREFUSED":
      return "refused"
    case "EPIPE":
      return "reset"
    default:
      return error.code ?? error.message
  }
}

export class Load {
  readonly options: LoadOptions
  readonly agent: Http.Agent
  readonly buckets: Array<Bucket> = []
  readonly latencies: Array<number> = []
  readonly failures: Array<Failure> = []
  readonly kinds: Record<string, number> = {}
  startedAt = 0
  sent = 0
  completed = 0
  ok = 0
  failed = 0
  private ticker: NodeJS.Timeout | undefined
  private outstanding = 0
  private onIdle: (() => void) | undefined

  constructor(options: LoadOptions) {
    this.options = options
    // LIFO keeps the busy connections busy and lets the agent close the rest
    // (idle > 30 s) before HAProxy's keep-alive timeout could race a request.
    this.agent = new Http.Agent({
      keepAlive: options.keepAlive ?? true,
      maxSockets: options.maxSockets,
      scheduling: "lifo",
      timeout: 30_000
    })
  }

  /** ms since the load started. */
  now(): number {
    return performance.now() - this.startedAt
  }

  private bucket(at: number): Bucket {
    const index = Math.max(0, Math.floor(at / this.options.bucketMs))
    for (let i = this.buckets.length; i <= index; i++) {
      this.buckets.push({ sent: 0, ok: 0, failed: 0, kinds: {}, latencies: [] })
    }
    return this.buckets[index]!
  }

  start(): void {
    this.startedAt = performance.now()
    // Every tick issues what the schedule says is due by now: the rate holds
    // even when a tick is late.
    this.ticker = setInterval(() => {
      const due = Math.floor((this.now() * this.options.rate) / 1000)
      while (this.sent < due) this.issue()
    }, 2)
  }

  /** Stops issuing, and resolves once every outstanding request has an outcome. */
  async stop(): Promise<void> {
    clearInterval(this.ticker)
    if (this.outstanding > 0) await new Promise<void>((resolve) => (this.onIdle = resolve))
    this.agent.destroy()
  }

  private issue(): void {
    const issuedAt = this.now()
    this.sent++
    this.outstanding++
    this.bucket(issuedAt).sent++
    let settled = false
    let reusedSocket = false
    const settle = (kind: string | undefined, detail = "") => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      const at = this.now()
      const latency = at - issuedAt
      const bucket = this.bucket(at)
      this.completed++
      if (kind === undefined) {
        this.ok++
        bucket.ok++
        this.latencies.push(latency)
        bucket.latencies.push(latency)
      } else {
        this.failed++
        bucket.failed++
        this.kinds[kind] = (this.kinds[kind] ?? 0) + 1
        bucket.kinds[kind] = (bucket.kinds[kind] ?? 0) + 1
        if (this.failures.length < MAX_FAILURE_DETAILS) {
          this.failures.push({ at: Math.round(at), kind, detail, latencyMs: Math.round(latency), reusedSocket })
        }
      }
      this.outstanding--
      if (this.outstanding === 0) this.onIdle?.()
    }
    const { body, method = "GET" } = this.options
    const request = Http.request({
      port: this.options.port,
      host: "127.0.0.1",
      path: this.options.path,
      agent: this.agent,
      method,
      headers: body === undefined
        ? {}
        : { "content-type": "application/json", "content-length": Buffer.byteLength(body) }
    })
    request.end(body)
    const timer = setTimeout(() => {
      request.destroy(new Error("timeout"))
    }, this.options.timeoutMs)
    request.on("socket", () => {
      reusedSocket = request.reusedSocket
    })
    request.on("error", (error: NodeJS.ErrnoException) => settle(kindOf(error), `${error.code ?? ""} ${error.message}`))
    request.on("response", (response) => {
      const status = response.statusCode ?? 0
      response.on(
        "error",
        (error: NodeJS.ErrnoException) => settle(kindOf(error), `${error.code ?? ""} ${error.message}`)
      )
      response.on("aborted", () => settle("body cut short", "aborted"))
      // Read the whole body: a response counts only once it is complete.
      response.resume()
      response.on("end", () => {
        if (status >= 200 && status < 300) settle(undefined)
        else settle(`status ${status}`, `${status} ${response.headers["connection"] ?? ""}`)
      })
    })
  }

  summary(): LoadSummary {
    const sorted = [...this.latencies].sort((a, b) => a - b)
    const round = (n: number) => Math.round(n * 10) / 10
    return {
      sent: this.sent,
      completed: this.completed,
      ok: this.ok,
      failed: this.failed,
      kinds: this.kinds,
      latencyMs: {
        p50: round(percentile(sorted, 0.5)),
        p99: round(percentile(sorted, 0.99)),
        p999: round(percentile(sorted, 0.999)),
        max: round(sorted.at(-1) ?? 0)
      },
      firstFailures: this.failures,
      buckets: this.buckets
    }
  }
}
