/**
 * An existing Express app. `before.ts` is as it was: SIGTERM kills it at
 * once and every request in flight is dropped. `main.ts` is the same app
 * made graceful with `Http.serveNode`: `diff -u before.ts main.ts`.
 */
import { Effect, Layer } from "effect"
import { Graceful, Http } from "effect-graceful"
import express from "express"
import * as http from "node:http"

const port = Number(process.env.PORT ?? 3000)
const host = process.env.HOST ?? "127.0.0.1"
// LOG_LEVEL=Debug: each /work request's start is logged (`work started ms=N`).

const app = express()
app.use(express.json())
app.get("/work", (req, res) => {
  const ms = Number(req.query.ms ?? 0)
  if (process.env.LOG_LEVEL === "Debug") console.debug(`work started ms=${ms}`)
  setTimeout(() => res.json({ ok: true, ms }), ms)
})
app.post("/echo", (req, res) => {
  res.json(req.body)
})

Graceful.runMain(Layer.effectDiscard(Effect.gen(function*() {
  const { port: bound } = yield* Http.serveNode(() => http.createServer(app), { port, host })
  console.log(`listening on http://${host}:${bound}`)
})))
