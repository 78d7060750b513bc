import { wireSuite } from "./wire-suite.ts"

wireSuite("Fastify 5 on a plain http.Server", "http-plain.ts", { FIXTURE_FRAMEWORK: "fastify" })
