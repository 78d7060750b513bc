/**
 * gRPC across SIGTERM (`effect-graceful/Grpc`), with real grpc-js clients
 * against real server processes:
 *
 * - the standard health service, read through the `grpc-health-check`
 *   package's own definition: SERVING, NOT_SERVING from Draining (a `Watch`
 *   is told at once), and the `Watch` stream ends with UNAVAILABLE at Closing;
 * - unary and streaming load on two servers behind a round-robin channel:
 *   SIGTERM one; 0 unary calls fail; every streaming call that was on it
 *   ends with status UNAVAILABLE (none with a reset or another code), and
 *   its client resumes on the other server without losing or repeating a
 *   tick;
 * - a call that outlives the drain deadline gets UNAVAILABLE and the report
 *   names it (method, age).
 */
import * as grpc from "@grpc/grpc-js"
import { service as standardHealthService } from "grpc-health-check"
import { afterEach, describe, expect, it } from "vitest"
import { DemoClient, type Tick } from "./fixtures/grpc/demo.ts"
import { type Fixture, start } from "./harness.ts"
import { sleep } from "./wire.ts"

const cleanups: Array<() => void> = []
afterEach(() => {
  for (const cleanup of cleanups.splice(0)) cleanup()
})

const startServer = async (env: Record<string, string> = {}) => {
  const fixture: Fixture = start({ KUBERNETES_SERVICE_HOST: "", ...env }, { fixture: "grpc-server.ts" })
  cleanups.push(() => fixture.cleanup())
  const port = await fixture.waitFor("port", 30_000)
  return { fixture, port }
}

const insecure = grpc.credentials.createInsecure()

interface HealthClient extends grpc.Client {
  check(
    request: { service: string },
    callback: (error: grpc.ServiceError | null, response?: { status: string }) => void
  ): grpc.ClientUnaryCall
  watch(request: { service: string }): grpc.ClientReadableStream<{ status: string }>
}
const HealthClient = grpc.makeGenericClientConstructor(standardHealthService, "Health") as unknown as new(
  target: string,
  credentials: grpc.ChannelCredentials
) => HealthClient

const check = (client: HealthClient, service = "") =>
  new Promise<string>((resolve, reject) =>
    client.check({ service }, (error, response) => (error ? reject(error) : resolve(response!.status)))
  )

describe("grpc.health.v1", () => {
  it(
    "SERVING when ready, NOT_SERVING from Draining (Watch told at once), Watch ends UNAVAILABLE at Closing",
    async () => {
      const { fixture, port } = await startServer({ SHUTDOWN_DELAY: "1 second" })
      const client = new HealthClient(`127.0.0.1:${port}`, insecure)
      cleanups.push(() => client.close())
      expect(await check(client)).toBe("SERVING")
      expect(await check(client, "demo.Demo")).toBe("SERVING")
      await expect(check(client, "no.Such")).rejects.toMatchObject({ code: grpc.status.NOT_FOUND })

      const watch = client.watch({ service: "" })
      const seen: Array<string> = []
      watch.on("data", (response: { status: string }) => seen.push(response.status))
      const ended = new Promise<grpc.StatusObject>((resolve) => watch.on("status", resolve))
      watch.on("error", () => {})
      while (seen.length === 0) await sleep(10) // polling interval of a wait on a fact
      expect(seen).toEqual(["SERVING"])

      fixture.kill("SIGTERM")
      while (seen.length < 2) await sleep(10) // polling interval of a wait on a fact
      expect(seen).toEqual(["SERVING", "NOT_SERVING"])
      // Lame duck: still answering, NOT_SERVING.
      expect(await check(client)).toBe("NOT_SERVING")

      const status = await ended
      expect(status.code).toBe(grpc.status.UNAVAILABLE)
      expect(status.details).toBe("server shutting down")
      const exited = await fixture.exited
      expect(exited.code, fixture.output()).toBe(0)
      expect(fixture.report().cut).toEqual([])
    },
    60_000
  )
})

/** A Count stream that resumes after the last tick it saw whenever its call ends with UNAVAILABLE. */
class ResumingStream {
  readonly ticks: Array<number> = []
  readonly servers: Array<string> = []
  readonly statuses: Array<{ readonly code: number; readonly details: string }> = []
  readonly errors: Array<string> = []
  private call: grpc.ClientReadableStream<Tick> | undefined
  private stopped = false
  private readonly client: DemoClient
  constructor(client: DemoClient) {
    this.client = client
    this.open()
  }
  private open() {
    const call = this.client.count({ after: this.ticks.at(-1) ?? 0 })
    this.call = call
    call.on("data", (tick: Tick) => {
      this.ticks.push(tick.n)
      if (this.servers.at(-1) !== tick.server) this.servers.push(tick.server)
    })
    call.on("error", (error: grpc.ServiceError) => this.errors.push(`${error.code} ${error.details}`))
    call.on("status", (status: grpc.StatusObject) => {
      if (this.stopped) return
      this.statuses.push({ code: status.code, details: status.details })
      if (status.code === grpc.status.UNAVAILABLE) this.open()
    })
  }
  stop() {
    this.stopped = true
    this.call?.cancel()
  }
}

describe("grpc-js clients across SIGTERM", () => {
  it(
    "two servers, round robin: 0 unary calls fail; streams on the stopped server end UNAVAILABLE and resume on the other",
    async () => {
      const env = { SHUTDOWN_DELAY: "300 millis" }
      const [a, b] = await Promise.all([
        startServer({ ...env, SERVER_NAME: "a" }),
        startServer({ ...env, SERVER_NAME: "b" })
      ])
      const client = new DemoClient(`ipv4:127.0.0.1:${a.port},127.0.0.1:${b.port}`, insecure, {
        "grpc.service_config": JSON.stringify({ loadBalancingConfig: [{ round_robin: {} }] })
      })
      cleanups.push(() => client.close())

      let stop = false
      cleanups.unshift(() => (stop = true))
      const unary = { ok: 0, failed: [] as Array<string>, byServer: {} as Record<string, number> }
      const loop = async () => {
        while (!stop) {
          await new Promise<void>((resolve) => {
            client.echo({ text: "hi", delayMs: 20 }, { deadline: Date.now() + 10_000 }, (error, reply) => {
              if (error) unary.failed.push(`${error.code} ${error.details}`)
              else {
                unary.ok++
                unary.byServer[reply!.server] = (unary.byServer[reply!.server] ?? 0) + 1
              }
              resolve()
            })
          })
        }
      }
      const loops = Array.from({ length: 16 }, loop)
      // Both subchannels connected: round robin spreads the streams.
      while ((unary.byServer.a ?? 0) < 20 || (unary.byServer.b ?? 0) < 20) await sleep(20) // polling interval of a wait on a fact
      const streams = Array.from({ length: 8 }, () => new ResumingStream(client))
      while (streams.some((stream) => stream.ticks.length < 5)) await sleep(20) // polling interval of a wait on a fact
      const onA = streams.filter((stream) => stream.servers.at(-1) === "a").length
      expect(onA).toBeGreaterThan(0)

      a.fixture.kill("SIGTERM")
      const exited = await a.fixture.exited
      const atExit = unary.ok
      while (unary.ok < atExit + 200) await sleep(20) // polling interval of a wait on a fact
      const ticksAtExit = streams.map((stream) => stream.ticks.length)
      while (streams.some((stream, i) => stream.ticks.length < ticksAtExit[i]! + 5)) await sleep(20) // polling interval of a wait on a fact
      stop = true
      await Promise.all(loops)
      for (const stream of streams) stream.stop()

      expect(exited.code, a.fixture.output()).toBe(0)
      expect(unary.failed).toEqual([])
      expect(unary.ok).toBeGreaterThan(300)
      const moved = streams.filter((stream) => stream.servers.join(",") === "a,b")
      expect(moved.length).toBe(onA)
      for (const stream of streams) {
        // Every tick once, in order, across the move.
        expect(stream.ticks).toEqual(Array.from({ length: stream.ticks.length }, (_, i) => i + 1))
        expect(stream.errors.every((error) => error.startsWith(`${grpc.status.UNAVAILABLE} `))).toBe(true)
      }
      // Each stream that was on A ended with a status, UNAVAILABLE, never a reset.
      for (const stream of moved) {
        expect(stream.statuses).toEqual([{ code: grpc.status.UNAVAILABLE, details: "server shutting down" }])
      }
      const report = a.fixture.report()
      expect(report.outcome).toBe("clean")
      expect(report.cut).toEqual([])
      expect(report.hooks.map((hook) => hook.name)).toEqual(
        expect.arrayContaining(["grpc server: health NOT_SERVING", "grpc server: GOAWAY"])
      )
      b.fixture.kill("SIGTERM")
      expect((await b.fixture.exited).code).toBe(0)
    },
    90_000
  )

  it("a call still running at the drain deadline gets UNAVAILABLE; the report names it with its age", async () => {
    const { fixture, port } = await startServer({
      SHUTDOWN_DRAIN_TIMEOUT: "1 second",
      SHUTDOWN_TIMEOUT: "5 seconds",
      FIXTURE_MARK_CALLS: "true"
    })
    const client = new DemoClient(`127.0.0.1:${port}`, insecure)
    cleanups.push(() => client.close())
    const hanging = new Promise<grpc.ServiceError | null>((resolve) =>
      client.echo({ text: "slow", delayMs: 60_000 }, {}, (error) => resolve(error))
    )
    // A short call in flight at SIGTERM finishes normally.
    const short = new Promise<grpc.ServiceError | null>((resolve) =>
      client.echo({ text: "short", delayMs: 300 }, {}, (error) => resolve(error))
    )
    await fixture.waitFor("echo:slow")
    await fixture.waitFor("echo:short")
    const sigtermAt = fixture.kill("SIGTERM")
    expect(await short).toBeNull()
    const error = await hanging
    expect(error?.code).toBe(grpc.status.UNAVAILABLE)
    expect(error?.details).toBe("server shutting down: cut at the drain deadline")
    expect(Date.now() - sigtermAt).toBeGreaterThanOrEqual(900)
    const exited = await fixture.exited
    expect(exited.code, fixture.output()).toBe(1)
    const report = fixture.report()
    expect(report.cut).toHaveLength(1)
    expect(report.cut[0]).toMatchObject({ kind: "grpc", label: "/demo.Demo/Echo" })
    // It started before the SIGTERM and ran through the whole 1 s drain.
    expect(report.cut[0]!.ageMs).toBeGreaterThanOrEqual(1_000)
  }, 60_000)
})
