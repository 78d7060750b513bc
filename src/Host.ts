/**
 * What the shutdown needs from the process it runs in: a way to exit, a
 * watchdog timer that does not keep the process alive, and the PM2 `ready`
 * message.
 *
 * The live host is the default. Tests provide `GracefulTest.layerHost` (from `effect-graceful/testing`): exits are
 * recorded instead of performed, and the watchdog runs on Effect's `Clock`,
 * so `TestClock.adjust` fires it.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as EventLoop from "./internal/base/eventLoop.ts"

/**
 * @category models
 * @since 0.1.0
 */
export interface HostService {
  /** End the process now with this code. Never returns in the live host. */
  readonly exit: (code: number) => void
  /**
   * Call `onFire` after `delayMs`, unless the scope closes first. The live
   * timer is unref'd and runs outside any fiber, so it fires even when every
   * fiber is stuck in an uninterruptible finalizer.
   */
  readonly watchdog: (delayMs: number, onFire: () => void) => Effect.Effect<void, never, Scope.Scope>
  /** Tell a process manager that the service is ready (PM2's `wait_ready`). */
  readonly notifyReady: Effect.Effect<void>
  /**
   * Call `onFire` if the process is still alive `delayMs` from now, on an
   * unref'd timer that never holds the process itself. The test host never
   * fires it: a test runner is always alive.
   */
  readonly whenStillAlive: (delayMs: number, onFire: () => void) => void
}

/**
 * The live host for a Node process.
 *
 * @example
 * ```ts
 * import { Host } from "effect-graceful"
 *
 * const host = Host.processHost(process)
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const processHost = (proc: NodeJS.Process): HostService => ({
  exit: (code) => proc.exit(code),
  watchdog: (delayMs, onFire) =>
    Effect.acquireRelease(
      Effect.sync(() => {
        const timer = setTimeout(onFire, Math.max(0, delayMs))
        timer.unref()
        return timer
      }),
      (timer) => Effect.sync(() => clearTimeout(timer))
    ).pipe(Effect.asVoid),
  notifyReady: Effect.sync(() => {
    // PM2 (and any parent with an IPC channel) waits for this with `wait_ready`.
    if (typeof proc.send === "function" && proc.connected) proc.send("ready")
  }),
  whenStillAlive: (delayMs, onFire) => void EventLoop.whenStillAlive(delayMs, onFire)
})

/**
 * The host in use. Defaults to the live process.
 *
 * @category services
 * @since 0.1.0
 */
export const Host: Context.Reference<HostService> = Context.Reference<HostService>("effect-graceful/Host", {
  defaultValue: () => processHost(process)
})
