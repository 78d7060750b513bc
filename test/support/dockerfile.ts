/**
 * A Dockerfile as Docker reads its instructions: line continuations joined,
 * comments and blank lines dropped. Shared by the deploy recipe checks
 * (test/deploy.test.ts) and the platform tests that build it
 * (test/e2e/platform-docker.test.ts).
 */

export interface Instruction {
  /** The instruction, upper-cased: `CMD`, `ENV`, ... */
  readonly op: string
  readonly args: string
}

export const instructionsOf = (dockerfile: string): ReadonlyArray<Instruction> =>
  dockerfile
    .replace(/\\\n/g, " ")
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line !== "" && !line.startsWith("#"))
    .map((line) => {
      const space = line.indexOf(" ")
      return { op: line.slice(0, space).toUpperCase(), args: line.slice(space + 1).trim() }
    })

/** The arguments of the last `op` instruction (the one Docker keeps for CMD, ENTRYPOINT, STOPSIGNAL). */
export const lastOf = (instructions: ReadonlyArray<Instruction>, op: string): string | undefined =>
  instructions.filter((i) => i.op === op).at(-1)?.args
