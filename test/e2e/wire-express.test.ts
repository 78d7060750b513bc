import { wireSuite } from "./wire-suite.ts"

wireSuite("Express 5 on a plain http.Server", "http-plain.ts", { FIXTURE_FRAMEWORK: "express" })
