/**
 * Starting and stopping the example's processes, shared by start.ts, the
 * bench (bench/cluster) and the integration test: a database of its own,
 * runner processes on loopback, and who holds which shard (read from
 * Postgres' advisory locks, the cluster's shard locks).
 */
import { type ChildProcess, spawn } from "node:child_process"
import { randomBytes } from "node:crypto"
import { join } from "node:path"
import pg from "pg"

export const ADMIN_URL = process.env.CLUSTER_ADMIN_URL ?? "postgres://postgres@127.0.0.1:5432/postgres"

export const databaseUrl = (database: string): string => {
  const url = new URL(ADMIN_URL)
  url.pathname = `/${database}`
  return url.toString()
}

/** Creates a database with a unique name, and the entity's table in it. */
export const createDatabase = async (prefix: string): Promise<string> => {
  const name = `${prefix}_${Date.now().toString(36)}_${randomBytes(3).toString("hex")}`
  const admin = new pg.Client({ connectionString: ADMIN_URL })
  await admin.connect()
  try {
    await admin.query(`CREATE DATABASE ${name}`)
  } finally {
    await admin.end()
  }
  const db = new pg.Client({ connectionString: databaseUrl(name) })
  await db.connect()
  try {
    await db.query(`CREATE TABLE account_increments (
      key text NOT NULL, account text NOT NULL, runner text NOT NULL, at timestamptz NOT NULL DEFAULT now())`)
    await db.query(`CREATE INDEX account_increments_key ON account_increments (key)`)
  } finally {
    await db.end()
  }
  return name
}

export const dropDatabase = async (name: string): Promise<void> => {
  const admin = new pg.Client({ connectionString: ADMIN_URL })
  await admin.connect()
  try {
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
  } finally {
    await admin.end()
  }
}

/** The advisory-lock namespace of `SqlRunnerStorage` with table prefix `prefix` (its FNV-1a hash). */
export const lockNamespace = (prefix = "cluster"): number => {
  const bytes = new TextEncoder().encode(`effect-cluster:${prefix}`)
  let hash = 0x811c9dc5
  for (let i = 0; i < bytes.length; i++) hash = Math.imul(hash ^ bytes[i]!, 0x01000193)
  return (hash | 0) >>> 0
}

/** Shard lock → the application name (`runner-<port>`) of the runner holding it. */
export const shardOwners = async (client: pg.Client, database: string): Promise<Map<number, string>> => {
  const { rows } = await client.query<{ shard: number; owner: string }>(
    `SELECT l.objid::int AS shard, a.application_name AS owner
     FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
     WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1 AND a.datname = $2`,
    [lockNamespace(), database]
  )
  return new Map(rows.map((row) => [row.shard, row.owner]))
}

export interface Runner {
  readonly port: number
  readonly mode: "graceful" | "plain"
  readonly child: ChildProcess
  readonly httpPort: Promise<number>
  readonly exited: Promise<
    { readonly code: number | null; readonly signal: NodeJS.Signals | null; readonly at: number }
  >
  output: string
}

const root = join(import.meta.dirname, "..", "..")

export const startRunner = (options: {
  readonly database: string
  readonly port: number
  readonly mode: "graceful" | "plain"
  readonly shards?: number
  readonly env?: Record<string, string>
}): Runner => {
  const child = spawn(process.execPath, [join(import.meta.dirname, "runner.ts")], {
    cwd: root,
    env: {
      ...process.env,
      DATABASE_URL: databaseUrl(options.database),
      RUNNER_PORT: String(options.port),
      HTTP_PORT: "0",
      MODE: options.mode,
      SHARDS: String(options.shards ?? 30),
      ...options.env
    },
    stdio: ["ignore", "pipe", "pipe"]
  })
  let resolvePort: (port: number) => void = () => {}
  const httpPort = new Promise<number>((resolve) => (resolvePort = resolve))
  const runner: Runner = {
    port: options.port,
    mode: options.mode,
    child,
    httpPort,
    output: "",
    exited: new Promise((resolve) =>
      child.once("exit", (code, signal) => resolve({ code, signal, at: performance.now() }))
    )
  }
  const onData = (chunk: Buffer) => {
    const text = chunk.toString()
    runner.output = (runner.output + text).slice(-20_000)
    const match = /^http (\d+)$/m.exec(text)
    if (match) resolvePort(Number(match[1]))
  }
  child.stdout!.on("data", onData)
  child.stderr!.on("data", onData)
  return runner
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** Polls until `predicate` holds, or fails after `timeoutMs`. */
export const waitFor = async (what: string, predicate: () => Promise<boolean>, timeoutMs: number): Promise<void> => {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await predicate()) return
    await sleep(50)
  }
  throw new Error(`timed out waiting for ${what}`)
}
