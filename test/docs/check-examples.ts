/**
 * Docs that cannot drift: every `@example` block in `src/` is extracted and
 * type-checked against the library as a user imports it (`effect-graceful`,
 * `effect-graceful/Pg`, ... mapped to the sources through package.json's
 * `exports`), as Effect's docgen does. Also lists public exports that have no
 * doc comment, no `@example` or no `@category`.
 *
 * Every ```ts block of every Markdown page under `docs/` is checked the same
 * way, each block as its own module. A block that is deliberately not a
 * program (a fragment, a type's shape) is marked ```ts no-check; keep those
 * rare. `docs/api/` is generated from the doc comments and skipped.
 *
 *   node test/docs/check-examples.ts            # type-check the examples
 *   node test/docs/check-examples.ts --strict   # and fail on missing docs
 */
import { execFileSync } from "node:child_process"
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { join, relative } from "node:path"

const root = join(import.meta.dirname, "..", "..")
const out = join(root, "node_modules", ".cache", "docs-examples")
const strict = process.argv.includes("--strict")

const sourceFiles = (dir: string): Array<string> =>
  readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) return entry.name === "internal" ? [] : sourceFiles(path)
    return entry.name.endsWith(".ts") ? [path] : []
  })

interface Example {
  readonly file: string
  readonly line: number
  readonly code: string
}

const examples: Array<Example> = []
const missing: Array<string> = []

for (const file of sourceFiles(join(root, "src"))) {
  const lines = readFileSync(file, "utf8").split("\n")
  let comment: Array<string> | undefined
  let commentEnd = -1
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!
    if (/^\s*\/\*\*/.test(line)) comment = []
    if (comment !== undefined) {
      comment.push(line)
      if (line.includes("*/")) {
        // Collect the ```ts blocks of this comment.
        const body = comment.map((l) => l.replace(/^\s*\/?\*+\/?\s?/, ""))
        for (let j = 0; j < body.length; j++) {
          if (/^```ts\b/.test(body[j]!)) {
            const start = j + 1
            let end = start
            while (end < body.length && !body[end]!.startsWith("```")) end++
            examples.push({ file, line: i - comment.length + 2 + start, code: body.slice(start, end).join("\n") })
            j = end
          }
        }
        commentEnd = i
        const text = comment.join("\n")
        comment = undefined
        // The declaration this comment documents.
        const next = lines[i + 1] ?? ""
        const exported = /^export (?:const|function|class|interface|type|declare) (\w+)/.exec(next)
        if (exported && !text.includes("@internal")) {
          const name = `${relative(root, file)} ${exported[1]}`
          // Functions and classes show a call; types, schemas and constants need not.
          const callable = /^export (?:function|class|const \w+(?:: \{|\s*=\s*(?:<[^>]*>)?\(|\s*=\s*dual))/.test(next)
          if (callable && !text.includes("@example")) missing.push(`${name}: no @example`)
          if (!text.includes("@category")) missing.push(`${name}: no @category`)
        }
      }
      continue
    }
    const undocumented = /^export (?:const|function|class|interface|type) (\w+)/.exec(line)
    if (undocumented && commentEnd !== i - 1) missing.push(`${relative(root, file)} ${undocumented[1]}: no doc comment`)
  }
}

const markdownFiles = (dir: string): Array<string> =>
  readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) {
      return [".vitepress", "api", "node_modules"].includes(entry.name)
        ? []
        : markdownFiles(path)
    }
    return entry.name.endsWith(".md") ? [path] : []
  })

let docsBlocks = 0
let docsSkipped = 0
for (const file of markdownFiles(join(root, "docs"))) {
  const lines = readFileSync(file, "utf8").split("\n")
  for (let i = 0; i < lines.length; i++) {
    const fence = /^```(ts|typescript)\b(.*)$/.exec(lines[i]!)
    if (fence === null) continue
    let end = i + 1
    while (end < lines.length && !lines[end]!.startsWith("```")) end++
    if (/\bno-check\b/.test(fence[2]!)) docsSkipped++
    else {
      docsBlocks++
      examples.push({ file, line: i + 2, code: lines.slice(i + 1, end).join("\n") })
    }
    i = end
  }
}

// effect-graceful and its subpaths resolve to the sources, as package.json's
// exports map them to dist.
const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as {
  exports: Record<string, { readonly default: string }>
}
const paths: Record<string, Array<string>> = {}
for (const [subpath, target] of Object.entries(pkg.exports)) {
  const specifier = subpath === "." ? "effect-graceful" : `effect-graceful/${subpath.slice(2)}`
  paths[specifier] = [join(root, target.default.replace(/^\.\/dist\//, "src/").replace(/\.js$/, ".ts"))]
}

rmSync(out, { recursive: true, force: true })
mkdirSync(out, { recursive: true })
const origin = new Map<string, Example>()
examples.forEach((example, index) => {
  const name = `${relative(root, example.file).replace(/[/.]/g, "_")}_${index}.ts`
  origin.set(name, example)
  writeFileSync(join(out, name), `${example.code}\n\nexport {}\n`)
})
writeFileSync(
  join(out, "tsconfig.json"),
  JSON.stringify(
    {
      extends: join(root, "tsconfig.json"),
      compilerOptions: { noUnusedLocals: false, noUnusedParameters: false, paths, rootDir: root, types: ["node"] },
      include: ["./*.ts"]
    },
    null,
    2
  )
)

let failed = false
try {
  execFileSync(process.execPath, [
    join(root, "node_modules", "typescript", "bin", "tsc"),
    "-p",
    join(out, "tsconfig.json")
  ], {
    cwd: out,
    encoding: "utf8",
    stdio: "pipe"
  })
} catch (error) {
  failed = true
  const output = String((error as { stdout?: string }).stdout ?? error)
  for (const line of output.split("\n")) {
    const match = /^(\S+\.ts)\((\d+),(\d+)\): (.*)$/.exec(line)
    const example = match ? origin.get(match[1]!) : undefined
    console.error(
      example && match ? `${relative(root, example.file)}:${example.line + Number(match[2]) - 1}: ${match[4]}` : line
    )
  }
}
console.log(
  `${
    examples.length - docsBlocks
  } @example blocks in src/ and ${docsBlocks} \`\`\`ts blocks in docs/ type-checked (${docsSkipped} marked no-check): ${
    failed ? "FAILED" : "ok"
  }`
)
if (missing.length > 0) {
  console.log(`${missing.length} public export(s) without complete docs${strict ? "" : " (warning; --strict fails)"}:`)
  for (const entry of missing) console.log(`  ${entry}`)
}
process.exit(failed || (strict && missing.length > 0) ? 1 : 0)
