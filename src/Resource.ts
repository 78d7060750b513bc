/**
 * A named scoped resource whose release is part of the shutdown.
 *
 * Acquire it like any scoped resource; its release then waits for the
 * Releasing phase (so it never runs while requests still use it), runs within
 * its own deadline carved from what is left of the budget, and is recorded in
 * the shutdown report as released, failed, timed out or skipped. Releases run
 * in reverse acquisition order across the whole layer graph, because they are
 * ordinary scope finalizers; one that fails or times out is logged and the
 * rest still run.
 *
 * @since 0.1.0
 */
import type * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import { releaseRegistry } from "./Adapter.ts"
import type { Lifecycle } from "./Lifecycle.ts"

/**
 * Options for a managed resource.
 *
 * @category models
 * @since 0.1.0
 */
export interface ResourceOptions {
  /** The release's own deadline. It is further bounded by the budget. */
  readonly timeout?: Duration.Input | undefined
}

/**
 * Acquires a resource and registers its named, budgeted release in the
 * current scope.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Resource } from "effect-graceful"
 *
 * const pool = Resource.make(
 *   "db pool",
 *   Effect.sync(() => ({ end: () => Promise.resolve() })),
 *   (pool) => Effect.promise(() => pool.end()),
 *   { timeout: "5 seconds" }
 * )
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = <A, E, R, R2 = never>(
  name: string,
  acquire: Effect.Effect<A, E, R>,
  release: (resource: A, exit: Exit.Exit<unknown, unknown>) => Effect.Effect<unknown, unknown, R2>,
  options?: ResourceOptions
): Effect.Effect<A, E, R | R2 | Lifecycle | Scope.Scope> =>
  Effect.gen(function*() {
    const registry = yield* releaseRegistry
    const context = yield* Effect.context<R2>()
    return yield* Effect.acquireRelease(
      Effect.flatMap(registry.acquire(name, acquire), (resource) =>
        Effect.map(registry.register(name, { timeout: options?.timeout }), (runRelease) => ({ resource, runRelease }))),
      ({ resource, runRelease }, exit) =>
        runRelease(release(resource, exit).pipe(Effect.asVoid, Effect.provideContext(context)), exit)
    ).pipe(Effect.map(({ resource }) =>
      resource
    ))
  })

/**
 * Registers a named, budgeted finalizer in the current scope.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Resource } from "effect-graceful"
 *
 * const program = Effect.gen(function*() {
 *   yield* Resource.addFinalizer("flush metrics", Effect.log("flushed"), { timeout: "1 second" })
 * })
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const addFinalizer = <R = never>(
  name: string,
  release: Effect.Effect<unknown, unknown, R>,
  options?: ResourceOptions
): Effect.Effect<void, never, R | Lifecycle | Scope.Scope> => make(name, Effect.void, () => release, options)

/**
 * A named resource as a `Layer`: acquired when the layer is built, released
 * (within its deadline, in reverse order) when the program shuts down.
 *
 * @example
 * ```ts
 * import { Context, Effect } from "effect"
 * import { Resource } from "effect-graceful"
 *
 * class Db extends Context.Service<Db, { readonly query: (sql: string) => Effect.Effect<unknown> }>()("Db") {}
 *
 * const DbLive = Resource.layer(Db, "db", {
 *   acquire: Effect.sync(() => Db.of({ query: () => Effect.void })),
 *   release: () => Effect.log("pool ended"),
 *   timeout: "5 seconds"
 * })
 * ```
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = <I, S, E, R, R2 = never>(
  tag: Context.Key<I, S>,
  name: string,
  options: {
    readonly acquire: Effect.Effect<S, E, R>
    readonly release: (resource: S, exit: Exit.Exit<unknown, unknown>) => Effect.Effect<unknown, unknown, R2>
    readonly timeout?: Duration.Input | undefined
  }
): Layer.Layer<I, E, Exclude<R | R2 | Lifecycle, Scope.Scope>> =>
  Layer.effect(tag, make(name, options.acquire, options.release, { timeout: options.timeout }))
