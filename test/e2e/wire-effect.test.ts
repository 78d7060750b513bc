import { wireSuite } from "./wire-suite.ts"

wireSuite("Effect HttpServer", "http-effect.ts")
