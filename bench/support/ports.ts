/**
 * A free loopback port below Linux's ephemeral range (32768+), so that no
 * outgoing connection (a balancer's, the load's) and no other process's
 * `listen(0)` can take it while an instance restarts on it. Ports handed out
 * in this process are not handed out again.
 */
import * as Net from "node:net"

const usedPorts = new Set<number>()

export const freePort = async (): Promise<number> => {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000)
    if (usedPorts.has(port)) continue
    const free = await new Promise<boolean>((resolve) => {
      const server = Net.createServer()
      server.once("error", () => resolve(false))
      server.listen({ port, host: "127.0.0.1", exclusive: true }, () => server.close(() => resolve(true)))
    })
    if (free) {
      usedPorts.add(port)
      return port
    }
  }
  throw new Error("no free port")
}
