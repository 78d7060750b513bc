/**
 * Liveness and readiness.
 *
 * - **Liveness** (`/health/live`): 200 as long as the process runs, through
 *   the whole shutdown. A load balancer or Kubernetes must not restart a
 *   process because it is draining.
 * - **Readiness** (`/health/ready`): 200 only when the lifecycle is Ready
 *   and every readiness check passes; 503 while Starting, Draining, Closing
 *   (and later), or when a check fails or times out. The JSON body names the
 *   phase and each check's state, so a probe failure explains itself.
 *
 * Checks are Effects registered for the life of a scope (a database ping,
 * a broker connection); each runs with its own timeout on every readiness
 * probe, concurrently.
 *
 * The HTTP adapter (`effect-graceful/http`) answers the two routes on every
 * guarded server; {@link serve} puts them on a separate port.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as Http from "node:http"
import { pathOf } from "./Adapter.ts"
import { millisOr } from "./internal/base/duration.ts"
import { truncate } from "./internal/base/text.ts"
import type { LifecycleService, Phase } from "./Lifecycle.ts"
import { Lifecycle } from "./Lifecycle.ts"
import * as Listen from "./Listen.ts"

/**
 * The state of one readiness check after a probe.
 *
 * @category models
 * @since 0.1.0
 */
export interface CheckResult {
  readonly name: string
  readonly status: "pass" | "fail" | "timeout"
  readonly durationMs: number
  readonly error?: string | undefined
}

/**
 * What `/health/ready` answers.
 *
 * @category models
 * @since 0.1.0
 */
export interface Readiness {
  readonly ready: boolean
  readonly phase: Phase
  readonly checks: ReadonlyArray<CheckResult>
}

interface Check {
  readonly name: string
  readonly check: Effect.Effect<unknown, unknown>
  readonly timeoutMs: number
}

/**
 * @category models
 * @since 0.1.0
 */
export interface HealthService {
  /**
   * Register a readiness check for the life of the scope. The check runs
   * with the services of the fiber that added it (a database client, say).
   */
  readonly addCheck: <R = never>(
    name: string,
    check: Effect.Effect<unknown, unknown, R>,
    options?: { readonly timeout?: Duration.Input | undefined }
  ) => Effect.Effect<void, never, Scope.Scope | R>
  /** Run every check (concurrently, each with its timeout) and combine with the phase. */
  readonly readiness: Effect.Effect<Readiness>
}

/**
 * The registry of readiness checks. Provided by `Graceful.run`.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Health } from "effect-graceful"
 *
 * const program = Effect.gen(function*() {
 *   const health = yield* Health.Health
 *   const { ready, checks } = yield* health.readiness
 * })
 * ```
 *
 * @category services
 * @since 0.1.0
 */
export class Health extends Context.Service<Health, HealthService>()("effect-graceful/Health") {}

/**
 * The timeout of a check that does not say, in milliseconds.
 *
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_CHECK_TIMEOUT_MS = 1_000

/**
 * Creates the registry for a lifecycle.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Health, Lifecycle } from "effect-graceful"
 *
 * const make = Effect.gen(function*() {
 *   const lifecycle = yield* Lifecycle.Lifecycle
 *   return yield* Health.make(lifecycle)
 * })
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = (lifecycle: LifecycleService): Effect.Effect<HealthService> =>
  Effect.map(Effect.context<never>(), (context): HealthService => {
    // Probes arrive on plain Node callbacks: run the checks with the
    // program's services (its clock, its logger), not the default ones.
    const checks: Array<Check> = []
    const runCheck = (check: Check) =>
      Effect.gen(function*() {
        const started = yield* Clock.currentTimeMillis
        const result = yield* check.check.pipe(Effect.timeoutOption(check.timeoutMs), Effect.exit)
        const durationMs = (yield* Clock.currentTimeMillis) - started
        if (Exit.isFailure(result)) {
          // The detail goes to the logs; the probe's answer may leave it out.
          yield* Effect.logWarning(`readiness check ${check.name} failed`, result.cause)
          return { name: check.name, status: "fail", durationMs, error: errorText(result.cause) } as const
        }
        if (Option.isNone(result.value)) {
          return {
            name: check.name,
            status: "timeout",
            durationMs,
            error: `no answer within ${check.timeoutMs} ms`
          } as const
        }
        return { name: check.name, status: "pass", durationMs } as const
      })
    return {
      addCheck: <R>(
        name: string,
        check: Effect.Effect<unknown, unknown, R>,
        options?: { readonly timeout?: Duration.Input | undefined }
      ) =>
        Effect.acquireRelease(
          Effect.map(Effect.context<R>(), (checkContext) => {
            const entry: Check = {
              name,
              // Probes arrive long after this fiber: keep its services.
              check: Effect.provideContext(check, checkContext),
              timeoutMs: millisOr(options?.timeout, Duration.millis(DEFAULT_CHECK_TIMEOUT_MS))
            }
            checks.push(entry)
            return entry
          }),
          (entry) => Effect.sync(() => void checks.splice(checks.indexOf(entry), 1))
        ).pipe(Effect.asVoid),
      readiness: Effect.gen(function*() {
        const phase = lifecycle.phaseUnsafe()
        // While not Ready the answer is 503 whatever the checks say; do not
        // load a dependency that is shutting down with probes.
        if (phase !== "Ready") return { ready: false, phase, checks: [] }
        const results = yield* Effect.forEach([...checks], runCheck, { concurrency: "unbounded" })
        return { ready: results.every((r) => r.status === "pass"), phase, checks: results }
      }).pipe(Effect.provideContext(context))
    }
  })

const errorText = (cause: unknown): string => truncate(String(cause), 200)

/**
 * Register a readiness check for the life of the current scope.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Health } from "effect-graceful"
 *
 * declare const ping: Effect.Effect<void, Error>
 *
 * const program = Effect.gen(function*() {
 *   yield* Health.addCheck("database", ping, { timeout: "500 millis" })
 * })
 * ```
 *
 * @category accessors
 * @since 0.1.0
 */
export const addCheck = <R = never>(
  name: string,
  check: Effect.Effect<unknown, unknown, R>,
  options?: { readonly timeout?: Duration.Input | undefined }
): Effect.Effect<void, never, Health | Scope.Scope | R> => Health.use((health) => health.addCheck(name, check, options))

/**
 * Paths the health routes answer on.
 *
 * @category models
 * @since 0.1.0
 */
export interface Paths {
  readonly live: string
  readonly ready: string
}

/**
 * The default paths: `/health/live` and `/health/ready`.
 *
 * @category constants
 * @since 0.1.0
 */
export const defaultPaths: Paths = { live: "/health/live", ready: "/health/ready" }

const send = (response: Http.ServerResponse, status: number, body: unknown, head: boolean) => {
  const text = JSON.stringify(body)
  response.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
    "cache-control": "no-store"
  })
  response.end(head ? undefined : text)
}

/**
 * Options of {@link nodeHandler} and {@link serve}.
 *
 * @example
 * ```ts
 * import type { Health } from "effect-graceful"
 *
 * const options: Health.NodeHandlerOptions = { detail: true }
 * ```
 *
 * @category models
 * @since 0.2.0
 */
export interface NodeHandlerOptions {
  /**
   * Whether `/health/ready` names each failing check's error text (which
   * may hold a host, a port, a message from a driver). Default `false`:
   * check names, states and durations only. The error is logged either way.
   */
  readonly detail?: boolean | undefined
}

const withoutDetail = (check: CheckResult): CheckResult => ({
  name: check.name,
  status: check.status,
  durationMs: check.durationMs
})

/**
 * A health route's answer: its status and JSON body.
 *
 * @example
 * ```ts
 * import type { Health } from "effect-graceful"
 *
 * const answer: Health.Answer = { status: 200, body: { status: "ok", phase: "Ready" } }
 * ```
 *
 * @category models
 * @since 0.3.0
 */
export interface Answer {
  readonly status: number
  readonly body: unknown
}

/**
 * The health routes for any server: given a request's method and URL,
 * `undefined` when it is not a GET or HEAD on one of the paths (let it
 * through), otherwise the Effect of its answer. `Health.nodeHandler` and the
 * Bun server's guard both answer through it.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Health, Lifecycle } from "effect-graceful"
 *
 * const program = Effect.gen(function*() {
 *   const answer = Health.answer(yield* Health.Health, yield* Lifecycle.Lifecycle)
 *   const ready = answer("GET", "/health/ready")
 *   if (ready !== undefined) {
 *     const { status } = yield* ready
 *   }
 * })
 * ```
 *
 * @category constructors
 * @since 0.3.0
 */
export const answer = (
  health: HealthService,
  lifecycle: LifecycleService,
  paths: Paths = defaultPaths,
  options: NodeHandlerOptions = {}
) =>
(method: string, url: string | undefined): Effect.Effect<Answer> | undefined => {
  if (method !== "GET" && method !== "HEAD") return undefined
  const path = pathOf(url)
  if (path === paths.live) {
    return Effect.sync(() => ({ status: 200, body: { status: "ok", phase: lifecycle.phaseUnsafe() } }))
  }
  if (path !== paths.ready) return undefined
  return Effect.map(health.readiness, (readiness) => ({
    status: readiness.ready ? 200 : 503,
    body: {
      status: readiness.ready ? "ready" : "not ready",
      phase: readiness.phase,
      checks: options.detail === true ? readiness.checks : readiness.checks.map(withoutDetail)
    }
  }))
}

/**
 * A Node request handler for the health routes. Returns `true` when it
 * answered the request (a GET or HEAD on one of the paths), `false` to let
 * the request through.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import * as http from "node:http"
 * import { Health, Lifecycle } from "effect-graceful"
 *
 * const program = Effect.gen(function*() {
 *   const handle = Health.nodeHandler(yield* Health.Health, yield* Lifecycle.Lifecycle)
 *   http.createServer((req, res) => {
 *     if (!handle(req, res)) res.end("app")
 *   })
 * })
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const nodeHandler = (
  health: HealthService,
  lifecycle: LifecycleService,
  paths: Paths = defaultPaths,
  options: NodeHandlerOptions = {}
) => {
  const answerOf = answer(health, lifecycle, paths, options)
  return (request: Http.IncomingMessage, response: Http.ServerResponse): boolean => {
    const answered = answerOf(request.method ?? "GET", request.url)
    if (answered === undefined) return false
    const head = request.method === "HEAD"
    Effect.runFork(Effect.tap(answered, ({ body, status }) =>
      Effect.sync(() => {
        if (!response.writableEnded && !response.destroyed) send(response, status, body, head)
      })))
    return true
  }
}

/**
 * Serves the health routes on a separate port for the life of the scope
 * (for probes that must not share the application's port). The server stays
 * up through the whole shutdown: liveness is 200 until the process exits.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Health } from "effect-graceful"
 *
 * const program = Effect.gen(function*() {
 *   const { port } = yield* Health.serve({ port: 9000, host: "127.0.0.1" })
 * })
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const serve = (
  options: {
    readonly port: number
    readonly host?: string | undefined
    readonly paths?: Paths | undefined
    /** Listen on the inherited socket of this name when socket-activated. Default `"health"`. */
    readonly fdName?: string | undefined
    /** Whether `/health/ready` names each failing check's error text (a separate port may). Default `false`. */
    readonly detail?: boolean | undefined
  }
): Effect.Effect<{ readonly port: number }, Error, Health | Lifecycle | Scope.Scope> =>
  Effect.gen(function*() {
    // Socket activation: only a socket named for it (never the HTTP server's).
    const listenOptions = yield* Listen.resolve<Listen.ListenOptions>(
      { port: options.port, host: options.host },
      { fdName: options.fdName ?? "health", takeSole: false }
    )
    const handle = nodeHandler(yield* Health, yield* Lifecycle, options.paths, { detail: options.detail })
    const server = Http.createServer((request, response) => {
      if (!handle(request, response)) {
        response.writeHead(404, { "content-length": 0 })
        response.end()
      }
    })
    const port = yield* Effect.acquireRelease(
      Effect.callback<number, Error>((resume) => {
        server.once("error", (error) => resume(Effect.fail(error)))
        const onListening = () => {
          const address = server.address()
          resume(Effect.succeed(typeof address === "object" && address !== null ? address.port : options.port))
        }
        if (listenOptions.fd !== undefined) server.listen({ fd: listenOptions.fd }, onListening)
        else server.listen(listenOptions, onListening)
      }),
      () =>
        Effect.sync(() => {
          server.close()
          server.closeAllConnections()
        })
    )
    return { port }
  })
