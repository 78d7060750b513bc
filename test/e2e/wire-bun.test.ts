/**
 * The wire suite (docs/design.md#wire-behaviours) against the same Effect
 * app on Bun: `BunHttp.layer` on `Bun.serve`, run by Bun's binary. Three
 * behaviours of the suite concern connections `Bun.serve` does not show the
 * guard; what Bun does instead is pinned below, so a change in Bun shows.
 */
import { existsSync } from "node:fs"
import { describe, expect, it } from "vitest"
import { bunBin } from "./harness.ts"
import { sleep } from "./wire.ts"
import { wireFixtures, wireSuite } from "./wire-suite.ts"

it("Bun is installed (test/e2e/bun-binary.ts, or BUN_BIN)", () => {
  expect(existsSync(bunBin), bunBin).toBe(true)
})

wireSuite("Effect HttpServer on Bun", "http-effect-bun.ts", {}, {
  runtime: bunBin,
  listenerCloseLagMs: 200,
  without: {
    "13": "Bun closes a connection that pipelines requests, while Ready too: pinned below",
    "14": "Bun accepts a connection only once it sends a byte (TCP_DEFER_ACCEPT): see 14 and 14b below",
    "14b": "the silent connection is never accepted, so never closed by the server: see 14b below",
    tls: "the Bun fixture serves plain HTTP"
  }
})

describe("wire behaviour on Bun: what Bun.serve does with connections the guard cannot see", () => {
  const { boot, open } = wireFixtures("http-effect-bun.ts", {}, bunBin)
  const get = (ms: number) => `GET /work?ms=${ms} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`

  it("13 (Bun). pipelined requests while Ready: Bun closes the connection before any response (Bun's own behaviour, no shutdown involved)", async () => {
    const { service, port } = await boot()
    const connection = await open(port)
    connection.write(get(300) + get(0) + get(0))
    const closed = await connection.closed
    // No response at all: the client sees a clean close and retries.
    expect(await connection.drain()).toBe("")
    expect(closed.reset).toBe(false)
    service.kill("SIGTERM")
    expect((await service.exited).code, service.output()).toBe(0)
  })

  it("14 (Bun). a request partly received at SIGTERM is answered with Connection: close", async () => {
    for (const completedAfterMs of [40, 250]) {
      const { service, port } = await boot()
      const partial = await open(port)
      // the request's first half on the wire before SIGTERM
      await partial.flush("GET /work?ms=0 HTTP/1.1\r\nHost: 127.0.0.1\r\n")
      service.kill("SIGTERM")
      await sleep(completedAfterMs) // the behaviour under test: the rest arrives this long after
      partial.write("\r\n")
      const label = `request completed ${completedAfterMs} ms after SIGTERM`
      const response = await partial.read()
      expect(response.status, label).toBe(200)
      expect(response.headers.connection, label).toBe("close")
      expect((await partial.closed).reset, label).toBe(false)
      expect((await service.exited).code, service.output()).toBe(0)
    }
  })

  it("14b (Bun). a connection that never sends a byte does not hold the shutdown: Bun never accepted it", async () => {
    const { service, port } = await boot({ SHUTDOWN_DRAIN_TIMEOUT: "1 second" })
    await open(port)
    const sent = service.kill("SIGTERM")
    const exit = await service.exited
    expect(exit.code, service.output()).toBe(0)
    // Well under the drain deadline: nothing waited for it.
    expect(exit.at - sent).toBeLessThan(1000)
  })
})
