/**
 * What most end-to-end tests of the fixture service do: start it (cleaned up
 * after each test), wait for its `MARK ready`, send one signal, and wait for
 * the exit.
 */
import { afterEach } from "vitest"
import { type Fixture, start } from "./harness.ts"

/**
 * `start`, with every fixture it started cleaned up after each test. Call it
 * once, at the top level of a test file: it registers the `afterEach`.
 */
export const startCleanedUp = () => {
  let running: Array<Fixture> = []
  afterEach(() => {
    for (const fixture of running) fixture.cleanup()
    running = []
  })
  return (env: Record<string, string> = {}, options?: Parameters<typeof start>[1]): Fixture => {
    const fixture = start(env, options)
    running.push(fixture)
    return fixture
  }
}

/**
 * Waits for `MARK ready`, sends `signal` (`times` times, `gapMs` apart: a
 * supervisor repeating it), and resolves with when the last one was sent and
 * how the fixture exited.
 */
export const signalled = async (
  fixture: Fixture,
  signal: NodeJS.Signals = "SIGTERM",
  repeat: { readonly times: number; readonly gapMs: number } = { times: 1, gapMs: 0 }
) => {
  await fixture.waitFor("ready")
  for (let i = 1; i < repeat.times; i++) {
    fixture.kill(signal)
    await new Promise((resolve) => setTimeout(resolve, repeat.gapMs)) // the behaviour under test: the gap between signals
  }
  const sent = fixture.kill(signal)
  const exit = await fixture.exited
  return { sent, exit }
}
