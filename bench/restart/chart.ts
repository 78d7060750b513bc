/**
 * The restart benchmark's chart: per mechanism, the share of requests that
 * failed across its restarts (bars, with the count and the kinds), in the
 * order run. Plain SVG, no dependency.
 */

/** One mechanism's row: what run.ts measured, with its figures already summed (no import back into run.ts). */
export interface ChartRow {
  readonly mechanism: string
  readonly restarts: number
  readonly restartMs: { readonly median: number }
  readonly figures: {
    readonly requests: number
    readonly failed: number
    readonly kinds: Readonly<Record<string, number>>
    readonly stormConnections: number
    readonly stormDropped: number
    readonly stormRefused: number
  }
}

const escape = (text: string) => text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")

const labels: Record<string, string> = {
  "naive": "naive restart (stop, then start)",
  "socket-activation": "socket activation (systemd-socket-activate)",
  "reuseport": "SO_REUSEPORT, tcp_migrate_req=0",
  "reuseport-migrate": "SO_REUSEPORT, tcp_migrate_req=1",
  "pm2-fork": "PM2 fork mode, pm2 reload",
  "pm2-cluster": "PM2 cluster mode, pm2 reload"
}

export const renderChart = (results: ReadonlyArray<ChartRow>): string => {
  const width = 1300
  const rowHeight = 46
  const left = 330
  const top = 56
  const height = top + rowHeight * results.length + 40
  const maxShare = Math.max(0.001, ...results.map((r) => r.figures.failed / Math.max(1, r.figures.requests)))
  // Room on the right for the longest label (about 600 px).
  const scale = (width - left - 620) / maxShare
  const rows = results.map((r, i) => {
    const y = top + i * rowHeight
    const f = r.figures
    const share = f.failed / Math.max(1, f.requests)
    const bar = Math.max(share > 0 ? 2 : 0, share * scale)
    const kinds = [
      ...Object.entries(f.kinds).map(([kind, count]) => `${count} ${kind}`),
      `storm: ${f.stormDropped} of ${f.stormConnections} connections accepted then dropped` +
      (f.stormRefused > 0 ? `, ${f.stormRefused} refused` : "")
    ].join("; ")
    const color = f.failed === 0 ? "#2e7d32" : "#c62828"
    const text = f.failed === 0
      ? `0 failed of ${f.requests.toLocaleString("en-US")}`
      : `${f.failed.toLocaleString("en-US")} failed of ${f.requests.toLocaleString("en-US")} (${
        (share * 100).toFixed(2)
      }%)`
    return [
      `<text x="${left - 10}" y="${y + 18}" text-anchor="end" font-size="13">${
        escape(labels[r.mechanism] ?? r.mechanism)
      }</text>`,
      `<text x="${left - 10}" y="${
        y + 34
      }" text-anchor="end" font-size="11" fill="#666">${r.restarts} restarts, median ${r.restartMs.median} ms each</text>`,
      `<rect x="${left}" y="${y + 6}" width="${bar.toFixed(1)}" height="24" fill="${color}"/>`,
      `<text x="${left + bar + 8}" y="${y + 18}" font-size="12" fill="${color}">${escape(text)}</text>`,
      `<text x="${left + bar + 8}" y="${y + 33}" font-size="11" fill="#666">${escape(kinds)}</text>`
    ].join("\n")
  })
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="20" y="26" font-size="16" font-weight="bold">Restarts on one machine under steady load: requests not answered 200</text>
<text x="20" y="44" font-size="12" fill="#666">keep-alive and new connections, no load balancer, nobody retries; npm run bench:restart</text>
<line x1="${left}" y1="${top}" x2="${left}" y2="${height - 30}" stroke="#999"/>
${rows.join("\n")}
</svg>
`
}
