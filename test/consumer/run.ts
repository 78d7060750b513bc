/**
 * The consumer check (`npm run test:consumer`): the package as an app
 * installs it, not as this repository sees it.
 *
 * 1. `npm pack` (its `prepack` builds dist/); every file that package.json
 *    "exports" points at must be in the tarball.
 * 2. For the lowest and the highest version that the peer ranges of `effect`
 *    and `@effect/platform-node` allow: a scratch app installs the tarball,
 *    those two peers, every optional peer (with the `@types/*` package this
 *    repository develops against, when it has one), and the vitest and
 *    `@effect/vitest` of our devDependencies. Plain `npm install`: a peer
 *    range that does not fit fails the install. Then:
 *    - one copy of `effect` and of `@effect/platform-node` in the tree;
 *    - `tsc` (`module: nodenext`, `strict`, `skipLibCheck: false`) over a
 *      program that imports every subpath (generated from "exports", so a new
 *      subpath is covered without editing this file) and uses one export of
 *      each, plus `app/main.ts`, `examples/quickstart.ts` (the README's
 *      first example) and the docs' TestClock test;
 *    - `app/main.ts` runs: it starts, a request is in flight, SIGTERM, the
 *      request is answered, exit 0;
 *    - the docs' TestClock test passes under vitest.
 * 3. Each subpath with only its own optional peers installed (the peers its
 *    emitted `.d.ts` and `.js` files import, found by following their
 *    imports): one scratch app per set of peers, at the highest versions, in
 *    which those subpaths type-check and load. A subpath may need at most one
 *    optional peer: a user of one client must not need another's package or
 *    types. An import of a package that is neither a peer nor a dependency
 *    fails the check.
 *
 * npm uses its cache (`--prefer-offline`); every step has a time limit.
 * `--keep` keeps the scratch directory; it is also kept when the check fails.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { builtinModules } from "node:module"
import { tmpdir } from "node:os"
import { dirname, join, resolve } from "node:path"
import ts from "typescript"

const root = resolve(import.meta.dirname, "..", "..")
const appTemplate = join(import.meta.dirname, "app")
const keep = process.argv.includes("--keep")
const started = Date.now()

interface PackageJson {
  readonly name: string
  readonly dependencies?: Record<string, string>
  readonly devDependencies?: Record<string, string>
  readonly peerDependencies?: Record<string, string>
  readonly peerDependenciesMeta?: Record<string, { readonly optional?: boolean }>
  readonly exports: Record<string, string | Record<string, string>>
}

const readJson = <A>(path: string): A => JSON.parse(readFileSync(path, "utf8")) as A
const pkg = readJson<PackageJson>(join(root, "package.json"))
const peers = pkg.peerDependencies ?? {}
const dev = pkg.devDependencies ?? {}
const isOptional = (name: string) => pkg.peerDependenciesMeta?.[name]?.optional === true
const requiredPeers = Object.keys(peers).filter((name) => !isOptional(name))
const optionalPeers = Object.keys(peers).filter(isOptional)

const problems: Array<string> = []
const problem = (text: string) => {
  problems.push(text)
  console.log(`  FAIL ${text}`)
}
const elapsed = () => `${((Date.now() - started) / 1000).toFixed(1)} s`

// ---------------------------------------------------------------------------
// Processes

interface Ran {
  readonly code: number | null
  readonly stdout: string
  /** stdout and stderr as they came. */
  readonly output: string
}

/**
 * Runs a command to its end, within `timeoutMs`. npm's own variables are
 * dropped from the environment: under `npm run`, `npm_config_local_prefix`
 * would make a nested `npm install` install into this repository.
 */
const run = (command: string, args: ReadonlyArray<string>, cwd: string, timeoutMs: number): Promise<Ran> =>
  new Promise((resolvePromise) => {
    const env: Record<string, string> = {}
    for (const [key, value] of Object.entries(process.env)) {
      if (value !== undefined && !/^npm_/i.test(key) && key !== "INIT_CWD") env[key] = value
    }
    const child = spawn(command, args, { cwd, env, stdio: ["ignore", "pipe", "pipe"], timeout: timeoutMs })
    let output = ""
    let stdout = ""
    child.stdout.on("data", (chunk) => {
      stdout += String(chunk)
      output += String(chunk)
    })
    child.stderr.on("data", (chunk) => (output += String(chunk)))
    child.on("error", (error) => (output += `\n${String(error)}`))
    child.on("close", (code, signal) =>
      resolvePromise({
        code,
        stdout,
        output: signal === null ? output : `${output}\n(killed by ${signal}: over ${timeoutMs / 1000} s?)`
      }))
  })

/** Runs a command; a non-zero exit is a problem, reported with the end of its output. */
const step = async (label: string, command: string, args: ReadonlyArray<string>, cwd: string, timeoutMs: number) => {
  const ran = await run(command, args, cwd, timeoutMs)
  if (ran.code !== 0) {
    problem(`${label}: exit ${ran.code}\n${indent(tail(ran.output, 60))}`)
    return undefined
  }
  return ran.stdout
}

const tail = (text: string, lines: number) => text.trimEnd().split("\n").slice(-lines).join("\n")
const indent = (text: string) => text.split("\n").map((line) => `      ${line}`).join("\n")

/** Runs tasks with at most `limit` at once (2 CPUs are shared with other work). */
const pool = async <A, B>(items: ReadonlyArray<A>, limit: number, task: (item: A) => Promise<B>): Promise<Array<B>> => {
  const results: Array<B> = []
  let next = 0
  const worker = async () => {
    while (next < items.length) {
      const index = next++
      results[index] = await task(items[index]!)
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
  return results
}

// ---------------------------------------------------------------------------
// Versions

/** The lowest version a range allows, for the ranges peers use (`^4.0.6`, `>=4.0.6 <5`, `4.0.6`). */
const lowest = (range: string): string => {
  const first = range.split("||").map((part) => part.trim())
  const versions = first.map((part) => /^(?:\^|~|>=|=)?\s*v?(\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?)/.exec(part)?.[1])
  if (versions.some((version) => version === undefined)) {
    throw new Error(`cannot take the lowest version of the range "${range}"`)
  }
  const parse = (v: string) => v.split(/[.-]/).slice(0, 3).map(Number)
  return versions.map((version) => version!).sort((a, b) => {
    const [x, y] = [parse(a), parse(b)]
    return x[0]! - y[0]! || x[1]! - y[1]! || x[2]! - y[2]!
  })[0]!
}

/** DefinitelyTyped's name for a package's types: `pg` → `@types/pg`, `@a/b` → `@types/a__b`. */
const typesPackage = (name: string) => `@types/${name.startsWith("@") ? name.slice(1).replace("/", "__") : name}`

/** `name@range` specs for the optional peers, each with its `@types` package when we develop against one. */
const peerSpecs = (names: ReadonlyArray<string>) =>
  names.flatMap((name) => {
    const types = typesPackage(name)
    return [`${name}@${peers[name]}`, ...(dev[types] === undefined ? [] : [`${types}@${dev[types]}`])]
  })

/**
 * For the lowest variant: the optional peers that peer on a required peer
 * themselves (`@effect/sql-pg` peers on `effect`) at the lowest version their
 * range allows. At their range, npm takes the newest (`@effect/sql-pg@4.1.5`,
 * which needs `effect@^4.1.5`) and the install fails with ERESOLVE beside
 * `effect@4.0.6`; an app on the oldest supported effect uses the oldest client.
 */
const lowestPeerSpecs = async (names: ReadonlyArray<string>): Promise<Array<string>> => {
  const specs: Array<string> = []
  for (const name of names) {
    const oldest = lowest(peers[name]!)
    const theirPeers = Object.keys(await view(`${name}@${oldest}`, "peerDependencies"))
    const pinned = theirPeers.some((peer) => requiredPeers.includes(peer))
    const types = typesPackage(name)
    specs.push(
      `${name}@${pinned ? oldest : peers[name]}`,
      ...(dev[types] === undefined ? [] : [`${types}@${dev[types]}`])
    )
  }
  return specs
}

/** A field of a published version's manifest (`{}` when it has none). */
const view = async (spec: string, field: string): Promise<Record<string, string>> => {
  const ran = await run("npm", ["view", spec, field, "--json", "--prefer-offline"], tmpdir(), 60_000)
  if (ran.code !== 0) throw new Error(`npm view ${spec} ${field}: exit ${ran.code}\n${tail(ran.output, 20)}`)
  return ran.stdout.trim() === "" ? {} : JSON.parse(ran.stdout) as Record<string, string>
}

/**
 * For the lowest variant: the dependencies of the required peers that peer on
 * one of them themselves (`@effect/platform-node` depends on
 * `@effect/platform-node-shared`, which peers on `effect`), pinned to the
 * lowest version their range allows. Left alone, npm picks their newest
 * version even when its peer range excludes the `effect` installed (it only
 * marks that nested peer "invalid"): `@effect/platform-node@4.0.6` then gets
 * `@effect/platform-node-shared@4.1.0`, which needs `effect@4.1` and fails to
 * load beside `effect@4.0.6`. The oldest supported set is the oldest of each.
 */
const lowestPins = async (versions: Record<string, string>): Promise<Array<string>> => {
  const pins: Array<string> = []
  for (const name of requiredPeers) {
    for (const [dependency, range] of Object.entries(await view(`${name}@${versions[name]}`, "dependencies"))) {
      const version = lowest(range)
      const theirPeers = Object.keys(await view(`${dependency}@${version}`, "peerDependencies"))
      if (theirPeers.some((peer) => requiredPeers.includes(peer))) pins.push(`${dependency}@${version}`)
    }
  }
  return pins
}

/** `npm ls --all` must find no invalid or missing package (a peer range not met anywhere in the tree). */
const checkTree = async (label: string, dir: string) => {
  const ran = await run("npm", ["ls", "--all"], dir, 60_000)
  if (ran.code !== 0) {
    const bad = ran.output.split("\n").filter((line) => /invalid|missing|ERR/.test(line))
    problem(`${label}: npm ls --all: the installed tree is not valid\n${indent(bad.join("\n"))}`)
  }
}

const devSpec = (name: string) => {
  const range = dev[name]
  if (range === undefined) throw new Error(`${name} is not in devDependencies`)
  return `${name}@${range}`
}

// ---------------------------------------------------------------------------
// The package: subpaths and the packages each one imports

const packageName = (specifier: string) =>
  specifier.startsWith("@") ? specifier.split("/").slice(0, 2).join("/") : specifier.split("/")[0]!

const isBuiltin = (specifier: string) =>
  specifier.startsWith("node:") || builtinModules.includes(specifier.split("/")[0]!)

interface Subpath {
  /** What an app writes: `effect-graceful/Pg`. */
  readonly specifier: string
  /** The files its "types" and "default" conditions point at. */
  readonly files: ReadonlyArray<string>
}

const subpaths: Array<Subpath> = Object.entries(pkg.exports)
  .filter(([key]) => !key.includes("*"))
  .map(([key, entry]) => ({
    specifier: key === "." ? pkg.name : `${pkg.name}/${key.slice(2)}`,
    // The source condition (for this repository's examples) is not for apps.
    files:
      (typeof entry === "string" ? [entry] : Object.entries(entry).filter(([c]) => !c.includes("/")).map(([, f]) => f))
  }))

/**
 * The packages a subpath's emitted files import (static, dynamic and
 * `import("x")` types, and `/// <reference types>`), following its relative
 * imports.
 */
const importedPackages = (packageDir: string, subpath: Subpath): Set<string> => {
  const seen = new Set<string>()
  const packages = new Set<string>()
  const visit = (file: string) => {
    if (seen.has(file)) return
    seen.add(file)
    if (!existsSync(file)) {
      problem(`${subpath.specifier}: ${file.slice(packageDir.length + 1)} is imported but not in the package`)
      return
    }
    const info = ts.preProcessFile(readFileSync(file, "utf8"), true, true)
    for (const { fileName } of info.importedFiles) {
      if (fileName.startsWith(".")) {
        const target = resolve(dirname(file), fileName)
        // Declarations keep the source's `.ts` extension (rewriteRelativeImportExtensions) or say `.js`.
        visit(file.endsWith(".d.ts") ? target.replace(/\.(?:js|ts)$/, ".d.ts") : target)
      } else if (!isBuiltin(fileName)) {
        packages.add(packageName(fileName))
      }
    }
    // `/// <reference types="x" />` needs x (or @types/x) as much as an import does.
    for (const { fileName } of info.typeReferenceDirectives) {
      if (fileName !== "node") {
        packages.add(
          packageName(
            fileName.replace(/^@types\/(?:(.+)__)?/, (_, scope?: string) => scope === undefined ? "" : `@${scope}/`)
          )
        )
      }
    }
  }
  for (const file of subpath.files) visit(join(packageDir, file))
  return packages
}

// ---------------------------------------------------------------------------
// Scratch apps

const tsconfig = {
  compilerOptions: {
    target: "ES2023",
    // effect's own declarations (effect/Schema reaches effect/crypto) name the
    // Web Crypto types CryptoKey and JsonWebKey, which only lib "DOM" declares:
    // an app that checks effect's declarations needs it, with or without us.
    lib: ["ES2023", "DOM"],
    module: "nodenext",
    moduleResolution: "nodenext",
    types: ["node"],
    strict: true,
    exactOptionalPropertyTypes: true,
    skipLibCheck: false,
    noEmit: true,
    allowImportingTsExtensions: true,
    verbatimModuleSyntax: true,
    erasableSyntaxOnly: true
  },
  include: ["*.ts"]
}

/** One export of a module to use: a function named like one (not a class) if it has one, else any value. */
const pickExport = (exports: ReadonlyArray<readonly [string, string]>) =>
  (exports.find(([name, type]) => type === "function" && /^[a-z]/.test(name)) ??
    exports.find(([, type]) => type === "function") ??
    exports[0])?.[0]

/**
 * `subpaths.ts`: imports each subpath and uses one of its exports (named
 * after reading the module's exports at run time); it fails when one is
 * missing.
 */
const subpathsModule = (
  list: ReadonlyArray<Subpath>,
  exportsOf: ReadonlyMap<string, ReadonlyArray<readonly [string, string]>>
) => {
  const lines = [
    "// Generated by test/consumer/run.ts from package.json \"exports\".",
    ...list.map((subpath, i) => `import * as M${i} from "${subpath.specifier}"`),
    "",
    "export const subpaths: ReadonlyArray<readonly [string, unknown]> = [",
    ...list.map((subpath, i) => {
      const name = pickExport(exportsOf.get(subpath.specifier) ?? [])
      return name === undefined
        ? `  ["${subpath.specifier}", M${i}],`
        : `  ["${subpath.specifier}", M${i}.${name}],`
    }),
    "]",
    "",
    "for (const [specifier, used] of subpaths) {",
    "  if (used === undefined) throw new Error(`${specifier}: the export used is undefined`)",
    "}",
    ""
  ]
  return lines.join("\n")
}

/** The docs' TestClock test: the first ```ts block of docs/guide/testing.md ("Testing shutdown with TestClock"). */
const readmeTest = () => {
  const page = readFileSync(join(root, "docs", "guide", "testing.md"), "utf8")
  const code = /```ts\n([\s\S]*?)```/.exec(page)?.[1]
  if (code === undefined) throw new Error("docs/guide/testing.md: no ```ts block")
  return code
}

const writeApp = (dir: string) => {
  mkdirSync(dir, { recursive: true })
  writeFileSync(
    join(dir, "package.json"),
    JSON.stringify({ name: "consumer-app", private: true, type: "module" }, null, 2)
  )
  writeFileSync(join(dir, "tsconfig.json"), JSON.stringify(tsconfig, null, 2))
}

const npmInstall = (label: string, dir: string, specs: ReadonlyArray<string>) =>
  step(
    `${label}: npm install`,
    "npm",
    [
      "install",
      "--no-audit",
      "--no-fund",
      "--prefer-offline",
      "--loglevel=error",
      ...specs
    ],
    dir,
    300_000
  )

const tsc = join(root, "node_modules", "typescript", "bin", "tsc")
const typecheck = async (label: string, dir: string) => {
  const name = `${label}: tsc (nodenext, skipLibCheck false)`
  const ran = await run(process.execPath, [tsc, "-p", "tsconfig.json"], dir, 300_000)
  if (ran.code === 0) return ran.stdout
  // Errors inside another package's own declarations (for example
  // @nats-io/nats-core's under exactOptionalPropertyTypes) are that package's,
  // and an app with these settings meets them with or without us: report
  // them, but only errors in our declarations or the app's code fail the check.
  const errors = ran.output.split("\n").filter((line) => /^\S+\(\d+,\d+\): error /.test(line))
  const theirs = errors.filter((line) =>
    line.startsWith("node_modules/") && !line.startsWith(`node_modules/${pkg.name}/`)
  )
  if (errors.length > 0 && theirs.length === errors.length) {
    const packages = [
      ...new Set(theirs.map((line) => line.split("/").slice(1, line.startsWith("node_modules/@") ? 3 : 2).join("/")))
    ]
    console.log(
      `  note ${name}: ${theirs.length} error(s) in the declarations of ${
        packages.join(", ")
      } (not ours; skipLibCheck: true hides them)`
    )
    return ran.stdout
  }
  problem(`${name}: exit ${ran.code}\n${indent(tail(ran.output, 60))}`)
  return undefined
}

/** Every installed copy of a package in an app's tree, with its version. */
const copiesOf = (dir: string, name: string): Array<string> => {
  const found: Array<string> = []
  const walk = (nodeModules: string) => {
    if (!existsSync(nodeModules)) return
    for (const entry of readdirSync(nodeModules)) {
      const dirs = entry.startsWith("@")
        ? readdirSync(join(nodeModules, entry)).map((child) => join(nodeModules, entry, child))
        : [join(nodeModules, entry)]
      for (const packageDir of dirs) {
        const manifest = join(packageDir, "package.json")
        if (!existsSync(manifest)) continue
        const { name: installed, version } = readJson<{ name: string; version: string }>(manifest)
        if (installed === name) found.push(`${version} (${packageDir.slice(dir.length + 1)})`)
        walk(join(packageDir, "node_modules"))
      }
    }
  }
  walk(join(dir, "node_modules"))
  return found
}

/** Imports each subpath in the app and lists its exports with their `typeof`. */
const readExports = async (label: string, dir: string, list: ReadonlyArray<Subpath>) => {
  const script = [
    "const result = {}",
    ...list.map((s) =>
      `result[${JSON.stringify(s.specifier)}] = Object.entries(await import(${
        JSON.stringify(s.specifier)
      })).map(([k, v]) => [k, typeof v])`
    ),
    "console.log(JSON.stringify(result))"
  ].join("\n")
  writeFileSync(join(dir, "exports.mjs"), script)
  const output = await step(`${label}: import every subpath`, process.execPath, ["exports.mjs"], dir, 60_000)
  if (output === undefined) return new Map<string, ReadonlyArray<readonly [string, string]>>()
  const parsed = JSON.parse(output.trim().split("\n").at(-1)!) as Record<string, Array<[string, string]>>
  for (const [specifier, exports] of Object.entries(parsed)) {
    if (exports.length === 0) problem(`${label}: ${specifier} has no exports at run time`)
  }
  return new Map(Object.entries(parsed))
}

/** Starts main.ts, sends SIGTERM while a request is in flight: the request is answered and the exit code is 0. */
const runMain = (label: string, dir: string): Promise<void> =>
  new Promise((resolvePromise) => {
    const child: ChildProcess = spawn(process.execPath, ["main.ts"], {
      cwd: dir,
      env: { ...process.env, KUBERNETES_SERVICE_HOST: "", SHUTDOWN_TIMEOUT: "10 seconds" },
      stdio: ["ignore", "pipe", "pipe"]
    })
    let output = ""
    let answer: Promise<string> | undefined
    let timedOut = false
    const deadline = setTimeout(() => {
      timedOut = true
      child.kill("SIGKILL")
    }, 30_000)
    const onData = (chunk: Buffer) => {
      output += String(chunk)
      const port = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(output)?.[1]
      if (port !== undefined && answer === undefined) {
        answer = fetch(`http://127.0.0.1:${port}/work?ms=400`).then((r) => r.text(), (e: unknown) =>
          `error: ${String(e)}`)
        setTimeout(() =>
          child.kill("SIGTERM"), 100)
      }
    }
    child.stdout!.on("data", onData)
    child.stderr!.on("data", onData)
    child.on("exit", async (code, signal) => {
      clearTimeout(deadline)
      const body = answer === undefined ? "(no request sent)" : await answer
      if (timedOut) {
        problem(`${label}: main.ts did not start and stop within 30 s\n${indent(tail(output, 30))}`)
      } else if (code !== 0 || body !== "done after 400 ms\n") {
        problem(
          `${label}: main.ts: exit ${code ?? signal}, in-flight request answered ${JSON.stringify(body)}\n${
            indent(tail(output, 30))
          }`
        )
      } else {
        console.log(`  ok   ${label}: main.ts served a request in flight at SIGTERM and exited 0`)
      }
      resolvePromise()
    })
  })

// ---------------------------------------------------------------------------
// The check

const work = mkdtempSync(join(tmpdir(), "effect-graceful-consumer-"))
console.log(`consumer check in ${work}`)

const check = async () => {
  const packed = await step("npm pack", "npm", ["pack", "--json", "--pack-destination", work], root, 300_000)
  if (packed === undefined) return
  // stdout also carries the banners of the prepack scripts; the JSON starts on a line of its own.
  const [tarball] = JSON.parse(packed.slice(packed.search(/^\[/m))) as Array<
    { filename: string; files: Array<{ path: string }> }
  >
  const tarballPath = join(work, tarball!.filename)
  const packedFiles = new Set(tarball!.files.map((file) => file.path))
  for (const subpath of subpaths) {
    for (const file of subpath.files) {
      if (!packedFiles.has(file.replace(/^\.\//, ""))) problem(`${subpath.specifier}: ${file} is not in the tarball`)
    }
  }
  console.log(
    `  ok   packed ${tarball!.filename} (${packedFiles.size} files; ${subpaths.length} subpaths) at ${elapsed()}`
  )

  const testSpecs = [devSpec("@types/node"), devSpec("vitest"), devSpec("@effect/vitest")]
  // @effect/vitest peers on effect: beside the oldest effect, the oldest it
  // allows (its newest, 4.1.5, needs effect ^4.1.5).
  const lowestTestSpecs = [
    devSpec("@types/node"),
    devSpec("vitest"),
    `@effect/vitest@${lowest(dev["@effect/vitest"]!)}`
  ]

  interface Variant {
    readonly label: string
    readonly versions: Record<string, string>
  }
  const variants: Array<Variant> = [
    { label: "lowest", versions: Object.fromEntries(requiredPeers.map((name) => [name, lowest(peers[name]!)])) },
    { label: "highest", versions: Object.fromEntries(requiredPeers.map((name) => [name, peers[name]!])) }
  ]

  const fullApp = async (variant: Variant) => {
    const dir = join(work, variant.label)
    writeApp(dir)
    const pins = variant.label === "lowest" ? await lowestPins(variant.versions) : []
    const installed = await npmInstall(variant.label, dir, [
      tarballPath,
      ...requiredPeers.map((name) => `${name}@${variant.versions[name]}`),
      ...pins,
      ...(variant.label === "lowest" ? await lowestPeerSpecs(optionalPeers) : peerSpecs(optionalPeers)),
      ...(variant.label === "lowest" ? lowestTestSpecs : testSpecs)
    ])
    if (installed === undefined) return undefined
    await checkTree(variant.label, dir)
    const found = requiredPeers.map((name) => {
      const copies = copiesOf(dir, name)
      if (copies.length !== 1) problem(`${variant.label}: ${copies.length} copies of ${name}: ${copies.join(", ")}`)
      return `${name} ${copies[0]?.split(" ")[0]}`
    })
    const pinned = pins.length === 0 ? "" : ` (pinned ${pins.join(", ")})`
    console.log(`  ok   ${variant.label}: installed ${found.join(", ")}${pinned} at ${elapsed()}`)
    return dir
  }

  const checkFullApp = async (variant: Variant, dir: string) => {
    const exportsOf = await readExports(variant.label, dir, subpaths)
    writeFileSync(join(dir, "subpaths.ts"), subpathsModule(subpaths, exportsOf))
    writeFileSync(join(dir, "main.ts"), readFileSync(join(appTemplate, "main.ts"), "utf8"))
    writeFileSync(join(dir, "readme.test.ts"), readmeTest())
    // The README's first example (type-checked only: it listens on port 3000).
    writeFileSync(join(dir, "quickstart.ts"), readFileSync(join(root, "examples", "quickstart.ts"), "utf8"))
    if (await typecheck(variant.label, dir) !== undefined) {
      console.log(
        `  ok   ${variant.label}: ${subpaths.length} subpaths, main.ts, the README's quickstart and test type-check at ${elapsed()}`
      )
    }
    await runMain(variant.label, dir)
    const vitest = await step(
      `${variant.label}: the docs' TestClock test (vitest)`,
      process.execPath,
      [
        join(dir, "node_modules", "vitest", "vitest.mjs"),
        "run",
        "readme.test.ts"
      ],
      dir,
      120_000
    )
    if (vitest !== undefined) {
      const versions = ["vitest", "@effect/vitest"].map((name) => `${name} ${copiesOf(dir, name)[0]?.split(" ")[0]}`)
      console.log(`  ok   ${variant.label}: the docs' TestClock test passes (${versions.join(", ")}) at ${elapsed()}`)
    }
    return exportsOf
  }

  const [lowestDir, highestDir] = await Promise.all(variants.map(fullApp))
  const [, highestExports] = await Promise.all([
    lowestDir === undefined ? undefined : checkFullApp(variants[0]!, lowestDir),
    highestDir === undefined ? undefined : checkFullApp(variants[1]!, highestDir)
  ])

  // Each subpath with only its own optional peers.
  if (highestDir !== undefined && highestExports !== undefined) {
    const packageDir = join(highestDir, "node_modules", pkg.name)
    const known = new Set([pkg.name, ...Object.keys(peers), ...Object.keys(pkg.dependencies ?? {})])
    const groups = new Map<string, Array<Subpath>>()
    for (const subpath of subpaths) {
      const imported = [...importedPackages(packageDir, subpath)]
      for (const name of imported.filter((name) => !known.has(name))) {
        problem(`${subpath.specifier} imports "${name}", which is neither a dependency nor a peer dependency`)
      }
      const own = imported.filter((name) => optionalPeers.includes(name)).sort()
      // One client may ship as several packages of one scope (nats.js v3:
      // @nats-io/transport-node with @nats-io/jetstream).
      const scopes = new Set(own.map((name) => name.startsWith("@") ? name.split("/")[0] : name))
      if (scopes.size > 1) {
        problem(
          `${subpath.specifier} needs ${
            own.join(" and ")
          }: a user of one client must not need another's package or types (split the subpath)`
        )
      }
      const key = own.join(" ")
      groups.set(key, [...(groups.get(key) ?? []), subpath])
    }
    console.log("  subpaths by the optional peers they import:")
    for (const [key, list] of groups) {
      console.log(`       ${key || "(none)"}: ${list.map((s) => s.specifier).join(", ")}`)
    }

    await pool([...groups], 2, async ([key, list]) => {
      const label = `only ${key || "required peers"}`
      const dir = join(work, `only-${key.replace(/[@/ ]+/g, "_") || "none"}`)
      writeApp(dir)
      const own = key === "" ? [] : key.split(" ")
      const installed = await npmInstall(label, dir, [
        tarballPath,
        ...requiredPeers.map((name) => `${name}@${peers[name]}`),
        ...peerSpecs(own),
        devSpec("@types/node")
      ])
      if (installed === undefined) return
      await checkTree(label, dir)
      writeFileSync(join(dir, "subpaths.ts"), subpathsModule(list, highestExports))
      const checked = await typecheck(label, dir)
      const loaded = await step(`${label}: load`, process.execPath, ["subpaths.ts"], dir, 60_000)
      if (checked !== undefined && loaded !== undefined) {
        console.log(`  ok   ${label}: ${list.map((s) => s.specifier).join(", ")} type-check and load at ${elapsed()}`)
      }
    })
  }
}

try {
  await check()
} catch (error) {
  problem(error instanceof Error ? error.stack ?? error.message : String(error))
}
finish()

function finish(): never {
  if (problems.length === 0 && !keep) rmSync(work, { recursive: true, force: true })
  else console.log(`scratch apps kept in ${work}`)
  console.log(
    problems.length === 0
      ? `consumer check passed in ${elapsed()}`
      : `consumer check failed in ${elapsed()}: ${problems.length} problem(s)`
  )
  process.exit(problems.length === 0 ? 0 : 1)
}
