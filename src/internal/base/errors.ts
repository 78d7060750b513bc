/**
 * @internal
 */

/** The message of an error, for logs and reports. */
export const reasonOf = (error: unknown): string => error instanceof Error ? error.message : String(error)
