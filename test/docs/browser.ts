/**
 * The docs site checked in a real browser: builds it (`npm run docs:build`),
 * serves docs/.vitepress/dist with `vitepress preview` on a free port, and
 * drives Debian's headless Chromium (/usr/bin/chromium, installed with apt
 * when missing; never a browser download) through playwright-core:
 *
 * - every page in the build renders (an `h1`) without a console error or a
 *   failed request;
 * - every internal link resolves to a built page, and every `#anchor` on it
 *   to an element with that id;
 * - local search finds `SHUTDOWN_TIMEOUT`;
 * - a screenshot of the home page is saved to test-results/docs-home.png.
 *
 *   node test/docs/browser.ts            # build, then check
 *   node test/docs/browser.ts --no-build # check the last build
 */
import { execFileSync, spawn } from "node:child_process"
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from "node:fs"
import * as Net from "node:net"
import { tmpdir } from "node:os"
import { join, relative } from "node:path"
import { chromium } from "playwright-core"

const root = join(import.meta.dirname, "..", "..")
const dist = join(root, "docs", ".vitepress", "dist")
const started = Date.now()
const elapsed = () => `${((Date.now() - started) / 1000).toFixed(1)} s`

if (!existsSync("/usr/bin/chromium")) {
  console.log("installing Debian's chromium (apt-get)")
  execFileSync("apt-get", ["install", "-y", "--no-install-recommends", "chromium"], { stdio: "inherit" })
}
if (!process.argv.includes("--no-build")) {
  execFileSync("npm", ["run", "docs:build"], { cwd: root, stdio: "inherit" })
  console.log(`built at ${elapsed()}`)
}

const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const server = Net.createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      server.close(
        () => (typeof address === "object" && address !== null ? resolve(address.port) : reject(new Error("no port")))
      )
    })
  })

const port = await freePort()
const preview = spawn(process.execPath, [
  join(root, "node_modules", "vitepress", "bin", "vitepress.js"),
  "preview",
  "docs",
  "--port",
  String(port)
], {
  cwd: root,
  stdio: ["ignore", "pipe", "pipe"]
})
const base = `http://localhost:${port}`
// Serving is a fact the preview server prints (its URL).
await new Promise<void>((resolve, reject) => {
  let output = ""
  const onData = (chunk: Buffer) => {
    output += chunk.toString()
    if (output.includes(`:${port}`)) resolve()
  }
  preview.stdout.on("data", onData)
  preview.stderr.on("data", onData)
  preview.once("exit", () => reject(new Error(`vitepress preview exited:\n${output}`)))
})

const pages = (dir: string): Array<string> =>
  readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) return entry.name === "assets" ? [] : pages(path)
    if (!entry.name.endsWith(".html") || entry.name === "404.html") return []
    return ["/" + relative(dist, path).replace(/(^|\/)index\.html$/, "$1").replace(/\.html$/, "")]
  })

const profile = mkdtempSync(join(tmpdir(), "docs-chromium-"))
// A fresh profile: playwright takes it as the persistent context's user-data-dir.
const context = await chromium.launchPersistentContext(profile, {
  executablePath: "/usr/bin/chromium",
  viewport: { width: 1280, height: 900 },
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync"
  ]
})
const problems: Array<string> = []
let duplicateAnchors = 0
try {
  const page = await context.newPage()
  let current = ""
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`${current}: console error: ${message.text()}`)
  })
  page.on("pageerror", (error) => problems.push(`${current}: page error: ${error.message}`))
  page.on("requestfailed", (request) => {
    // A prefetch aborted by the next navigation is not a failure.
    if (request.url().startsWith(base) && request.failure()?.errorText !== "net::ERR_ABORTED") {
      problems.push(`${current}: request failed: ${request.url()}`)
    }
  })
  page.on("response", (response) => {
    if (response.url().startsWith(base) && response.status() >= 400) {
      problems.push(`${current}: ${response.status()} ${response.url()}`)
    }
  })

  const all = pages(dist)
  const known = new Set(all)
  const anchors = new Map<string, Set<string>>()
  const links: Array<{ readonly from: string; readonly path: string; readonly hash: string }> = []
  for (const path of all) {
    current = path
    await page.goto(base + path, { waitUntil: "networkidle" })
    if ((await page.locator("h1").count()) === 0) problems.push(`${path}: no h1 rendered`)
    anchors.set(path, new Set(await page.$$eval("[id]", (elements) => elements.map((e) => e.id))))
    for (const href of await page.$$eval("a[href]", (elements) => elements.map((e) => e.getAttribute("href") ?? ""))) {
      if (/^[a-z]+:/i.test(href) && !href.startsWith(base)) continue
      const url = new URL(href, base + path)
      if (url.origin !== base) continue
      if (/\.(svg|png|json|txt)$/.test(url.pathname)) continue
      links.push({
        from: path,
        path: decodeURI(url.pathname).replace(/\.html$/, "").replace(/\/index$/, "/"),
        hash: decodeURIComponent(url.hash.slice(1))
      })
    }
  }
  for (const link of links) {
    if (!known.has(link.path)) problems.push(`${link.from}: link to ${link.path}, which is no page`)
    // Known gap: TypeDoc's Markdown links a name declared twice (a type and a value) to `#name-2`, which
    // VitePress does not emit; those are counted, not failed.
    else if (link.path.startsWith("/api/") && /-\d+$/.test(link.hash) && !anchors.get(link.path)!.has(link.hash)) {
      duplicateAnchors++
    } else if (link.hash !== "" && !anchors.get(link.path)!.has(link.hash)) {
      problems.push(`${link.from}: link to ${link.path}#${link.hash}: no such anchor`)
    }
  }
  console.log(
    `${all.length} pages rendered, ${links.length} internal links checked at ${elapsed()} (${duplicateAnchors} TypeDoc links to a twice-declared name's "-N" anchor not resolved)`
  )

  current = "search"
  await page.goto(base + "/", { waitUntil: "networkidle" })
  mkdirSync(join(root, "test-results"), { recursive: true })
  await page.screenshot({ path: join(root, "test-results", "docs-home.png"), fullPage: true })
  await page.locator(".DocSearch-Button, .VPNavBarSearchButton").first().click()
  await page.locator("input.search-input, #localsearch-input").first().fill("SHUTDOWN_TIMEOUT")
  const hits = page.locator(".result")
  // The index loads on the first query: wait for the first result (bounded), not a fixed time.
  await hits.first().waitFor({ timeout: 30_000 }).catch(() => undefined)
  const count = await hits.count()
  if (count === 0) problems.push("search: SHUTDOWN_TIMEOUT found nothing")
  else console.log(`search: SHUTDOWN_TIMEOUT found ${count} results`)
} finally {
  await context.close()
  preview.kill("SIGTERM")
  rmSync(profile, { recursive: true, force: true })
}
for (const problem of problems) console.error(`  ${problem}`)
console.log(
  `docs browser check: ${
    problems.length === 0 ? "ok" : `${problems.length} problem(s)`
  } in ${elapsed()}; screenshot test-results/docs-home.png`
)
process.exit(problems.length === 0 ? 0 : 1)
