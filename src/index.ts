/**
 * effect-graceful: graceful shutdown for Node services on Effect 4.
 *
 * @since 0.1.0
 */

/** @since 0.2.0 */
export * as Adapter from "./Adapter.ts"
/** @since 0.1.0 */
export * as Graceful from "./Graceful.ts"
/** @since 0.1.0 */
export * as Health from "./Health.ts"
/** @since 0.1.0 */
export * as Http from "./Http.ts"
/** @since 0.1.0 */
export * as Host from "./Host.ts"
/** @since 0.1.0 */
export * as InFlight from "./InFlight.ts"
/** @since 0.1.0 */
export * as Lifecycle from "./Lifecycle.ts"
/** @since 0.1.0 */
export * as Listen from "./Listen.ts"
/** @since 0.1.0 */
export * as Metrics from "./Metrics.ts"
/** @since 0.1.0 */
export * as PlatformCheck from "./PlatformCheck.ts"
/** @since 0.1.0 */
export * as Report from "./Report.ts"
/** @since 0.1.0 */
export * as Resource from "./Resource.ts"
/** @since 0.1.0 */
export * as ShutdownConfig from "./ShutdownConfig.ts"
/** @since 0.1.0 */
export * as Signals from "./Signals.ts"
/** @since 0.1.0 */
export * as Sse from "./Sse.ts"
/** @since 0.2.0 */
export * as Telemetry from "./Telemetry.ts"
