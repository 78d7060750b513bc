/**
 * @internal
 */
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import type { Lifecycle } from "../../Lifecycle.ts"
import * as Resource from "../../Resource.ts"

/**
 * Builds `layer` in a scope of its own and closes that scope as a named,
 * budgeted release (in reverse acquisition order with everything else,
 * within its deadline, recorded in the report).
 */
export const managedLayer = <ROut, E, RIn>(
  layer: Layer.Layer<ROut, E, RIn>,
  name: string,
  timeout: Duration.Input | undefined
): Layer.Layer<ROut, E, RIn | Lifecycle> =>
  Layer.effectContext(
    Resource.make(
      name,
      Effect.gen(function*() {
        const scope = yield* Scope.make()
        const context = yield* Layer.buildWithScope(layer, scope).pipe(
          Effect.onExit((exit) => Exit.isFailure(exit) ? Scope.close(scope, exit) : Effect.void)
        )
        return { scope, context }
      }),
      ({ scope }, exit) => Scope.close(scope, exit),
      { timeout }
    ).pipe(Effect.map(({ context }) => context))
  )
