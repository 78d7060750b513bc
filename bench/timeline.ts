/**
 * The shutdown sequence as a picture, drawn from a real report: starts the
 * example service with a 2 s lame duck and SHUTDOWN_REPORT_FILE set, holds
 * two requests in flight (3 s and 5 s of work), sends SIGTERM, waits for
 * the exit, and renders the report's phases, in-flight work and releases as
 * an SVG timeline.
 *
 *   node bench/timeline.ts    # writes bench/results/shutdown-report.json and docs/public/shutdown-timeline.svg
 */
import { spawn } from "node:child_process"
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import * as Http from "node:http"
import { tmpdir } from "node:os"
import { join } from "node:path"

const root = join(import.meta.dirname, "..")
const dir = mkdtempSync(join(tmpdir(), "timeline-"))
const reportFile = join(dir, "report.json")

const child = spawn(process.execPath, ["--conditions=@effect-graceful/source", "examples/service/main.ts"], {
  cwd: root,
  env: {
    ...process.env,
    PORT: "0",
    HOST: "127.0.0.1",
    LOG_FILE: join(dir, "requests.jsonl"),
    PGLITE_DIR: join(dir, "pglite"),
    SHUTDOWN_DELAY: "2 seconds",
    SHUTDOWN_REPORT_FILE: reportFile
  },
  stdio: ["ignore", "pipe", "pipe"]
})
const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)))
let output = ""
// Listening is a fact the service prints: `listening on http://127.0.0.1:<port>`.
const port = await new Promise<number>((resolve, reject) => {
  const onData = (chunk: Buffer) => {
    output += chunk.toString()
    const match = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(output)
    if (match) resolve(Number(match[1]))
  }
  child.stdout.on("data", onData)
  child.stderr.on("data", onData)
  void exited.then(() => reject(new Error(`the service exited before listening:\n${output}`)))
})

const get = (path: string) =>
  new Promise<number>((resolve, reject) => {
    Http.get({ host: "127.0.0.1", port, path }, (res) => {
      res.resume()
      res.on("end", () => resolve(res.statusCode ?? 0))
    }).on("error", reject)
  })

const work = [get("/work?ms=3000"), get("/work?ms=5000")]
// The requests are in flight once the service has them; the example logs nothing per start, so give the
// sockets a moment to be accepted before the signal (the report's in-flight count checks it).
await new Promise((resolve) => setTimeout(resolve, 200))
child.kill("SIGTERM")
const statuses = await Promise.all(work)
const code = await exited
const report0 = readFileSync(reportFile, "utf8")
rmSync(dir, { recursive: true, force: true })
const report = JSON.parse(report0) as Report
if (report.inFlight.atDrainStart < 2) {
  throw new Error(`expected 2 requests in flight at drain start: ${JSON.stringify(report.inFlight)}`)
}
mkdirSync(join(root, "bench", "results"), { recursive: true })
writeFileSync(join(root, "bench", "results", "shutdown-report.json"), JSON.stringify(report, null, 2) + "\n")
console.log(`exit ${code}, responses ${statuses.join(", ")}, ${report.outcome} in ${report.durationMs} ms`)

interface Step {
  readonly name: string
  readonly outcome: string
  readonly at: number
  readonly durationMs: number
}

interface Report {
  readonly outcome: string
  readonly durationMs: number
  readonly exitCode: number
  readonly trigger: { readonly _tag: string; readonly signal?: string }
  readonly inFlight: { readonly atDrainStart: number; readonly atDrainEnd: number }
  readonly phases: ReadonlyArray<{ readonly phase: string; readonly at: number; readonly durationMs: number }>
  readonly hooks: ReadonlyArray<Step>
  readonly releases: ReadonlyArray<Step>
  readonly [key: string]: unknown
}

// --- the picture ---
const width = 1000
const left = 280
const right = 30
const total = Math.max(report.durationMs, 1)
const x = (ms: number) => left + (ms / total) * (width - left - right)
const colours: Record<string, string> = {
  draining: "#f5a623",
  closing: "#4a90d9",
  cutting: "#d0021b",
  releasing: "#7ed321"
}
const rows: Array<string> = []
let y = 40
const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;")
const bar = (label: string, at: number, ms: number, colour: string, note: string) => {
  rows.push(`<text x="${left - 10}" y="${y + 14}" text-anchor="end">${esc(label)}</text>`)
  rows.push(
    `<rect x="${x(at).toFixed(1)}" y="${y}" width="${
      Math.max(2, x(at + ms) - x(at)).toFixed(1)
    }" height="20" rx="3" fill="${colour}"/>`
  )
  const end = x(at + ms)
  rows.push(
    end > width - right - 220
      ? `<text x="${(x(at) - 6).toFixed(1)}" y="${y + 14}" text-anchor="end" class="note">${esc(note)}</text>`
      : `<text x="${(end + 6).toFixed(1)}" y="${y + 14}" class="note">${esc(note)}</text>`
  )
  y += 30
}
for (const p of report.phases) {
  bar(p.phase, p.at, p.durationMs, colours[p.phase] ?? "#999", `+${p.at} ms, ${p.durationMs} ms`)
}
y += 10
for (const h of report.hooks) bar(`hook: ${h.name}`, h.at, h.durationMs, "#bd10e0", `${h.outcome} at +${h.at} ms`)
y += 10
for (const r of report.releases) {
  bar(`release: ${r.name}`, r.at, r.durationMs, "#9b9b9b", `${r.outcome} at +${r.at} ms, ${r.durationMs} ms`)
}
const ticks: Array<string> = []
const step = total > 8000 ? 2000 : total > 3000 ? 1000 : 500
for (let t = 0; t <= total; t += step) {
  ticks.push(
    `<line x1="${x(t)}" y1="30" x2="${x(t)}" y2="${y}" class="grid"/><text x="${x(t)}" y="${
      y + 16
    }" text-anchor="middle" class="note">${t / 1000} s</text>`
  )
}
const height = y + 50
const title =
  `SIGTERM with 2 requests in flight (3 s, 5 s), SHUTDOWN_DELAY 2 s: ${report.outcome}, exit ${report.exitCode}, ${report.durationMs} ms`
const svg =
  `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${width} ${height}" width="${width}" height="${height}" font-family="system-ui, sans-serif" font-size="13">
<style>.note{fill:#555;font-size:11px}.grid{stroke:#ddd}text{fill:#222}</style>
<rect width="100%" height="100%" fill="#fff"/>
<text x="${left}" y="20" font-weight="bold">${esc(title)}</text>
${ticks.join("\n")}
${rows.join("\n")}
<text x="${left}" y="${
    height - 10
  }" class="note">in flight: ${report.inFlight.atDrainStart} at drain start, ${report.inFlight.atDrainEnd} at drain end. Drawn by bench/timeline.ts from bench/results/shutdown-report.json.</text>
</svg>
`
mkdirSync(join(root, "docs", "public"), { recursive: true })
writeFileSync(join(root, "docs", "public", "shutdown-timeline.svg"), svg)
