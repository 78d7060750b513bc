/**
 * Rolling restarts behind nginx (OSS, Debian's package), under load that
 * includes POSTs and WebSocket clients: effect-graceful (the example
 * service) and the naive baseline (bench/rolling/naive-service.ts) in the
 * same run, with the same load and the same restarts.
 *
 * nginx runs deploy/nginx.conf as written (only the ports are changed),
 * inside a minimal main configuration (one worker, logs and temp files in
 * the run's directory). nginx OSS has no active health checks; what keeps
 * requests from failing is explained in deploy/nginx.conf.
 *
 * Load, all through nginx, for the whole run:
 * - GET /work?ms=5 and POST /work?ms=5 (a JSON body) at steady rates over
 *   keep-alive connections (bench/rolling/load.ts); a failure is a non-2xx,
 *   a reset, a connection closed without an answer, or no answer in 5 s;
 * - WebSocket clients on /ws, each sending a numbered message every 250 ms
 *   and expecting its echo; when the connection closes (1001 from a draining
 *   instance, or anything else) the client reconnects after 100–300 ms.
 *   Counted: closes by code, reconnections, failed connection attempts,
 *   messages sent and never echoed, and clients not connected at the end.
 *
 * Rounds: restart instance a, then b: SIGTERM; SIGKILL if it has not exited
 * after the stop timeout (10 s, Docker's default); once it has exited, start
 * the replacement on the same port, wait until it answers /health/ready
 * directly, then wait out nginx's fail_timeout (2 s) plus 0.5 s, so that
 * nginx sends it requests again before the other instance goes.
 *
 * Results: bench/results/nginx.json. Loopback only, bounded (rounds and a
 * time cap per variant), stops by itself, kills every child on the way out.
 *
 * Environment (all optional): NGINX_ROUNDS (5), NGINX_GET_RATE (40/s),
 * NGINX_POST_RATE (20/s), NGINX_WS_CLIENTS (16), NGINX_SHUTDOWN_DELAY_MS
 * (1000), NGINX_VARIANT_SECONDS (180), NGINX_ONLY (`effect-graceful` or
 * `naive`).
 */
import { spawn, spawnSync } from "node:child_process"
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, writeFileSync } from "node:fs"
import { cpus, tmpdir } from "node:os"
import { join } from "node:path"
import WebSocket from "ws"
import {
  databaseUrl,
  ensureDebianPackage,
  exampleMain,
  freePort,
  type Instance,
  killAll,
  median,
  naiveMain,
  num,
  probe,
  readReport,
  root,
  sleep,
  startInstance,
  track,
  waitReady
} from "../k8s/instances.ts"
import { Load, type LoadSummary } from "../rolling/load.ts"

const settings = {
  rounds: num("NGINX_ROUNDS", 5),
  getRate: num("NGINX_GET_RATE", 40),
  postRate: num("NGINX_POST_RATE", 20),
  wsClients: num("NGINX_WS_CLIENTS", 16),
  wsIntervalMs: 250,
  shutdownDelayMs: num("NGINX_SHUTDOWN_DELAY_MS", 1_000),
  variantSeconds: num("NGINX_VARIANT_SECONDS", 180),
  stopTimeoutMs: 10_000,
  // nginx's fail_timeout in deploy/nginx.conf, plus a margin.
  settleMs: 2_500,
  workMs: 5,
  timeoutMs: 5_000,
  maxSockets: 32,
  warmupMs: 2_000,
  tailMs: 2_000
}

interface Variant {
  readonly name: "effect-graceful" | "naive"
  readonly file: string
  readonly env: Readonly<Record<string, string>>
}

const variants: ReadonlyArray<Variant> = [
  { name: "effect-graceful", file: exampleMain, env: { SHUTDOWN_DELAY: `${settings.shutdownDelayMs} millis` } },
  { name: "naive", file: naiveMain, env: {} }
]

const recipeFile = join(root, "deploy", "nginx.conf")

/** deploy/nginx.conf with the bench's ports, inside a minimal main configuration. */
const nginxConfig = (dir: string, frontend: number, a: number, b: number) => {
  const recipe = readFileSync(recipeFile, "utf8")
  for (const needle of ["server 127.0.0.1:3001 ", "server 127.0.0.1:3002 ", "listen 127.0.0.1:8080;"]) {
    if (!recipe.includes(needle)) {
      throw new Error(`deploy/nginx.conf no longer contains "${needle}": update bench/nginx`)
    }
  }
  const adapted = recipe
    .replace("server 127.0.0.1:3001 ", `server 127.0.0.1:${a} `)
    .replace("server 127.0.0.1:3002 ", `server 127.0.0.1:${b} `)
    .replace("listen 127.0.0.1:8080;", `listen 127.0.0.1:${frontend};`)
  writeFileSync(join(dir, "recipe.conf"), adapted)
  return `# Written by bench/nginx/run.ts around deploy/nginx.conf. Loopback only.
daemon off;
master_process on;
worker_processes 1;
user root;
pid ${join(dir, "nginx.pid")};
error_log ${join(dir, "error.log")} info;
events { worker_connections 4096; }
http {
  log_format bench '$msec $request_method $uri $status up=$upstream_addr upstatus=$upstream_status rt=$request_time';
  access_log ${join(dir, "access.log")} bench;
  client_body_temp_path ${join(dir, "client_body")};
  proxy_temp_path ${join(dir, "proxy")};
  fastcgi_temp_path ${join(dir, "fastcgi")};
  uwsgi_temp_path ${join(dir, "uwsgi")};
  scgi_temp_path ${join(dir, "scgi")};
  include ${join(dir, "recipe.conf")};
}
`
}

// -----------------------------------------------------------------------------
// WebSocket clients that reconnect
// -----------------------------------------------------------------------------

class WsClient {
  connections = 0
  failedAttempts = 0
  sent = 0
  echoed = 0
  lost = 0
  readonly closes: Record<string, number> = {}
  /** ms from a close to the next open, per reconnection. */
  readonly reconnectMs: Array<number> = []
  private socket: WebSocket | undefined
  private timer: NodeJS.Timeout | undefined
  private pending = new Set<number>()
  private seq = 0
  private closedAt: number | undefined
  private stopped = false
  private readonly url: string
  constructor(url: string) {
    this.url = url
  }
  get open(): boolean {
    return this.socket?.readyState === WebSocket.OPEN
  }
  start(): void {
    if (this.stopped) return
    const socket = new WebSocket(this.url)
    this.socket = socket
    let opened = false
    socket.on("open", () => {
      opened = true
      this.connections++
      if (this.closedAt !== undefined) this.reconnectMs.push(performance.now() - this.closedAt)
      this.closedAt = undefined
      this.timer = setInterval(() => {
        const n = ++this.seq
        this.pending.add(n)
        this.sent++
        socket.send(String(n))
      }, settings.wsIntervalMs)
    })
    socket.on("message", (data) => {
      if (this.pending.delete(Number(String(data)))) this.echoed++
    })
    socket.on("error", () => {})
    socket.on("close", (code) => {
      clearInterval(this.timer)
      // The client's own close at the end of the run is not counted.
      if (this.stopped) return
      if (!opened) {
        this.failedAttempts++
      } else {
        this.closes[String(code)] = (this.closes[String(code)] ?? 0) + 1
        this.closedAt = performance.now()
        // Sent and never echoed: lost with the connection.
        this.lost += this.pending.size
      }
      this.pending.clear()
      setTimeout(() => this.start(), 100 + Math.random() * 200)
    })
  }
  async stop(): Promise<void> {
    this.stopped = true
    clearInterval(this.timer)
    // Wait for the last echoes (one message interval), then close normally.
    await sleep(settings.wsIntervalMs)
    this.lost += this.pending.size
    this.pending.clear()
    this.socket?.close(1000)
  }
}

// -----------------------------------------------------------------------------
// One variant
// -----------------------------------------------------------------------------

const summarizeAccessLog = (file: string) => {
  const abnormal: Record<string, number> = {}
  let requests = 0
  let retried = 0
  const samples: Array<string> = []
  for (const line of existsSync(file) ? readFileSync(file, "utf8").split("\n") : []) {
    const match = /^\S+ (\S+) (\S+) (\d+) up=(.*) upstatus=(.*) rt=/.exec(line)
    if (match === null) continue
    requests++
    const [, method, uri, status, upstream, upstreamStatus] = match
    // "127.0.0.1:1, 127.0.0.1:2": nginx tried the first, then passed the request on.
    if (upstream!.includes(",")) retried++
    if (status === "200" || status === "101") continue
    const key = `${method} ${uri} ${status} upstream ${upstreamStatus}`
    abnormal[key] = (abnormal[key] ?? 0) + 1
    if (samples.length < 20) samples.push(line)
  }
  return { requests, passedToTheOtherInstance: retried, abnormal, samples }
}

const runVariant = async (variant: Variant, dir: string, database: string | undefined) => {
  console.log(`\n${variant.name}: ${variant.file.replace(root + "/", "")}`)
  const started = performance.now()
  const ports = { frontend: await freePort(), a: await freePort(), b: await freePort() }
  const vdir = join(dir, variant.name)
  mkdirSync(vdir, { recursive: true })
  const loads = {
    get: new Load({
      port: ports.frontend,
      path: `/work?ms=${settings.workMs}`,
      rate: settings.getRate,
      timeoutMs: settings.timeoutMs,
      maxSockets: settings.maxSockets,
      bucketMs: 1_000
    }),
    post: new Load({
      port: ports.frontend,
      path: `/work?ms=${settings.workMs}`,
      rate: settings.postRate,
      timeoutMs: settings.timeoutMs,
      maxSockets: settings.maxSockets,
      bucketMs: 1_000,
      method: "POST",
      body: JSON.stringify({ order: "one coffee" })
    })
  }
  const clock = () => (loads.get.startedAt === 0 ? 0 : loads.get.now())
  let generation = 0
  const env = { ...variant.env, ...(database === undefined ? {} : { DATABASE_URL: database }) }
  const start = (name: "a" | "b") =>
    startInstance(variant.file, `${name}-${generation++}`, ports[name], vdir, env, clock)

  const instances = new Map<"a" | "b", Instance>([["a", start("a")], ["b", start("b")]])
  await Promise.all([...instances.values()].map((instance) => waitReady(instance, 120_000)))

  const configFile = join(vdir, "nginx.conf")
  writeFileSync(configFile, nginxConfig(vdir, ports.frontend, ports.a, ports.b))
  for (const temp of ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]) {
    mkdirSync(join(vdir, temp), { recursive: true })
  }
  const test = spawnSync("nginx", ["-t", "-q", "-p", vdir, "-c", configFile], { encoding: "utf8" })
  if (test.status !== 0) throw new Error(`nginx rejected ${configFile}:\n${test.stdout}${test.stderr}`)
  const nginxLog = openSync(join(vdir, "nginx.out"), "a")
  const nginx = track(spawn("nginx", ["-p", vdir, "-c", configFile], { stdio: ["ignore", nginxLog, nginxLog] }))
  closeSync(nginxLog)
  const nginxExited = new Promise<void>((resolve) => nginx.once("exit", () => resolve()))
  const deadline = performance.now() + 10_000
  while (await probe(ports.frontend, "/health/live").then((r) => r.status !== 200, () => true)) {
    if (performance.now() > deadline) throw new Error(`nginx never answered; see ${vdir}/error.log`)
    await sleep(50)
  }

  loads.get.start()
  loads.post.start()
  const clients = Array.from({ length: settings.wsClients }, () => new WsClient(`ws://127.0.0.1:${ports.frontend}/ws`))
  for (const client of clients) client.start()
  await sleep(settings.warmupMs)

  const restarts: Array<{
    round: number
    server: string
    costMs: number
    exitCode: number | null
    exitSignal: string | null
    sigkilled: boolean
    report: ReturnType<typeof readReport>
  }> = []
  let round = 0
  const timeUp = () => performance.now() - started > settings.variantSeconds * 1000
  try {
    while (round < settings.rounds) {
      if (timeUp()) {
        console.log(`  stopping after ${round} rounds: ${settings.variantSeconds} s cap for a variant`)
        break
      }
      round++
      for (const name of ["a", "b"] as const) {
        const old = instances.get(name)!
        const sigtermAt = clock()
        old.child.kill("SIGTERM")
        let sigkilled = false
        const killer = setTimeout(() => {
          sigkilled = true
          old.child.kill("SIGKILL")
        }, settings.stopTimeoutMs)
        const exit = await old.exited
        clearTimeout(killer)
        const next = start(name)
        instances.set(name, next)
        await waitReady(next, 120_000)
        restarts.push({
          round,
          server: name,
          costMs: Math.round(exit.at - sigtermAt),
          exitCode: exit.code,
          exitSignal: exit.signal,
          sigkilled,
          report: readReport(old.reportFile)
        })
        await sleep(settings.settleMs)
      }
      const failed = loads.get.failed + loads.post.failed
      const lost = clients.reduce((n, c) => n + c.lost, 0)
      console.log(
        `  round ${round}: SIGTERM→exit ${
          restarts.slice(-2).map((r) => `${r.server} ${r.costMs} ms${r.sigkilled ? " (SIGKILL)" : ""}`).join(", ")
        }; ` +
          `${loads.get.sent + loads.post.sent} requests, ${failed} failed; WebSocket messages lost ${lost}`
      )
    }
    await sleep(settings.tailMs)
  } finally {
    await Promise.all([loads.get.stop(), loads.post.stop()])
  }
  // Every client reconnected after its last close: connected when the load stops.
  const connectedAtEnd = clients.filter((client) => client.open).length
  await Promise.all(clients.map((client) => client.stop()))
  nginx.kill("SIGQUIT")
  await sleep(200)
  for (const instance of instances.values()) instance.child.kill("SIGKILL")
  nginx.kill("SIGKILL")
  await Promise.all([nginxExited, ...[...instances.values()].map((instance) => instance.exited)])

  const summarize = (summary: LoadSummary) => ({
    sent: summary.sent,
    ok: summary.ok,
    failed: summary.failed,
    failureKinds: summary.kinds,
    latencyMs: summary.latencyMs,
    firstFailures: summary.firstFailures.slice(0, 10)
  })
  const closes: Record<string, number> = {}
  for (const client of clients) {
    for (const [code, n] of Object.entries(client.closes)) closes[code] = (closes[code] ?? 0) + n
  }
  const reconnects = clients.flatMap((client) => client.reconnectMs)
  const webSockets = {
    clients: clients.length,
    connections: clients.reduce((n, c) => n + c.connections, 0),
    closesByCode: closes,
    reconnections: reconnects.length,
    reconnectMs: { median: Math.round(median(reconnects)), max: Math.round(Math.max(0, ...reconnects)) },
    failedAttempts: clients.reduce((n, c) => n + c.failedAttempts, 0),
    messagesSent: clients.reduce((n, c) => n + c.sent, 0),
    messagesLost: clients.reduce((n, c) => n + c.lost, 0),
    connectedAtEnd
  }
  const get = summarize(loads.get.summary())
  const post = summarize(loads.post.summary())
  const result = {
    variant: variant.name,
    service: variant.file.replace(root + "/", ""),
    env: variant.env,
    rounds: round,
    restarts: restarts.length,
    requests: { sent: get.sent + post.sent, failed: get.failed + post.failed },
    get,
    post,
    webSockets,
    restartCostMs: { median: median(restarts.map((r) => r.costMs)), max: Math.max(...restarts.map((r) => r.costMs)) },
    sigkilled: restarts.filter((r) => r.sigkilled).length,
    restartEvents: restarts,
    nginxAccessLog: summarizeAccessLog(join(vdir, "access.log")),
    durationSeconds: Math.round((performance.now() - started) / 1000)
  }
  console.log(
    `  ${variant.name}: GET ${get.sent} sent, ${get.failed} failed ${JSON.stringify(get.failureKinds)}; ` +
      `POST ${post.sent} sent, ${post.failed} failed ${JSON.stringify(post.failureKinds)}`
  )
  console.log(
    `  WebSockets: ${webSockets.connections} connections, closes ${
      JSON.stringify(closes)
    }, ${webSockets.reconnections} ` +
      `reconnections (median ${webSockets.reconnectMs.median} ms), ${webSockets.failedAttempts} failed attempts, ` +
      `${webSockets.messagesLost} of ${webSockets.messagesSent} messages lost, ${connectedAtEnd}/${clients.length} connected at the end`
  )
  return result
}

const main = async () => {
  const started = performance.now()
  const only = process.env.NGINX_ONLY
  const selected = variants.filter((v) => only === undefined || only === "" || v.name === only)
  console.log(
    `Rolling restarts behind nginx (GET ${settings.getRate}/s + POST ${settings.postRate}/s of /work?ms=${settings.workMs}, ` +
      `${settings.wsClients} WebSocket clients, ${settings.rounds} rounds of 2 restarts per variant)`
  )
  const nginxVersion = ensureDebianPackage("nginx", "nginx", ["-v"])
  console.log(`  ${nginxVersion}`)
  const database = await databaseUrl()
  console.log(
    `  database for effect-graceful: ${database ?? "PGlite in each instance (no Postgres on 127.0.0.1:5432)"}`
  )
  const dir = mkdtempSync(join(tmpdir(), "nginx-bench-"))
  console.log(`  configs, logs and shutdown reports in ${dir}`)
  const results = []
  for (const variant of selected) results.push(await runVariant(variant, dir, database))

  console.log("\nSummary")
  console.log(
    "  variant          restarts  requests  failed (GET/POST)  WS closes  reconnected  lost msgs  connected at end"
  )
  for (const r of results) {
    const closes = Object.values(r.webSockets.closesByCode).reduce((a, b) => a + b, 0)
    console.log(
      `  ${r.variant.padEnd(16)} ${String(r.restarts).padStart(8)}  ${String(r.requests.sent).padStart(8)}  ` +
        `${`${r.requests.failed} (${r.get.failed}/${r.post.failed})`.padStart(17)}  ${String(closes).padStart(9)}  ` +
        `${String(r.webSockets.reconnections).padStart(11)}  ${String(r.webSockets.messagesLost).padStart(9)}  ` +
        `${r.webSockets.connectedAtEnd}/${r.webSockets.clients}`
    )
  }
  for (const r of results) {
    // An overloaded machine fails requests for reasons that have nothing to
    // do with shutdown (an open-loop load outruns a starved instance, and the
    // backlog never drains): say so rather than let the numbers speak alone.
    const timeouts = (r.get.failureKinds["timeout"] ?? 0) + (r.post.failureKinds["timeout"] ?? 0)
    if (timeouts > 0 || r.get.latencyMs.p99 > 1_000) {
      console.log(
        `  warning: ${r.variant} shows ${timeouts} timeouts, GET p99 ${r.get.latencyMs.p99} ms: the machine may not ` +
          "sustain the rate; lower NGINX_GET_RATE and NGINX_POST_RATE"
      )
    }
  }
  const output = {
    date: new Date().toISOString(),
    node: process.version,
    cpus: cpus().length,
    nginx: nginxVersion,
    database: database === undefined ? "pglite" : "postgres",
    durationSeconds: Math.round((performance.now() - started) / 1000),
    settings,
    recipe: "deploy/nginx.conf",
    variants: results
  }
  const resultsDir = join(import.meta.dirname, "..", "results")
  mkdirSync(resultsDir, { recursive: true })
  const file = only === undefined || only === "" ? "nginx" : `nginx-${only}`
  writeFileSync(join(resultsDir, `${file}.json`), JSON.stringify(output, null, 2) + "\n")
  console.log(`written to bench/results/${file}.json (${output.durationSeconds} s)`)
}

await main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error)
    killAll()
    process.exit(1)
  }
)
