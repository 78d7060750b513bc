/**
 * Spawns a service (the example service, an example app) as a real child
 * process and resolves once it prints its ready line,
 * `listening on http://127.0.0.1:<port>`. Shared by the end-to-end and the
 * integration suites; fixtures that print `MARK` lines use ./fixture.ts.
 */
import { type ChildProcess, spawn } from "node:child_process"

export interface Listening {
  readonly child: ChildProcess
  /** The port read from the ready line. */
  readonly port: number
  /** Resolves once the process has exited and its output is closed. */
  readonly exited: Promise<{ readonly code: number | null; readonly signal: NodeJS.Signals | null }>
  /** stdout and stderr so far. */
  readonly output: () => string
}

/** The example service (and the examples) import `effect-graceful` by name; this condition resolves it to src. */
export const sourceCondition = "--conditions=@effect-graceful/source"

/**
 * Starts `file` under the Node that runs the tests (or `runtime`, Bun's
 * binary), with `env` over this process's environment, and waits for its
 * ready line. Rejects, with the output, if the process exits first.
 */
export const spawnListening = async (
  file: string,
  env: Record<string, string>,
  nodeArgs: ReadonlyArray<string> = [sourceCondition],
  runtime: string = process.execPath
): Promise<Listening> => {
  const child = spawn(runtime, [...nodeArgs, file], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"]
  })
  let output = ""
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on("close", (code, signal) => resolve({ code, signal }))
  )
  const port = await new Promise<number>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      output += String(chunk)
      const match = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(output)
      if (match) resolve(Number(match[1]))
    }
    child.stdout.on("data", onData)
    child.stderr.on("data", onData)
    void exited.then(() => reject(new Error(`${file} exited before listening:\n${output}`)))
  })
  return { child, port, exited, output: () => output }
}

/** Waits until `service` has printed a line matching `pattern`; fails loudly after `timeoutMs`. */
export const untilOutput = async (service: { readonly output: () => string }, pattern: RegExp, timeoutMs = 10_000) => {
  const deadline = Date.now() + timeoutMs
  while (!pattern.test(service.output())) {
    if (Date.now() > deadline) throw new Error(`no ${pattern} within ${timeoutMs} ms:\n${service.output()}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}
