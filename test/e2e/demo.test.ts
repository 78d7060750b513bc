/**
 * `npm run demo` (examples/demo.ts) as a user runs it: its own printed
 * counts must agree and it must finish in under 30 s. Runs in the serial
 * end-to-end group (vitest.e2e-serial.config.ts): the demo restarts a
 * service under load, and its time bound is not met beside another file.
 */
import { spawn } from "node:child_process"
import { join } from "node:path"
import { describe, expect, it, onTestFinished } from "vitest"

describe("npm run demo (examples/demo.ts)", () => {
  it("finishes in under 30 s with 0 failed requests, counts that agree, and exit code 0", async () => {
    const started = Date.now()
    const child = spawn(process.execPath, [join(import.meta.dirname, "..", "..", "examples", "demo.ts")], {
      env: { ...process.env, NO_COLOR: "1" },
      stdio: ["ignore", "pipe", "pipe"]
    })
    onTestFinished(() => void child.kill("SIGKILL"))
    let output = ""
    child.stdout.on("data", (chunk) => (output += String(chunk)))
    child.stderr.on("data", (chunk) => (output += String(chunk)))
    const code = await new Promise<number | null>((resolve) => child.on("exit", (c) => resolve(c)))
    expect(code, output).toBe(0)
    expect(Date.now() - started).toBeLessThan(30_000)
    const count = (label: string) => Number(new RegExp(`${label}\\s+(\\d+)`).exec(output)?.[1])
    const completed = count("requests completed \\(200\\)")
    expect(completed).toBeGreaterThan(0)
    expect(count("requests started")).toBe(completed)
    expect(count("requests failed")).toBe(0)
    expect(count("JSONL lines for /work")).toBe(completed)
    expect(count("database rows")).toBe(completed)
    expect(output).toMatch(/WebSockets closed with 1001\s+4\/4/)
    for (const phase of ["SIGTERM", "Draining", "Closing", "Releasing", "Stopped"]) expect(output).toContain(phase)
    expect(output).toContain("no request dropped")
  }, 60_000)
})
