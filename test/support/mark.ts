/**
 * What a fixture prints for the test to wait on: `MARK <name> <value>`, the
 * value being epoch ms unless given (a port). Read by ./fixture.ts
 * (`waitFor`, `has`).
 */
export const mark = (name: string, value: string | number = Date.now()) => console.log(`MARK ${name} ${value}`)
