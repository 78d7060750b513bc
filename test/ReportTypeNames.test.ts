/**
 * The report's types are named interfaces: a type error or a hover says
 * `ShutdownReport`, not the whole structure. Checked with the TypeScript
 * compiler on a file that uses them, as a user's editor would.
 */
import * as Path from "node:path"
import ts from "typescript"
import { describe, expect, it } from "vitest"

const root = Path.resolve(import.meta.dirname, "..")

describe("Report types", () => {
  it("print by name in a type error", () => {
    const file = Path.join(root, "test", "__report_type_names__.ts")
    const source = `import type { Report } from "../src/index.ts"
declare const report: Report.ShutdownReport
declare const release: Report.ReleaseRecord
declare const cut: Report.CutItem
declare const held: Report.HeldBy
declare const phase: Report.PhaseTiming
declare const count: Report.CutCount
export const wrong: number = report
export const wrong2: number = release
export const wrong3: number = cut
export const wrong4: number = held
export const wrong5: number = phase
export const wrong6: number = count
`
    const parsed = ts.getParsedCommandLineOfConfigFile(Path.join(root, "tsconfig.json"), {}, {
      ...ts.sys,
      onUnRecoverableConfigFileDiagnostic: () => {}
    })!
    const host = ts.createCompilerHost(parsed.options)
    const readFile = host.readFile.bind(host)
    host.readFile = (name) => Path.resolve(name) === file ? source : readFile(name)
    const fileExists = host.fileExists.bind(host)
    host.fileExists = (name) => Path.resolve(name) === file || fileExists(name)
    const program = ts.createProgram([file], { ...parsed.options, noEmit: true }, host)
    const messages = ts.getPreEmitDiagnostics(program, program.getSourceFile(file))
      .map((d) => ts.flattenDiagnosticMessageText(d.messageText, "\n").split("\n")[0])
    expect(messages).toEqual([
      "Type 'ShutdownReport' is not assignable to type 'number'.",
      "Type 'ReleaseRecord' is not assignable to type 'number'.",
      "Type 'CutItem' is not assignable to type 'number'.",
      "Type 'HeldBy' is not assignable to type 'number'.",
      "Type 'PhaseTiming' is not assignable to type 'number'.",
      "Type 'CutCount' is not assignable to type 'number'."
    ])
  }, 60_000)
})
