import { spawn } from "node:child_process"
import { existsSync } from "node:fs"
import * as Path from "node:path"
import { describe, expect, it } from "vitest"

// Bun's binary from the npm package `@oven/bun-linux-x64` (pinned 1.4.4 in
// .ci/run, which sets BUN_BIN); locally /tmp/bun2 as in docs/guide/bun.md.
const bunBin = process.env.BUN_BIN ?? "/tmp/bun2/node_modules/@oven/bun-linux-x64/bin/bun"
const root = Path.resolve(import.meta.dirname, "../..")

describe.skipIf(!existsSync(bunBin))(`Bun (${bunBin}; absent: install it as .ci/run does)`, () => {
  it("refuses the HTTP guard at start-up, naming Bun and the missing part, before listening", async () => {
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
    expect(output).not.toMatch(/listening on/i)
    expect(code).toBe(1)
  }, 120_000)
})
