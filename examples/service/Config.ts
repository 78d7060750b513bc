/**
 * The service's own configuration, read from the environment through
 * Effect's `Config` (the shutdown variables, `SHUTDOWN_*`, are read by the
 * library itself).
 *
 * | variable | meaning | default |
 * |---|---|---|
 * | `PORT` | port to listen on (`0`: any free port) | `3000` |
 * | `HOST` | address to listen on | `127.0.0.1` |
 * | `REUSE_PORT` | `true`: bind with `SO_REUSEPORT`, so a replacement can bind the same port while this instance drains | `false` |
 * | `LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES` | socket activation (systemd): listen on the inherited socket named `http` (or the only one) instead of `PORT`/`HOST` | unset |
 * | `LOG_FILE` | the JSONL request log, one line per completed request | `service.jsonl` |
 * | `DATABASE_URL` | a real Postgres (through `effect-graceful/Pg`) | unset: in-process PGlite |
 * | `PGLITE_DIR` | where PGlite keeps its files | unset: in memory |
 * | `REDIS_URL` | a real Redis for pub/sub (through `effect-graceful/Redis`) | unset: in-process pub/sub |
 */
import { Config, Context, Data, Effect, Layer, Option } from "effect"

/**
 * The resolved configuration.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { ServiceConfig } from "./Config.ts"
 *
 * const port = Effect.map(ServiceConfig.asEffect(), (config) => config.port)
 * ```
 */
export class ServiceConfig extends Context.Service<ServiceConfig, {
  readonly port: number
  readonly host: string
  readonly reusePort: boolean
  readonly logFile: string
  readonly databaseUrl: Option.Option<string>
  readonly pgliteDir: Option.Option<string>
  readonly redisUrl: Option.Option<string>
}>()("service/Config") {}

const nonEmpty = (name: string) =>
  Config.option(Config.String(name)).pipe(Config.map(Option.filter((value) => value !== "")))

/**
 * A value the service cannot use.
 *
 * @example
 * ```ts
 * import { InvalidConfig } from "./Config.ts"
 *
 * const error = new InvalidConfig({ variable: "PORT", value: "70000", reason: "not a port (0 to 65535)" })
 * ```
 */
export class InvalidConfig extends Data.TaggedError("InvalidConfig")<{
  readonly variable: string
  readonly value: string
  readonly reason: string
}> {
  override get message(): string {
    return `${this.variable}=${JSON.stringify(this.value)}: ${this.reason}`
  }
}

// `Config.Port` refuses 0; the tests and the demo ask for any free port.
const port = Effect.flatMap(Config.Int("PORT").pipe(Config.withDefault(3000)), (value) =>
  value >= 0 && value <= 65535
    ? Effect.succeed(value)
    : Effect.fail(new InvalidConfig({ variable: "PORT", value: String(value), reason: "not a port (0 to 65535)" })))

/** The URL with its password masked, for an error message. */
const masked = (text: string) => text.replace(/(\/\/[^:/@]*:)[^@/]*@/, "$1***@")

// A malformed URL (say a non-numeric port) is a configuration error named at
// start-up, not a connection failure to retry.
const databaseUrl = Effect.flatMap(
  nonEmpty("DATABASE_URL"),
  (value): Effect.Effect<Option.Option<string>, InvalidConfig> => {
    if (Option.isNone(value)) return Effect.succeed(value)
    try {
      const url = new URL(value.value)
      if (url.hostname === "" && !url.searchParams.has("host")) throw new Error("no host")
      return Effect.succeed(value)
    } catch {
      return Effect.fail(
        new InvalidConfig({
          variable: "DATABASE_URL",
          value: masked(value.value),
          reason: "not a valid URL (expected postgres://user:password@host:port/database, with a numeric port)"
        })
      )
    }
  }
)

/**
 * Reads the configuration once, when the layer is built; a bad value (say
 * `PORT=http`) fails the start-up before anything is acquired.
 *
 * @example
 * ```ts
 * import { Layer } from "effect"
 * import { ConfigLive } from "./Config.ts"
 *
 * declare const AppLive: Layer.Layer<never, never, import("./Config.ts").ServiceConfig>
 * const Live = AppLive.pipe(Layer.provide(ConfigLive))
 * ```
 */
export const ConfigLive = Layer.effect(
  ServiceConfig,
  Effect.gen(function*() {
    return ServiceConfig.of({
      port: yield* port,
      host: yield* Config.String("HOST").pipe(Config.withDefault("127.0.0.1")),
      reusePort: yield* Config.Boolean("REUSE_PORT").pipe(Config.withDefault(false)),
      logFile: yield* Config.String("LOG_FILE").pipe(Config.withDefault("service.jsonl")),
      databaseUrl: yield* databaseUrl,
      pgliteDir: yield* nonEmpty("PGLITE_DIR"),
      redisUrl: yield* nonEmpty("REDIS_URL")
    })
  })
)
