/**
 * The wire suite (docs/design.md#wire-behaviours) against the same Effect
 * app on Bun: `BunHttp.layer` on `Bun.serve`, run by Bun's binary.
 */
import { existsSync } from "node:fs"
import { expect, it } from "vitest"
import { bunBin } from "./harness.ts"
import { wireSuite } from "./wire-suite.ts"

it("Bun is installed (as .ci/run does)", () => {
  expect(existsSync(bunBin), `${bunBin}: install it with npm install --prefix /tmp/bun2 @oven/bun-linux-x64@1.4.4`).toBe(
    true
  )
})

wireSuite("Effect HttpServer on Bun", "http-effect-bun.ts", {}, {
  runtime: bunBin,
  without: {
    tls: "the Bun fixture serves plain HTTP"
  }
})
