/**
 * Text as the library shows it in logs, reports and health answers.
 *
 * @internal
 */

/** `text` cut to at most `chars` characters, marked `…` when cut. */
export const truncate = (text: string, chars: number): string =>
  text.length <= chars ? text : `${text.slice(0, chars)}…`
