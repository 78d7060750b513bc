import { spawn } from "node:child_process"
import * as Path from "node:path"
import { describe, expect, it } from "vitest"
import { bunBin, start } from "./harness.ts"

const root = Path.resolve(import.meta.dirname, "../..")

describe(`Bun (${bunBin}): an unsupported combination is refused at start-up`, () => {
  it(
    "the node:http guard (Http.layer, the example's main.ts) on Bun: exit 1 before listening, naming Bun, the missing part and BunHttp",
    async () => {
      const child = spawn(bunBin, ["examples/service/main.ts"], {
        cwd: root,
        env: { ...process.env, PORT: "0", HOST: "127.0.0.1" },
        stdio: ["ignore", "pipe", "pipe"]
      })
      let output = ""
      child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()))
      child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()))
      const code = await new Promise<number | null>((resolve) => child.on("exit", (c) => resolve(c)))
      expect(output).toMatch(/HTTP guard is not supported on Bun \d+\.\d+\.\d+'s node:http/)
      expect(output).toContain("net.Server._handle")
      expect(output).toContain("serve with effect-graceful/BunHttp")
      expect(output).not.toMatch(/listening on/i)
      expect(code).toBe(1)
    },
    120_000
  )

  it("BunHttp on Node: exit 1 before listening, naming the runtime and Http.layer", async () => {
    // The wire suite's Bun fixture, run by this Node.
    const service = start({}, { fixture: "http-effect-bun.ts", runtime: process.execPath })
    const exit = await service.exited
    expect(service.output()).toMatch(
      /effect-graceful\/BunHttp serves on Bun\.serve and runs on Bun only \(this is node v\d+/
    )
    expect(service.output()).toContain("on Node use Http.layer")
    expect(service.output()).not.toContain("MARK port")
    expect(exit.code, service.output()).toBe(1)
    service.cleanup()
  }, 120_000)
})
