/**
 * Draws the rolling-restart chart from bench/results/rolling.json as a
 * hand-written SVG: one panel per variant, side by side on the same scales
 * (ours first, then the baseline), each with
 *
 * - successful requests per second (line, left axis),
 * - failed requests per second (red bars, right axis),
 * - each restart: a line at the SIGTERM and a band until HAProxy had the
 *   replacement UP again (the instance is out of service during the band).
 *
 * Usage: node bench/rolling/chart.ts [results.json] [chart.svg]
 * (defaults: bench/results/rolling.json → bench/results/rolling.svg).
 * run.ts calls {@link renderChart} itself at the end of a run.
 */
import { readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"

/** The part of the results the chart reads. */
export interface ChartInput {
  readonly date: string
  readonly haproxy: string
  readonly durationSeconds: number
  readonly settings: {
    readonly rate: number
    readonly workMs: number
    readonly shutdownDelayMs: number
    readonly bucketMs: number
    readonly haproxy: {
      readonly interMs: number
      readonly fall: number
      readonly rise: number
      readonly retries?: number
    }
  }
  readonly variants: ReadonlyArray<{
    readonly variant: string
    readonly rounds: number
    readonly restarts: number
    readonly requests: {
      readonly sent: number
      readonly failed: number
      readonly failureKinds: Readonly<Record<string, number>>
    }
    readonly restartCostMs: { readonly median: number; readonly max: number }
    readonly loadEndedAt: number
    readonly perSecond: ReadonlyArray<{ readonly t: number; readonly ok: number; readonly failed: number }>
    readonly restartEvents: ReadonlyArray<
      { readonly server: string; readonly sigtermAt: number; readonly upAt: number }
    >
  }>
}

const escape = (text: string) => text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")

/** A round step for an axis: 1, 2 or 5 times a power of ten. */
const niceStep = (max: number, ticks: number) => {
  const raw = max / ticks
  const power = 10 ** Math.floor(Math.log10(raw))
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw)
  return step ?? 10 * power
}

const thousands = (n: number) => n.toLocaleString("en-US")

const COLORS = {
  ok: "#1f6feb",
  failed: "#d1242f",
  band: { a: "#f0b429", b: "#8250df" } as Record<string, string>,
  grid: "#e5e7eb",
  axis: "#57606a",
  text: "#24292f"
}

export const renderChart = (input: ChartInput): string => {
  const panelWidth = 600
  const panelHeight = 300
  const margin = { top: 136, left: 64, right: 56, bottom: 110, gap: 130 }
  const width = margin.left + input.variants.length * panelWidth + (input.variants.length - 1) * margin.gap +
    margin.right
  const height = margin.top + panelHeight + margin.bottom
  const bucketSeconds = input.settings.bucketMs / 1000

  // Only whole buckets while the load ran: the last, partial one would read as a dip.
  const series = input.variants.map((v) =>
    v.perSecond.filter((point) => (point.t + bucketSeconds) * 1000 <= v.loadEndedAt + 1)
  )
  const maxSeconds = Math.max(1, ...series.map((points) => (points.at(-1)?.t ?? 0) + bucketSeconds))
  const maxOk = Math.max(1, ...series.flat().map((p) => p.ok)) * 1.15
  const okStep = niceStep(maxOk, 5)
  const okTop = Math.ceil(maxOk / okStep) * okStep
  const maxFailed = Math.max(0, ...series.flat().map((p) => p.failed))
  // Failures are whole requests: no step below 1.
  const failStep = maxFailed === 0 ? 1 : Math.max(1, niceStep(maxFailed * 1.15, 5))
  const failTop = maxFailed === 0 ? 5 : Math.ceil((maxFailed * 1.15) / failStep) * failStep
  const timeStep = niceStep(maxSeconds, 8)

  const out: Array<string> = []
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ` +
      `font-family="-apple-system, Segoe UI, Helvetica, Arial, sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${margin.left}" y="28" font-size="17" font-weight="600" fill="${COLORS.text}">` +
      `Rolling restarts behind HAProxy under load: effect-graceful vs naive</text>`,
    `<text x="${margin.left}" y="50" fill="${COLORS.axis}">${
      escape(
        `${input.settings.rate} req/s steady over keep-alive connections, GET /work?ms=${input.settings.workMs}, two instances behind ` +
          `${input.haproxy.replace(/ - .*/, "").replace(/ \d{4}\/\d\d\/\d\d$/, "")} on loopback · ${
            input.date.slice(0, 10)
          }`
      )
    }</text>`,
    `<text x="${margin.left}" y="68" fill="${COLORS.axis}">${
      escape(
        `health checks on /health/ready every ${input.settings.haproxy.interMs} ms, fall ${input.settings.haproxy.fall}, ` +
          `rise ${input.settings.haproxy.rise} · SHUTDOWN_DELAY ${input.settings.shutdownDelayMs} ms ≥ fall × inter = ` +
          `${input.settings.haproxy.fall * input.settings.haproxy.interMs} ms · retries ${
            input.settings.haproxy.retries ?? "?"
          } with redispatch`
      )
    }</text>`,
    `<text x="${margin.left}" y="86" fill="${COLORS.axis}">${
      escape(
        "each restart: SIGTERM one instance, start its replacement on the same port once it has exited, " +
          "wait until HAProxy has it UP, then the other instance"
      )
    }</text>`
  )

  input.variants.forEach((variant, index) => {
    const x0 = margin.left + index * (panelWidth + margin.gap)
    const y0 = margin.top
    const x = (seconds: number) => x0 + (seconds / maxSeconds) * panelWidth
    const yOk = (value: number) => y0 + panelHeight - (value / okTop) * panelHeight
    const yFail = (value: number) => y0 + panelHeight - (value / failTop) * panelHeight
    const failed = variant.requests.failed
    const kinds = Object.entries(variant.requests.failureKinds).map(([kind, count]) => `${thousands(count)} ${kind}`)
      .join(", ")

    out.push(
      `<text x="${x0}" y="${y0 - 30}" font-size="14" font-weight="600" fill="${COLORS.text}">${
        escape(variant.variant)
      }: ` +
        `<tspan fill="${failed === 0 ? "#1a7f37" : COLORS.failed}">${thousands(failed)} failed</tspan> of ${
          thousands(variant.requests.sent)
        } requests</text>`,
      `<text x="${x0}" y="${y0 - 12}" fill="${COLORS.axis}">${
        escape(
          `${variant.restarts} restarts in ${variant.rounds} rounds · SIGTERM → exit median ${variant.restartCostMs.median} ms, max ${variant.restartCostMs.max} ms` +
            (kinds === "" ? "" : ` · ${kinds}`)
        )
      }</text>`
    )

    // Grid and axes.
    for (let value = 0; value <= okTop; value += okStep) {
      out.push(
        `<line x1="${x0}" x2="${x0 + panelWidth}" y1="${yOk(value)}" y2="${yOk(value)}" stroke="${COLORS.grid}"/>`,
        `<text x="${x0 - 6}" y="${yOk(value) + 4}" text-anchor="end" fill="${COLORS.ok}">${thousands(value)}</text>`
      )
    }
    for (let value = 0; value <= failTop; value += failStep) {
      out.push(
        `<text x="${x0 + panelWidth + 6}" y="${yFail(value) + 4}" fill="${COLORS.failed}">${thousands(value)}</text>`
      )
    }
    for (let t = 0; t <= maxSeconds; t += timeStep) {
      out.push(
        `<line x1="${x(t)}" x2="${x(t)}" y1="${y0 + panelHeight}" y2="${
          y0 + panelHeight + 4
        }" stroke="${COLORS.axis}"/>`,
        `<text x="${x(t)}" y="${y0 + panelHeight + 18}" text-anchor="middle" fill="${COLORS.axis}">${t}</text>`
      )
    }
    out.push(
      `<text x="${x0 + panelWidth / 2}" y="${
        y0 + panelHeight + 38
      }" text-anchor="middle" fill="${COLORS.axis}">seconds</text>`,
      `<text transform="translate(${x0 - 48} ${
        y0 + panelHeight / 2
      }) rotate(-90)" text-anchor="middle" fill="${COLORS.ok}">ok requests / s</text>`,
      `<text transform="translate(${x0 + panelWidth + 44} ${
        y0 + panelHeight / 2
      }) rotate(90)" text-anchor="middle" fill="${COLORS.failed}">failed requests / s</text>`
    )

    // Restarts: out-of-service bands, then the SIGTERM lines.
    for (const restart of variant.restartEvents) {
      const from = x(restart.sigtermAt / 1000)
      const to = x(Math.min(restart.upAt / 1000, maxSeconds))
      out.push(
        `<rect x="${from}" y="${y0}" width="${Math.max(1, to - from)}" height="${panelHeight}" ` +
          `fill="${COLORS.band[restart.server] ?? "#999999"}" fill-opacity="0.16"/>`
      )
    }
    for (const restart of variant.restartEvents) {
      const at = x(restart.sigtermAt / 1000)
      out.push(
        `<line x1="${at}" x2="${at}" y1="${y0}" y2="${y0 + panelHeight}" stroke="${
          COLORS.band[restart.server] ?? "#999999"
        }" stroke-width="1.2"/>`
      )
    }

    // Failures per second as bars on the right axis.
    const points = series[index]!
    const barWidth = Math.max(2, (bucketSeconds / maxSeconds) * panelWidth - 1)
    for (const point of points) {
      if (point.failed === 0) continue
      const top = yFail(Math.min(point.failed, failTop))
      out.push(
        `<rect x="${x(point.t)}" y="${top}" width="${barWidth}" height="${
          y0 + panelHeight - top
        }" fill="${COLORS.failed}" fill-opacity="0.85">` +
          `<title>${point.t}-${point.t + bucketSeconds} s: ${point.failed} failed</title></rect>`
      )
    }
    // Successful requests per second, plotted at the middle of each bucket.
    const path = points.map((point, i) =>
      `${i === 0 ? "M" : "L"}${x(point.t + bucketSeconds / 2).toFixed(1)},${yOk(point.ok).toFixed(1)}`
    ).join(" ")
    out.push(`<path d="${path}" fill="none" stroke="${COLORS.ok}" stroke-width="1.8"/>`)
    out.push(
      `<rect x="${x0}" y="${y0}" width="${panelWidth}" height="${panelHeight}" fill="none" stroke="${COLORS.axis}"/>`
    )
  })

  // Legend.
  const ly = margin.top + panelHeight + 66
  let lx = margin.left
  const item = (swatch: string, label: string) => {
    out.push(
      swatch.replace(/X/g, String(lx)).replace(/Y/g, String(ly)),
      `<text x="${lx + 22}" y="${ly + 4}" fill="${COLORS.text}">${escape(label)}</text>`
    )
    lx += 22 + label.length * 6.4 + 24
  }
  item(`<line x1="X" x2="${lx + 16}" y1="Y" y2="Y" stroke="${COLORS.ok}" stroke-width="2"/>`, "ok requests per second")
  item(
    `<rect x="X" y="${ly - 6}" width="16" height="12" fill="${COLORS.failed}"/>`,
    "failed requests per second (non-2xx, reset, no answer, timeout)"
  )
  item(
    `<rect x="X" y="${ly - 6}" width="16" height="12" fill="${COLORS.band.a}" fill-opacity="0.35"/>`,
    "instance a: SIGTERM → HAProxy has its replacement UP"
  )
  const ly2 = ly + 22
  lx = margin.left
  out.push(
    `<rect x="${lx}" y="${ly2 - 6}" width="16" height="12" fill="${COLORS.band.b}" fill-opacity="0.35"/>`,
    `<text x="${lx + 22}" y="${
      ly2 + 4
    }" fill="${COLORS.text}">instance b: the same; a vertical line marks each SIGTERM</text>`
  )
  out.push("</svg>")
  return out.join("\n") + "\n"
}

if (process.argv[1] === import.meta.filename) {
  const results = join(import.meta.dirname, "..", "results")
  const input = process.argv[2] ?? join(results, "rolling.json")
  const output = process.argv[3] ?? input.replace(/\.json$/, ".svg")
  writeFileSync(output, renderChart(JSON.parse(readFileSync(input, "utf8")) as ChartInput))
  console.log(`written to ${output}`)
}
