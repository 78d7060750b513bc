/**
 * Kubernetes pod termination, simulated on loopback: what the kubelet and
 * the endpoints controller do to a pod in a rolling update, against the
 * example service, under load. The data behind the recipe's numbers
 * (deploy/kubernetes.yaml: preStop sleep 5 s, SHUTDOWN_DELAY 0,
 * terminationGracePeriodSeconds 32).
 *
 * The balancer is HAProxy in TCP mode with no health checks and no retries,
 * which is what kube-proxy is to a Service: a connection goes to a pod
 * chosen when it opens and stays there; a pod leaves only when its endpoint
 * is removed (readiness plays no part once the pod is terminating); a
 * connection refused by a pod reaches the client as a failure. Endpoints
 * are removed and added through HAProxy's runtime API on its stats socket.
 *
 * A rolling update with maxSurge 1, maxUnavailable 0, over two replicas:
 *
 * 1. start a new pod; once its readiness probe (GET /health/ready) answers
 *    200, add its endpoint;
 * 2. terminate an old pod, as Kubernetes does, two things at once from t = 0:
 *    - the endpoints controller removes the endpoint; the removal reaches
 *      the balancer after a propagation delay drawn from 0–3 s;
 *    - the kubelet runs the preStop hook (a sleep), then sends SIGTERM, and
 *      SIGKILL at terminationGracePeriodSeconds (from t = 0);
 * 3. wait for the old pod to exit, then the next restart.
 *
 * Scenarios: SHUTDOWN_DELAY 0, 1, 3 and 5 s with no preStop hook, and the
 * recipe (preStop sleep 5 s, SHUTDOWN_DELAY 0). Every scenario draws the
 * same propagation delays (a seeded generator).
 *
 * Results: bench/results/k8s.json. Loopback only, bounded (restarts and a
 * time cap per scenario), stops by itself, kills every child on the way out.
 *
 * Environment (all optional): K8S_RESTARTS (5 per scenario), K8S_RATE
 * (requests/s, 150: a third on a new connection each), K8S_SEED (1),
 * K8S_MAX_PROPAGATION_MS (3000), K8S_SCENARIO_SECONDS (time cap per
 * scenario, 240), K8S_ONLY (a scenario name, e.g. `recipe`).
 */
import { spawn, spawnSync } from "node:child_process"
import { closeSync, mkdirSync, mkdtempSync, openSync, writeFileSync } from "node:fs"
import * as Net from "node:net"
import { cpus, tmpdir } from "node:os"
import { join } from "node:path"
import { Load } from "../rolling/load.ts"
import {
  databaseUrl,
  ensureDebianPackage,
  exampleMain,
  freePort,
  type Instance,
  killAll,
  median,
  num,
  readReport,
  seeded,
  sleep,
  startInstance,
  track,
  waitReady
} from "./instances.ts"

const settings = {
  restarts: num("K8S_RESTARTS", 5),
  rate: num("K8S_RATE", 150),
  seed: num("K8S_SEED", 1),
  maxPropagationMs: num("K8S_MAX_PROPAGATION_MS", 3_000),
  scenarioSeconds: num("K8S_SCENARIO_SECONDS", 240),
  workMs: 5,
  timeoutMs: 5_000,
  maxSockets: 64,
  warmupMs: 2_000,
  tailMs: 2_000,
  // The recipe's numbers (deploy/kubernetes.yaml).
  terminationGracePeriodMs: 32_000,
  shutdownTimeout: "25 seconds"
}

interface Scenario {
  readonly name: string
  readonly shutdownDelayMs: number
  readonly preStopMs: number
}

const scenarios: ReadonlyArray<Scenario> = [
  { name: "delay-0", shutdownDelayMs: 0, preStopMs: 0 },
  { name: "delay-1s", shutdownDelayMs: 1_000, preStopMs: 0 },
  { name: "delay-3s", shutdownDelayMs: 3_000, preStopMs: 0 },
  { name: "delay-5s", shutdownDelayMs: 5_000, preStopMs: 0 },
  { name: "recipe", shutdownDelayMs: 0, preStopMs: 5_000 }
]

const slots = ["s1", "s2", "s3"] as const
type Slot = (typeof slots)[number]

const haproxyConfig = (dir: string, frontend: number, stats: number, ports: Record<Slot, number>) =>
  `# Written by bench/k8s/run.ts: kube-proxy's part, played by HAProxy in TCP mode. Loopback only.
global
  log stdout format raw local0 info
  maxconn 4096
  nbthread 1
  # The runtime API: the endpoints controller's hand on the balancer.
  stats socket ${join(dir, "haproxy.sock")} mode 600 level admin

defaults
  mode tcp
  log global
  option tcplog
  timeout connect 1s
  timeout client 60s
  timeout server 60s
  # kube-proxy retries nothing: a refused connection reaches the client.
  retries 0

frontend web
  bind 127.0.0.1:${frontend}
  default_backend service

backend service
  balance roundrobin
  # No health checks: endpoints are added and removed through the runtime API only.
${slots.map((slot) => `  server ${slot} 127.0.0.1:${ports[slot]} disabled`).join("\n")}

listen stats
  mode http
  bind 127.0.0.1:${stats}
  stats enable
  stats uri /stats
`

/** One command on HAProxy's runtime API (the stats socket): its answer. */
const runtimeApi = (socket: string, command: string): Promise<string> =>
  new Promise((resolve, reject) => {
    const connection = Net.createConnection(socket)
    let answer = ""
    connection.setEncoding("utf8")
    connection.on("connect", () => connection.write(`${command}\n`))
    connection.on("data", (chunk: string) => (answer += chunk))
    connection.on("end", () => resolve(answer.trim()))
    connection.on("error", reject)
  })

interface Termination {
  readonly pod: string
  readonly slot: Slot
  /** The endpoint removal's propagation delay drawn for this termination, ms. */
  readonly propagationMs: number
  /** On the run's clock (ms since the load started). */
  readonly terminatingAt: number
  readonly sigtermAt: number
  readonly endpointRemovedAt: number
  readonly exitedAt: number
  readonly exitCode: number | null
  readonly exitSignal: string | null
  readonly sigkilled: boolean
  /** Client failures in the seconds from t = 0 of this termination to the old pod's exit + 1 s. */
  readonly failures: number
  readonly report: ReturnType<typeof readReport>
}

const runScenario = async (scenario: Scenario, dir: string, database: string | undefined) => {
  console.log(
    `\n${scenario.name}: SHUTDOWN_DELAY ${scenario.shutdownDelayMs} ms, preStop sleep ${scenario.preStopMs} ms, ` +
      `grace ${settings.terminationGracePeriodMs} ms`
  )
  const started = performance.now()
  const random = seeded(settings.seed)
  const frontend = await freePort()
  const stats = await freePort()
  const ports: Record<Slot, number> = { s1: await freePort(), s2: await freePort(), s3: await freePort() }
  // Two clients: one keeps its connections (most of the rate), one opens a
  // connection per request. Both through the Service, as pods' clients are.
  const load = new Load({
    port: frontend,
    path: `/work?ms=${settings.workMs}`,
    rate: Math.round(settings.rate * 2 / 3),
    timeoutMs: settings.timeoutMs,
    maxSockets: settings.maxSockets,
    bucketMs: 1_000
  })
  const fresh = new Load({
    port: frontend,
    path: `/work?ms=${settings.workMs}`,
    rate: Math.round(settings.rate / 3),
    timeoutMs: settings.timeoutMs,
    maxSockets: settings.maxSockets,
    bucketMs: 1_000,
    keepAlive: false
  })
  const loads = [load, fresh]
  const clock = () => (load.startedAt === 0 ? -(performance.now() - started) : load.now())
  const env = {
    SHUTDOWN_DELAY: `${scenario.shutdownDelayMs} millis`,
    SHUTDOWN_TIMEOUT: settings.shutdownTimeout,
    // What the recipe's manifest sets, so that the start-up check sees Kubernetes.
    KUBERNETES_SERVICE_HOST: "127.0.0.1",
    TERMINATION_GRACE_PERIOD_SECONDS: String(settings.terminationGracePeriodMs / 1000),
    PRE_STOP_SLEEP_SECONDS: String(scenario.preStopMs / 1000),
    ...(database === undefined ? {} : { DATABASE_URL: database })
  }
  let generation = 0
  const startPod = (slot: Slot) =>
    startInstance(exampleMain, `${scenario.name}-pod${generation++}-${slot}`, ports[slot], dir, env, clock)

  const configFile = join(dir, `${scenario.name}-haproxy.cfg`)
  writeFileSync(configFile, haproxyConfig(dir, frontend, stats, ports))
  const check = spawnSync("haproxy", ["-c", "-q", "-f", configFile], { encoding: "utf8" })
  if (check.status !== 0) throw new Error(`haproxy rejected ${configFile}:\n${check.stdout}${check.stderr}`)
  const haproxyLog = openSync(join(dir, `${scenario.name}-haproxy.log`), "a")
  const haproxy = track(spawn("haproxy", ["-db", "-f", configFile], { stdio: ["ignore", haproxyLog, haproxyLog] }))
  closeSync(haproxyLog)
  const haproxyExited = new Promise<void>((resolve) => haproxy.once("exit", () => resolve()))
  const socket = join(dir, "haproxy.sock")
  const api = async (command: string) => {
    const answer = await runtimeApi(socket, command)
    if (answer !== "") throw new Error(`HAProxy runtime API: ${command}: ${answer}`)
  }
  const deadline = performance.now() + 10_000
  while (await runtimeApi(socket, "show info").then(() => false, () => true)) {
    if (performance.now() > deadline) throw new Error("HAProxy's runtime API never answered")
    await sleep(50)
  }

  // Two replicas, each added once ready.
  const pods = new Map<Slot, Instance>()
  for (const slot of ["s1", "s2"] as const) pods.set(slot, startPod(slot))
  for (const [slot, pod] of pods) {
    await waitReady(pod, 120_000)
    await api(`set server service/${slot} state ready`)
  }

  for (const l of loads) l.start()
  await sleep(settings.warmupMs)
  const terminations: Array<Termination> = []
  const timeUp = () => performance.now() - started > settings.scenarioSeconds * 1000
  try {
    for (let restart = 0; restart < settings.restarts; restart++) {
      if (timeUp()) {
        console.log(`  stopping after ${restart} restarts: ${settings.scenarioSeconds} s cap for a scenario`)
        break
      }
      // maxSurge 1: the new pod first, its endpoint added once it is ready.
      const free = slots.find((slot) => !pods.has(slot))!
      const next = startPod(free)
      await waitReady(next, 120_000)
      await api(`set server service/${free} state ready`)
      // maxUnavailable 0: then the oldest pod goes.
      const [slot, old] = pods.entries().next().value!
      pods.delete(slot)
      pods.set(free, next)
      const propagationMs = Math.round(random() * settings.maxPropagationMs)
      const terminatingAt = clock()
      const removal = sleep(propagationMs).then(() => api(`set server service/${slot} state maint`)).then(() => clock())
      let sigtermAt = Number.NaN
      let sigkilled = false
      const kubelet = sleep(scenario.preStopMs).then(() => {
        sigtermAt = clock()
        old.child.kill("SIGTERM")
      })
      const killer = setTimeout(() => {
        sigkilled = true
        old.child.kill("SIGKILL")
      }, settings.terminationGracePeriodMs)
      const exit = await old.exited
      clearTimeout(killer)
      await kubelet
      const endpointRemovedAt = await removal
      await sleep(1_000)
      const failures = loads.flatMap((l) =>
        l.buckets.slice(Math.floor(terminatingAt / 1_000), Math.floor((exit.at + 1_000) / 1_000) + 1)
      ).reduce((sum, bucket) => sum + bucket.failed, 0)
      terminations.push({
        pod: old.name,
        slot,
        propagationMs,
        terminatingAt: Math.round(terminatingAt),
        sigtermAt: Math.round(sigtermAt),
        endpointRemovedAt: Math.round(endpointRemovedAt),
        exitedAt: Math.round(exit.at),
        exitCode: exit.code,
        exitSignal: exit.signal,
        sigkilled,
        failures,
        report: readReport(old.reportFile)
      })
      console.log(
        `  restart ${restart + 1}: endpoint removed after ${propagationMs} ms, SIGTERM at +${
          Math.round(sigtermAt - terminatingAt)
        } ms, exit ${exit.code ?? exit.signal} at +${Math.round(exit.at - terminatingAt)} ms; ${failures} failed`
      )
    }
    await sleep(settings.tailMs)
  } finally {
    await Promise.all(loads.map((l) => l.stop()))
  }
  haproxy.kill("SIGTERM")
  for (const pod of pods.values()) pod.child.kill("SIGKILL")
  await Promise.all([haproxyExited, ...[...pods.values()].map((pod) => pod.exited)])

  const summaries = loads.map((l) => l.summary())
  const kinds: Record<string, number> = {}
  for (const s of summaries) for (const [kind, n] of Object.entries(s.kinds)) kinds[kind] = (kinds[kind] ?? 0) + n
  const summary = {
    sent: summaries.reduce((n, s) => n + s.sent, 0),
    ok: summaries.reduce((n, s) => n + s.ok, 0),
    failed: summaries.reduce((n, s) => n + s.failed, 0),
    kinds
  }
  const result = {
    scenario: scenario.name,
    shutdownDelayMs: scenario.shutdownDelayMs,
    preStopMs: scenario.preStopMs,
    terminationGracePeriodMs: settings.terminationGracePeriodMs,
    restarts: terminations.length,
    requests: { sent: summary.sent, ok: summary.ok, failed: summary.failed, failureKinds: summary.kinds },
    latencyMs: { keepAlive: summaries[0]!.latencyMs, connectionPerRequest: summaries[1]!.latencyMs },
    byClient: {
      keepAlive: { sent: summaries[0]!.sent, failed: summaries[0]!.failed, kinds: summaries[0]!.kinds },
      connectionPerRequest: { sent: summaries[1]!.sent, failed: summaries[1]!.failed, kinds: summaries[1]!.kinds }
    },
    restartsWithFailures: terminations.filter((t) => t.failures > 0).length,
    terminatingToExitMs: { median: median(terminations.map((t) => t.exitedAt - t.terminatingAt)) },
    sigkilled: terminations.filter((t) => t.sigkilled).length,
    terminations,
    firstFailures: summaries.flatMap((s) => s.firstFailures).slice(0, 20),
    durationSeconds: Math.round((performance.now() - started) / 1000)
  }
  console.log(
    `  ${scenario.name}: ${summary.sent} requests, ${summary.failed} failed ${JSON.stringify(summary.kinds)}; ` +
      `${result.restartsWithFailures} of ${terminations.length} restarts lost requests`
  )
  return result
}

const main = async () => {
  const started = performance.now()
  const only = process.env.K8S_ONLY
  const selected = scenarios.filter((s) => only === undefined || only === "" || s.name === only)
  if (selected.length === 0) {
    throw new Error(`K8S_ONLY=${only}: no such scenario (${scenarios.map((s) => s.name).join(", ")})`)
  }
  console.log(
    `Kubernetes pod termination, simulated (${settings.rate} req/s of GET /work?ms=${settings.workMs}, a third ` +
      `on a new connection each, ` +
      `${settings.restarts} restarts per scenario, endpoint propagation 0–${settings.maxPropagationMs} ms, seed ${settings.seed})`
  )
  const haproxyVersion = ensureDebianPackage("haproxy", "haproxy", ["-v"])
  console.log(`  ${haproxyVersion}`)
  const database = await databaseUrl()
  console.log(`  database: ${database ?? "PGlite in each pod (no Postgres on 127.0.0.1:5432)"}`)
  const dir = mkdtempSync(join(tmpdir(), "k8s-"))
  console.log(`  logs, configs and shutdown reports in ${dir}`)
  const results = []
  for (const scenario of selected) results.push(await runScenario(scenario, dir, database))

  console.log("\nSummary")
  console.log("  scenario    SHUTDOWN_DELAY  preStop  restarts  requests  failed  restarts with failures")
  for (const r of results) {
    console.log(
      `  ${r.scenario.padEnd(10)}  ${`${r.shutdownDelayMs} ms`.padStart(14)}  ${`${r.preStopMs} ms`.padStart(7)}  ` +
        `${String(r.restarts).padStart(8)}  ${String(r.requests.sent).padStart(8)}  ${
          String(r.requests.failed).padStart(6)
        }  ` +
        `${r.restartsWithFailures}`
    )
  }
  for (const r of results) {
    // An overloaded machine fails requests for reasons that have nothing to
    // do with shutdown: say so rather than let the numbers speak alone.
    const timeouts = r.requests.failureKinds["timeout"] ?? 0
    if (timeouts > 0 || r.latencyMs.keepAlive.p99 > 1_000) {
      console.log(
        `  warning: ${r.scenario} shows ${timeouts} timeouts, p99 ${r.latencyMs.keepAlive.p99} ms: the machine may not ` +
          "sustain the rate; lower K8S_RATE"
      )
    }
  }
  const output = {
    date: new Date().toISOString(),
    node: process.version,
    cpus: cpus().length,
    haproxy: haproxyVersion,
    database: database === undefined ? "pglite" : "postgres",
    durationSeconds: Math.round((performance.now() - started) / 1000),
    settings,
    haproxyConfig: haproxyConfig("<dir>", 0, 0, { s1: 0, s2: 0, s3: 0 }),
    scenarios: results
  }
  const resultsDir = join(import.meta.dirname, "..", "results")
  mkdirSync(resultsDir, { recursive: true })
  const file = only === undefined || only === "" ? "k8s" : `k8s-${only}`
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
