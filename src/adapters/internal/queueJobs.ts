/**
 * What the job-queue adapters (`BullMQ`, `PgBoss`) share: a job handler run
 * as an item of the in-flight set, so the drain waits for it and a cut
 * names it.
 *
 * @internal
 */
import type * as Exit from "effect/Exit"
import type * as Fiber from "effect/Fiber"
import type { InFlightRegistryService, Item } from "../../Adapter.ts"

/**
 * One job being processed, as the in-flight set holds it. Its label names
 * the queue, the job id and the job's name; the report adds its age.
 */
export class JobItem implements Item {
  readonly kind = "job"
  readonly reportCut = true
  startedAt = 0
  /** Set once the set interrupted the job at the drain deadline. */
  cut = false
  fiber: Fiber.Fiber<unknown, unknown> | undefined = undefined
  readonly queue: string
  readonly id: string
  readonly jobName: string
  constructor(queue: string, id: string, jobName: string) {
    this.queue = queue
    this.id = id
    this.jobName = jobName
  }
  get label(): string {
    return this.jobName === "" || this.jobName === this.queue
      ? `${this.queue} ${this.id}`
      : `${this.queue} ${this.id} ${this.jobName}`
  }
  interrupt(): void {
    this.cut = true
    this.fiber?.interruptUnsafe()
  }
}

/**
 * Starts the job's fiber as `item` in the in-flight set and resolves with its exit,
 * or with `undefined` when the set is already closed (the job arrived after
 * the cut; the set recorded it as cut): the caller hands such a job back
 * without running it.
 */
export const runTracked = <A, E>(
  registry: InFlightRegistryService,
  item: JobItem,
  start: () => Fiber.Fiber<A, E>
): Promise<Exit.Exit<A, E> | undefined> => {
  if (!registry.addUnsafe(item)) return Promise.resolve(undefined)
  const fiber = start()
  item.fiber = fiber
  return new Promise((resolve) => {
    fiber.addObserver((exit) => {
      registry.removeUnsafe(item)
      resolve(exit)
    })
  })
}
