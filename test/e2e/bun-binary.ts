/**
 * Bun's binary for the end-to-end suite, where a fresh checkout has none:
 * BUN_BIN when set (.ci/run sets it), otherwise the npm package
 * `@oven/bun-linux-x64` installed on first use into node_modules/.cache
 * (about 10 s once; pinned: 1.4.5's package ships no binary). Runs as the
 * suite's global setup, so every test file sees BUN_BIN.
 */
import { execFileSync } from "node:child_process"
import { existsSync } from "node:fs"
import { join, resolve } from "node:path"

export const BUN_VERSION = "1.4.4"

const cache = resolve(import.meta.dirname, "..", "..", "node_modules", ".cache", `bun-${BUN_VERSION}`)
const cached = join(cache, "node_modules", "@oven", "bun-linux-x64", "bin", "bun")

export default function setup(): void {
  if (process.env.BUN_BIN !== undefined && process.env.BUN_BIN !== "") return
  if (!existsSync(cached)) {
    if (process.platform !== "linux" || process.arch !== "x64") {
      throw new Error(`the e2e suite runs Bun ${BUN_VERSION} from npm for linux-x64 only; set BUN_BIN to a Bun binary`)
    }
    execFileSync(
      "npm",
      ["install", "--no-audit", "--no-fund", "--no-save", "--prefix", cache, `@oven/bun-linux-x64@${BUN_VERSION}`],
      { stdio: "inherit", timeout: 180_000 }
    )
  }
  process.env.BUN_BIN = cached
}
