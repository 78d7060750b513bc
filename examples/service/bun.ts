/**
 * The example service on Bun: `bun examples/service/bun.ts`. The same
 * service as main.ts (App.ts), its API on `Bun.serve` through
 * `effect-graceful/BunHttp`, run by `BunRuntime.runMain`.
 */
import { BunRuntime } from "@effect/platform-bun"
import * as BunHttp from "../../src/adapters/BunHttp.ts"
import * as Graceful from "../../src/Graceful.ts"
import type { ServerLayer } from "./Api.ts"
import { launch } from "./App.ts"

// Socket activation (LISTEN_FDS) is Node-only (see docs/guide/bun.md); REUSE_PORT is Bun.serve's reusePort.
const bunServer: ServerLayer = (config) =>
  BunHttp.layer({ port: config.port, hostname: config.host, reusePort: config.reusePort })

launch(bunServer).pipe(BunRuntime.runMain({ teardown: Graceful.teardown }))
