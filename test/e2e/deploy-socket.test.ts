/**
 * deploy/effect-graceful-example.socket + .service, run for real: the
 * socket unit's `ListenStream=` and `FileDescriptorName=` become
 * `systemd-socket-activate` arguments (on a free port instead of 3000), the
 * service unit's `ExecStart=` and `Environment=` start the example service,
 * and the service must answer on the activated socket (it is told a
 * different PORT, so it can only answer there by taking the socket).
 */
import { spawn, spawnSync } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import * as Http from "node:http"
import * as Net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterEach, describe, expect, it } from "vitest"

const root = join(import.meta.dirname, "..", "..")
const hasActivate = spawnSync("systemd-socket-activate", ["--version"]).status === 0

/** `[Section]` → key → values, as systemd reads a unit file (no continuations). */
const unit = (file: string) => {
  const sections: Record<string, Record<string, Array<string>>> = {}
  let section = ""
  for (const raw of readFileSync(join(root, "deploy", file), "utf8").split("\n")) {
    const line = raw.trim()
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue
    const header = /^\[(\w+)\]$/.exec(line)
    if (header) {
      section = header[1]!
      sections[section] = {}
      continue
    }
    const equals = line.indexOf("=")
    const key = line.slice(0, equals)
    ;(sections[section]![key] ??= []).push(line.slice(equals + 1))
  }
  return sections
}

const socketUnit = unit("effect-graceful-example.socket")
const serviceUnit = unit("effect-graceful-example.service")

const freePort = () =>
  new Promise<number>((resolve) => {
    const server = Net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address() as Net.AddressInfo
      server.close(() => resolve(port))
    })
  })

const get = (port: number, path: string) =>
  new Promise<{ status: number | undefined; body: string }>((resolve, reject) => {
    Http.get({ host: "127.0.0.1", port, path, agent: false }, (response) => {
      let body = ""
      response.setEncoding("utf8")
      response.on("data", (chunk: string) => (body += chunk))
      response.on("end", () => resolve({ status: response.statusCode, body }))
    }).on("error", reject)
  })

const cleanups: Array<() => void> = []
afterEach(() => {
  for (const cleanup of cleanups.splice(0)) cleanup()
})

describe("deploy: the .socket + .service pair", () => {
  it("the service requires the socket, which is named for the library", () => {
    expect(serviceUnit.Unit!.Requires).toEqual(["effect-graceful-example.socket"])
    expect(serviceUnit.Unit!.After!.join(" ")).toContain("effect-graceful-example.socket")
    expect(socketUnit.Socket!.FileDescriptorName).toEqual(["http"])
    // The socket listens where the service would listen without it.
    const env = Object.fromEntries(
      serviceUnit.Service!.Environment!.flatMap((line) => line.match(/"[^"]*"|\S+/g)!)
        .map((word) => word.replace(/^"|"$/g, "").split("=") as [string, string])
    )
    expect(socketUnit.Socket!.ListenStream).toEqual([`${env.HOST}:${env.PORT}`])
  })

  it.skipIf(!hasActivate)(
    "systemd-socket-activate with the units' settings starts the example service on the socket",
    async () => {
      const port = await freePort()
      const dir = mkdtempSync(join(tmpdir(), "effect-graceful-socket-"))
      const [, script] = serviceUnit.Service!.ExecStart![0]!.split(/\s+/)
      const listen = socketUnit.Socket!.ListenStream![0]!.replace(/:\d+$/, `:${port}`)
      const child = spawn("systemd-socket-activate", [
        "-l",
        listen,
        `--fdname=${socketUnit.Socket!.FileDescriptorName![0]}`,
        // A PORT the service would bind if it ignored the socket.
        "-EPORT=0",
        "-EHOST=127.0.0.1",
        `-ELOG_FILE=${join(dir, "requests.jsonl")}`,
        "--",
        process.execPath,
        join(root, script!)
      ], { stdio: ["ignore", "pipe", "pipe"] })
      cleanups.push(() => {
        if (child.exitCode === null) child.kill("SIGKILL")
        rmSync(dir, { recursive: true, force: true })
      })
      let output = ""
      child.stdout.on("data", (chunk) => (output += String(chunk)))
      child.stderr.on("data", (chunk) => (output += String(chunk)))
      for (let i = 0; i < 100 && !output.includes(`Listening on ${listen}`); i++) {
        await new Promise((resolve) => setTimeout(resolve, 50)) // polling interval of a bounded wait on a fact
      }
      // The first connection starts the service, and waits in the queue meanwhile.
      const first = await get(port, "/work?ms=0")
      expect(first.status).toBe(200)
      expect(JSON.parse(first.body)).toMatchObject({ ok: true })
      expect(output).toContain(`listening on http://127.0.0.1:${port}`)
      expect((await get(port, "/health/ready")).status).toBe(200)
      const exited = new Promise<number | null>((resolve) => child.once("exit", resolve))
      child.kill("SIGTERM")
      expect(await exited).toBe(0)
    },
    60_000
  )
})
