/**
 * The example service on Node. Run it with `npm start` (or
 * `node examples/service/main.ts`), stop it with Ctrl-C or SIGTERM. The
 * composition (what is acquired, in which order) is in App.ts; bun.ts runs
 * the same service on Bun.
 */
import { NodeRuntime } from "@effect/platform-node"
import * as Graceful from "../../src/Graceful.ts"
import { nodeServer } from "./Api.ts"
import { launch } from "./App.ts"

launch(nodeServer).pipe(NodeRuntime.runMain({ teardown: Graceful.teardown }))
