/**
 * The deploy recipes in deploy/ against the library's defaults, so that they
 * cannot drift: each file is parsed (YAML with the small block-YAML reader
 * below, the PM2 file by requiring it, the Dockerfile and the systemd unit
 * line by line), each recipe's environment is run through the library's own
 * `ShutdownConfig.load`, and the timing rules are checked:
 *
 * - Kubernetes: terminationGracePeriodSeconds >= preStop sleep + budget + 2 s
 * - PM2: kill_timeout >= budget + 1 s
 * - systemd: TimeoutStopSec >= budget + 5 s
 * - Compose: stop_grace_period >= budget + 5 s
 *
 * and the start-up check (`PlatformCheck`) agrees with each of them.
 */
import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect } from "effect"
import { Duration as DurationModule } from "effect"
import { readFileSync } from "node:fs"
import { createRequire } from "node:module"
import { join } from "node:path"
import { PlatformCheck, ShutdownConfig } from "../src/index.ts"
import { instructionsOf, lastOf } from "./support/dockerfile.ts"

const ms = DurationModule.toMillis

const deploy = join(import.meta.dirname, "..", "deploy")
const read = (file: string) => readFileSync(join(deploy, file), "utf8")

/** The budget, and the rest, the library derives from a recipe's environment. */
const configOf = (env: Record<string, string>) =>
  Effect.runSync(ShutdownConfig.load().pipe(Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env })))))

// -----------------------------------------------------------------------------
// A reader for the block YAML the recipes use: mappings, sequences (also of
// mappings, also at their key's indentation), flow `[...]` and `{...}`,
// quoted and plain scalars, comments. Anything else is an error, not a guess.
// -----------------------------------------------------------------------------

type Yaml = string | number | boolean | null | ReadonlyArray<Yaml> | { readonly [key: string]: Yaml }

interface Line {
  readonly indent: number
  readonly text: string
  readonly number: number
}

const stripComment = (text: string): string => {
  let quote: string | undefined
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!
    if (quote !== undefined) {
      if (c === "\\" && quote === "\"") i++
      else if (c === quote) quote = undefined
    } else if (c === "\"" || c === "'") quote = c
    else if (c === "#" && (i === 0 || /\s/.test(text[i - 1]!))) return text.slice(0, i)
  }
  return text
}

const splitTopLevel = (text: string): Array<string> => {
  const parts: Array<string> = []
  let depth = 0
  let quote: string | undefined
  let start = 0
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!
    if (quote !== undefined) {
      if (c === "\\" && quote === "\"") i++
      else if (c === quote) quote = undefined
    } else if (c === "\"" || c === "'") quote = c
    else if (c === "[" || c === "{") depth++
    else if (c === "]" || c === "}") depth--
    else if (c === "," && depth === 0) {
      parts.push(text.slice(start, i))
      start = i + 1
    }
  }
  const last = text.slice(start)
  if (last.trim() !== "") parts.push(last)
  return parts.map((part) => part.trim())
}

/** `key: rest` or `key:` (a key is a plain or quoted scalar); undefined when the text is no mapping entry. */
const splitKey = (text: string): { key: string; rest: string } | undefined => {
  const match = /^("(?:[^"\\]|\\.)*"|'[^']*'|[^\s"'{[\-#][^:]*?|-[^\s:][^:]*?)\s*:(?:\s+(.*)|$)/.exec(text)
  if (!match) return undefined
  const key = scalar(match[1]!)
  return { key: String(key), rest: (match[2] ?? "").trim() }
}

const scalar = (text: string): Yaml => {
  const value = text.trim()
  if (value.startsWith("\"")) return JSON.parse(value) as string
  if (value.startsWith("'")) return value.slice(1, -1).replace(/''/g, "'")
  if (value.startsWith("[")) {
    if (!value.endsWith("]")) throw new Error(`unterminated flow sequence: ${value}`)
    return splitTopLevel(value.slice(1, -1)).map(scalar)
  }
  if (value.startsWith("{")) {
    if (!value.endsWith("}")) throw new Error(`unterminated flow mapping: ${value}`)
    const entries = splitTopLevel(value.slice(1, -1)).map((entry) => {
      const kv = splitKey(entry)
      if (kv === undefined) throw new Error(`not a flow mapping entry: ${entry}`)
      return [kv.key, kv.rest === "" ? null : scalar(kv.rest)] as const
    })
    return Object.fromEntries(entries)
  }
  if (value === "" || value === "~" || value === "null") return null
  if (value === "true") return true
  if (value === "false") return false
  if (/^-?\d+(\.\d+)?$/.test(value)) return Number(value)
  if (/[|>&*!%@`]/.test(value[0]!)) throw new Error(`unsupported YAML: ${value}`)
  return value
}

const parseYaml = (source: string): Yaml => {
  const lines: Array<Line> = []
  source.split("\n").forEach((raw, index) => {
    if (/^\s*---\s*$/.test(raw)) throw new Error("one document per file")
    if (raw.includes("\t")) throw new Error(`line ${index + 1}: tab`)
    const text = stripComment(raw).trimEnd()
    if (text.trim() === "") return
    lines.push({ indent: text.length - text.trimStart().length, text: text.trim(), number: index + 1 })
  })
  let at = 0
  const isItem = (line: Line) => line.text === "-" || line.text.startsWith("- ")

  const block = (indent: number): Yaml => {
    const line = lines[at]
    if (line === undefined || line.indent < indent) return null
    return isItem(line) ? sequence(line.indent) : mapping(line.indent)
  }

  const valueAfterKey = (rest: string, indent: number): Yaml => {
    if (rest !== "") return scalar(rest)
    const next = lines[at]
    if (next === undefined) return null
    if (next.indent > indent) return block(next.indent)
    if (next.indent === indent && isItem(next)) return sequence(indent)
    return null
  }

  const mapping = (indent: number): Yaml => {
    const result: Record<string, Yaml> = {}
    while (at < lines.length) {
      const line = lines[at]!
      if (line.indent < indent || isItem(line)) break
      if (line.indent > indent) throw new Error(`line ${line.number}: unexpected indentation`)
      const kv = splitKey(line.text)
      if (kv === undefined) throw new Error(`line ${line.number}: not a mapping entry: ${line.text}`)
      if (kv.key in result) throw new Error(`line ${line.number}: duplicate key ${kv.key}`)
      at++
      result[kv.key] = valueAfterKey(kv.rest, indent)
    }
    return result
  }

  const sequence = (indent: number): Yaml => {
    const result: Array<Yaml> = []
    while (at < lines.length) {
      const line = lines[at]!
      if (line.indent !== indent || !isItem(line)) {
        if (line.indent > indent) throw new Error(`line ${line.number}: unexpected indentation`)
        break
      }
      const rest = line.text.slice(1).trim()
      if (rest === "") {
        at++
        result.push(block(indent + 1))
      } else if (splitKey(rest) !== undefined) {
        // "- key: value" opens a mapping whose keys sit where "key" is.
        lines[at] = { indent: indent + line.text.indexOf(rest), text: rest, number: line.number }
        result.push(mapping(lines[at]!.indent))
      } else {
        at++
        result.push(scalar(rest))
      }
    }
    return result
  }

  const document = block(0)
  if (at !== lines.length) throw new Error(`line ${lines[at]!.number}: not parsed: ${lines[at]!.text}`)
  return document
}

const get = (value: Yaml, ...path: Array<string | number>): Yaml => {
  let current: Yaml = value
  for (const key of path) {
    if (current === null || typeof current !== "object") throw new Error(`no ${path.join(".")}`)
    current = (current as Record<string, Yaml>)[key as string] ?? null
  }
  return current
}

describe("the YAML reader", () => {
  it("reads what the recipes use, and refuses what it does not know", () => {
    expect(parseYaml(`
a: 1 # comment
b:
  - name: x
    value: "2 # not a comment"
  - name: y
c:
- plain
- [1, "two", {k: v}]
d: { path: /health/ready, port: http }
e: 'it''s'
f: {}
`)).toEqual({
      a: 1,
      b: [{ name: "x", value: "2 # not a comment" }, { name: "y" }],
      c: ["plain", [1, "two", { k: "v" }]],
      d: { path: "/health/ready", port: "http" },
      e: "it's",
      f: {}
    })
    expect(() => parseYaml("a: |\n  text")).toThrow(/unsupported/)
    expect(() => parseYaml("a: 1\na: 2")).toThrow(/duplicate/)
    expect(() => parseYaml("a:\n  b: 1\n    c: 2")).toThrow(/indentation/)
  })
})

// -----------------------------------------------------------------------------
// The recipes
// -----------------------------------------------------------------------------

describe("deploy/kubernetes.yaml", () => {
  const manifest = parseYaml(read("kubernetes.yaml"))
  const pod = get(manifest, "spec", "template", "spec")
  const containers = get(pod, "containers") as ReadonlyArray<Yaml>
  const container = containers[0]!
  const env = Object.fromEntries(
    (get(container, "env") as ReadonlyArray<Yaml>).map((
      entry
    ) => [get(entry, "name") as string, String(get(entry, "value"))])
  )
  const grace = get(pod, "terminationGracePeriodSeconds") as number
  const preStop = get(container, "lifecycle", "preStop")
  const preStopSeconds = (() => {
    const command = get(preStop, "exec", "command")
    if (Array.isArray(command)) {
      expect(command[0]).toBe("sleep")
      return Number(command[1])
    }
    return get(preStop, "sleep", "seconds") as number
  })()
  // On Kubernetes, KUBERNETES_SERVICE_HOST is always set: the delay default changes with it.
  const config = configOf({ ...env, KUBERNETES_SERVICE_HOST: "10.96.0.1" })

  it("is a Deployment with one container", () => {
    expect(get(manifest, "kind")).toBe("Deployment")
    expect(get(manifest, "apiVersion")).toBe("apps/v1")
    expect(containers).toHaveLength(1)
  })

  it("terminationGracePeriodSeconds >= preStop sleep + budget + 2 s (the lame duck is inside the budget)", () => {
    expect(preStopSeconds).toBeGreaterThan(0)
    expect(ms(config.delay)).toBeLessThan(ms(config.timeout))
    expect(grace * 1000).toBeGreaterThanOrEqual(preStopSeconds * 1000 + ms(config.timeout) + 2_000)
  })

  it("uses the preStop sleep as the lame duck, not both", () => {
    expect(ms(config.delay)).toBe(0)
  })

  it("readiness on /health/ready, liveness on /health/live, on the service's port", () => {
    const port = get(container, "ports", 0)
    expect(get(container, "readinessProbe", "httpGet", "path")).toBe("/health/ready")
    expect(get(container, "livenessProbe", "httpGet", "path")).toBe("/health/live")
    for (const probe of ["readinessProbe", "livenessProbe"]) {
      const probePort = get(container, probe, "httpGet", "port")
      expect([get(port, "name"), get(port, "containerPort")]).toContain(probePort)
    }
    expect(String(get(port, "containerPort"))).toBe(env.PORT)
    expect(env.HOST).toBe("0.0.0.0")
    // Readiness must fail fast: within one probe period of the first signal.
    expect(get(container, "readinessProbe", "failureThreshold")).toBe(1)
  })

  it("tells the start-up check the real grace period and preStop sleep, and the check agrees", () => {
    expect(Number(env.TERMINATION_GRACE_PERIOD_SECONDS)).toBe(grace)
    expect(Number(env.PRE_STOP_SLEEP_SECONDS)).toBe(preStopSeconds)
    const findings = PlatformCheck.evaluate(
      ms(config.timeout),
      PlatformCheck.detect({ ...env, KUBERNETES_SERVICE_HOST: "10.96.0.1" })
    )
    expect(findings.map((f) => [f.platform, f.fits, f.assumed])).toEqual([["kubernetes", true, false]])
  })

  it("writes the shutdown report to the termination log", () => {
    expect(env.SHUTDOWN_REPORT_FILE).toBe(get(container, "terminationMessagePath"))
  })
})

describe("deploy/ecosystem.config.cjs (PM2)", () => {
  const ecosystem = createRequire(import.meta.url)(join(deploy, "ecosystem.config.cjs")) as {
    readonly apps: ReadonlyArray<Record<string, unknown> & { readonly env: Record<string, string> }>
  }
  const app = ecosystem.apps[0]!
  const config = configOf(app.env)

  it("kill_timeout >= budget + 1 s", () => {
    expect(typeof app.kill_timeout).toBe("number")
    expect(app.kill_timeout as number).toBeGreaterThanOrEqual(ms(config.timeout) + 1_000)
  })

  it("waits for the library's ready message and stops with a shutdown message", () => {
    expect(app.wait_ready).toBe(true)
    expect(app.shutdown_with_message).toBe(true)
    expect(app.listen_timeout as number).toBeGreaterThan(0)
  })

  it("runs the service with node, not npm", () => {
    expect(app.script).toBe("examples/service/main.ts")
    expect(app.interpreter).toBe("node")
  })

  it("passes the start-up check as PM2 would run it (PM2 passes the app's settings as environment variables)", () => {
    const env = { ...app.env, pm_id: "0", kill_timeout: String(app.kill_timeout) }
    const findings = PlatformCheck.evaluate(ms(config.timeout), PlatformCheck.detect(env))
    expect(findings.map((f) => [f.platform, f.fits])).toEqual([["pm2", true]])
  })
})

/** systemd's `Environment=` assignments: space-separated, each optionally double-quoted. */
const systemdAssignments = (value: string): Array<[string, string]> => {
  const words = value.match(/"(?:[^"\\]|\\.)*"|\S+/g) ?? []
  return words.map((word) => {
    const text = word.startsWith("\"") ? (JSON.parse(word) as string) : word
    const equals = text.indexOf("=")
    if (equals <= 0) throw new Error(`not an assignment: ${word}`)
    return [text.slice(0, equals), text.slice(equals + 1)]
  })
}

/** A systemd time span in ms: `30`, `30s`, `1min 30s`, `500ms`. */
const systemdSpan = (value: string): number => {
  const units: Record<string, number> = { "": 1000, s: 1000, sec: 1000, ms: 1, min: 60_000, m: 60_000 }
  let total = 0
  for (const part of value.trim().split(/\s+/)) {
    const match = /^(\d+(?:\.\d+)?)(ms|s|sec|min|m)?$/.exec(part)
    if (!match) throw new Error(`not a time span: ${value}`)
    total += Number(match[1]) * units[match[2] ?? ""]!
  }
  return total
}

describe("deploy/effect-graceful-example.service (systemd)", () => {
  const sections: Record<string, Array<[string, string]>> = {}
  let section = ""
  for (const raw of read("effect-graceful-example.service").split("\n")) {
    const line = raw.trim()
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue
    const header = /^\[(\w+)\]$/.exec(line)
    if (header) {
      section = header[1]!
      sections[section] = []
      continue
    }
    const equals = line.indexOf("=")
    if (equals <= 0 || section === "") throw new Error(`not a unit file line: ${line}`)
    sections[section]!.push([line.slice(0, equals), line.slice(equals + 1)])
  }
  const service = sections.Service ?? []
  const one = (key: string) => {
    const values = service.filter(([k]) => k === key).map(([, v]) => v)
    expect(values, key).toHaveLength(1)
    return values[0]!
  }
  const env = Object.fromEntries(service.filter(([k]) => k === "Environment").flatMap(([, v]) => systemdAssignments(v)))
  const config = configOf(env)

  it("KillMode=mixed: SIGTERM to node only, SIGKILL to the rest at the end", () => {
    expect(one("KillMode")).toBe("mixed")
    expect(one("KillSignal")).toBe("SIGTERM")
  })

  it("TimeoutStopSec >= budget + 5 s", () => {
    expect(env.SHUTDOWN_TIMEOUT).toBeDefined()
    expect(systemdSpan(one("TimeoutStopSec"))).toBeGreaterThanOrEqual(ms(config.timeout) + 5_000)
  })

  it("execs node directly", () => {
    const [executable, ...args] = one("ExecStart").split(/\s+/)
    expect(executable).toMatch(/^\/.*\/node$/)
    expect(args[0]).toBe("examples/service/main.ts")
  })

  it("reads time spans as systemd does", () => {
    expect(systemdSpan("30")).toBe(30_000)
    expect(systemdSpan("1min 30s")).toBe(90_000)
    expect(() => systemdSpan("soon")).toThrow()
  })
})

describe("deploy/Dockerfile", () => {
  const instructions = instructionsOf(read("Dockerfile"))
  const last = (op: string) => lastOf(instructions, op)

  it("exec-form CMD running node, never npm or a shell", () => {
    const cmd = last("CMD")
    expect(cmd).toBeDefined()
    const argv = JSON.parse(cmd!) as Array<string>
    expect(argv[0]).toBe("node")
    expect(argv).not.toContain("npm")
  })

  it("an init as PID 1 that forwards signals (tini)", () => {
    const entrypoint = JSON.parse(last("ENTRYPOINT")!) as Array<string>
    expect(entrypoint[0]).toMatch(/tini$/)
    expect(entrypoint).toContain("--")
    expect(instructions.some((i) => i.op === "RUN" && i.args.includes("tini"))).toBe(true)
  })

  it("stops with SIGTERM, and the budget fits the stop timeout it documents", () => {
    expect(last("STOPSIGNAL")).toBe("SIGTERM")
    const env = Object.fromEntries(
      instructions.filter((i) => i.op === "ENV").flatMap((i) =>
        [...i.args.matchAll(/(\w+)=("(?:[^"\\]|\\.)*"|\S+)/g)].map((
          m
        ) => [m[1]!, m[2]!.startsWith("\"") ? JSON.parse(m[2]!) : m[2]!])
      )
    )
    const config = configOf(env)
    const stopTimeout = /--stop-timeout (\d+)/.exec(read("Dockerfile"))
    expect(stopTimeout).not.toBeNull()
    expect(Number(stopTimeout![1]) * 1000).toBeGreaterThanOrEqual(ms(config.timeout) + 5_000)
  })
})

describe("deploy/compose.yaml", () => {
  const compose = parseYaml(read("compose.yaml"))
  const service = get(compose, "services", "service")
  const environment = get(service, "environment") as Record<string, Yaml>
  const config = configOf(Object.fromEntries(Object.entries(environment).map(([k, v]) => [k, String(v)])))

  it("stop_grace_period >= budget + 5 s, stop signal SIGTERM", () => {
    const period = String(get(service, "stop_grace_period"))
    const match = /^(\d+)s$/.exec(period)
    expect(match, period).not.toBeNull()
    expect(Number(match![1]) * 1000).toBeGreaterThanOrEqual(ms(config.timeout) + 5_000)
    expect(get(service, "stop_signal")).toBe("SIGTERM")
  })

  it("health check on /health/ready", () => {
    expect(JSON.stringify(get(service, "healthcheck", "test"))).toContain("/health/ready")
  })
})

describe("the defaults the recipes are checked against", () => {
  it("are the library's", () => {
    expect(ms(configOf({}).timeout)).toBe(ms(ShutdownConfig.DEFAULT_TIMEOUT))
    expect(ms(configOf({ KUBERNETES_SERVICE_HOST: "x" }).delay)).toBe(ms(ShutdownConfig.DEFAULT_KUBERNETES_DELAY))
  })
})
