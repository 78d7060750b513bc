import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect, Option } from "effect"
import { Listen } from "../src/index.ts"

const withEnv = (env: Record<string, string>) => Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env })))
const pid = String(process.pid)

describe("Listen", () => {
  describe("inheritedSockets (sd_listen_fds)", () => {
    it.effect("none without the variables", () =>
      Effect.gen(function*() {
        expect(yield* Listen.inheritedSockets.pipe(withEnv({}))).toEqual([])
        expect(yield* Listen.inheritedSockets.pipe(withEnv({ LISTEN_FDS: "1" }))).toEqual([])
      }))

    it.effect("descriptors from 3 on, named by LISTEN_FDNAMES", () =>
      Effect.gen(function*() {
        const sockets = yield* Listen.inheritedSockets.pipe(
          withEnv({ LISTEN_PID: pid, LISTEN_FDS: "2", LISTEN_FDNAMES: "health:http" })
        )
        expect(sockets).toEqual([
          { _tag: "Inherited", fd: 3, name: "health" },
          { _tag: "Inherited", fd: 4, name: "http" }
        ])
        const unnamed = yield* Listen.inheritedSockets.pipe(withEnv({ LISTEN_PID: pid, LISTEN_FDS: "1" }))
        expect(unnamed).toEqual([{ _tag: "Inherited", fd: 3, name: undefined }])
      }))

    it.effect("ignored when LISTEN_PID names another process", () =>
      Effect.gen(function*() {
        const sockets = yield* Listen.inheritedSockets.pipe(
          withEnv({ LISTEN_PID: String(process.pid + 1), LISTEN_FDS: "1", LISTEN_FDNAMES: "http" })
        )
        expect(sockets).toEqual([])
      }))

    it.effect("nonsense fails, naming the variable", () =>
      Effect.gen(function*() {
        const count = yield* Listen.inheritedSockets.pipe(withEnv({ LISTEN_PID: pid, LISTEN_FDS: "two" }), Effect.flip)
        expect(count.message).toBe(`LISTEN_FDS="two": not a non-negative integer`)
        const names = yield* Listen.inheritedSockets.pipe(
          withEnv({ LISTEN_PID: pid, LISTEN_FDS: "2", LISTEN_FDNAMES: "http" }),
          Effect.flip
        )
        expect(names.variable).toBe("LISTEN_FDNAMES")
      }))
  })

  describe("inherited: which socket a server takes", () => {
    const two = { LISTEN_PID: pid, LISTEN_FDS: "2", LISTEN_FDNAMES: "health:http" }
    it.effect("by name", () =>
      Effect.gen(function*() {
        expect(yield* Listen.inherited().pipe(withEnv(two))).toEqual(
          Option.some({ _tag: "Inherited", fd: 4, name: "http" })
        )
        expect(yield* Listen.inherited({ fdName: "health", takeSole: false }).pipe(withEnv(two))).toEqual(
          Option.some({ _tag: "Inherited", fd: 3, name: "health" })
        )
        expect(yield* Listen.inherited({ fdName: "metrics" }).pipe(withEnv(two))).toEqual(Option.none())
      }))

    it.effect("the only socket, whatever its name, unless takeSole is false", () =>
      Effect.gen(function*() {
        const one = { LISTEN_PID: pid, LISTEN_FDS: "1", LISTEN_FDNAMES: "effect-graceful-example.socket" }
        expect(Option.map(yield* Listen.inherited().pipe(withEnv(one)), (s) => s.fd)).toEqual(Option.some(3))
        expect(yield* Listen.inherited({ fdName: "health", takeSole: false }).pipe(withEnv(one))).toEqual(Option.none())
      }))
  })

  describe("fromEnvironment", () => {
    it.effect("PORT, HOST and REUSE_PORT over the defaults", () =>
      Effect.gen(function*() {
        expect(yield* Listen.fromEnvironment({ port: 3000, host: "127.0.0.1" }).pipe(withEnv({}))).toEqual({
          _tag: "Port",
          port: 3000,
          host: "127.0.0.1",
          reusePort: false
        })
        expect(
          yield* Listen.fromEnvironment({ port: 3000 }).pipe(
            withEnv({ PORT: "8080", HOST: "0.0.0.0", REUSE_PORT: "true" })
          )
        ).toEqual({ _tag: "Port", port: 8080, host: "0.0.0.0", reusePort: true })
      }))

    it.effect("the inherited socket wins over PORT", () =>
      Effect.gen(function*() {
        const target = yield* Listen.fromEnvironment({ port: 3000 }).pipe(
          withEnv({ PORT: "8080", LISTEN_PID: pid, LISTEN_FDS: "1" })
        )
        expect(target).toEqual({ _tag: "Inherited", fd: 3, name: undefined })
        expect(Listen.toListenOptions(target)).toEqual({ fd: 3 })
      }))

    it.effect("a bad PORT or REUSE_PORT fails", () =>
      Effect.gen(function*() {
        expect((yield* Listen.fromEnvironment().pipe(withEnv({ PORT: "70000" }), Effect.flip)).variable).toBe("PORT")
        expect((yield* Listen.fromEnvironment().pipe(withEnv({ REUSE_PORT: "maybe" }), Effect.flip)).variable).toBe(
          "REUSE_PORT"
        )
      }))
  })

  describe("resolve", () => {
    it.effect("replaces port, host and reusePort by the inherited descriptor, keeps the rest", () =>
      Effect.gen(function*() {
        const options = yield* Listen.resolve({ port: 3000, host: "127.0.0.1", reusePort: true, backlog: 1024 }).pipe(
          withEnv({ LISTEN_PID: pid, LISTEN_FDS: "1", LISTEN_FDNAMES: "http" })
        )
        expect(options).toEqual({ fd: 3, backlog: 1024 })
      }))

    it.effect("leaves options alone without socket activation, or when they name a descriptor or path", () =>
      Effect.gen(function*() {
        const activated = withEnv({ LISTEN_PID: pid, LISTEN_FDS: "1" })
        expect(yield* Listen.resolve({ port: 3000 }).pipe(withEnv({}))).toEqual({ port: 3000 })
        expect(yield* Listen.resolve({ path: "/run/app.sock" }).pipe(activated)).toEqual({ path: "/run/app.sock" })
        expect(yield* Listen.resolve({ fd: 7 }).pipe(activated)).toEqual({ fd: 7 })
      }))
  })
})
