/**
 * Stands in for systemd's service manager in the socket-activation restart
 * tests and bench (PID 1 is not systemd on a test machine, so `systemctl`
 * cannot run): the real `systemd-socket-activate` creates the listening
 * sockets and passes them to this process, which keeps them open and runs
 * one instance of the service at a time, passing the sockets on exactly as
 * systemd does: descriptors from 3 on, `LISTEN_FDS`, `LISTEN_FDNAMES`, and
 * `LISTEN_PID` set to the instance's own pid (a shell sets it to `$$` and
 * then execs the command, as systemd sets it between fork and exec).
 *
 *   systemd-socket-activate -l 127.0.0.1:8080 --fdname=http -- \
 *     node test/support/socket-holder.ts node examples/service/main.ts
 *
 * Commands on stdin, one a line:
 * - `restart`: SIGTERM to the instance, wait for its exit, start the next
 *   (what `systemctl restart` does to a service whose `.socket` unit holds
 *   the socket: the socket is never closed meanwhile);
 * - `stop`: SIGTERM to the instance, wait for its exit, exit.
 *
 * It prints `HOLDER started <pid> <epoch ms>` and
 * `HOLDER exited <pid> <code|signal> <epoch ms>`; the instance's stdout and
 * stderr pass through. It never reads or accepts on the sockets.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { createInterface } from "node:readline"

const fdCount = Number(process.env.LISTEN_FDS ?? "0")
if (process.env.LISTEN_PID !== String(process.pid) || !(fdCount > 0)) {
  console.error("socket-holder: start me with systemd-socket-activate (no LISTEN_FDS for this pid)")
  process.exit(2)
}
const command = process.argv.slice(2)
if (command.length === 0) {
  console.error("socket-holder: usage: socket-holder.ts COMMAND [ARGS...]")
  process.exit(2)
}
const fds = Array.from({ length: fdCount }, (_, i) => 3 + i)

let current: { readonly child: ChildProcess; readonly exited: Promise<void> } | undefined

const start = () => {
  const child = spawn("/bin/sh", ["-c", "export LISTEN_PID=$$; exec \"$@\"", "sh", ...command], {
    // The instance's descriptors 3.. are this process's 3..: the same sockets.
    stdio: ["ignore", "inherit", "inherit", ...fds],
    env: { ...process.env, LISTEN_FDS: String(fdCount) }
  })
  const exited = new Promise<void>((resolve) => {
    child.once("exit", (code, signal) => {
      console.log(`HOLDER exited ${child.pid} ${code ?? signal} ${Date.now()}`)
      resolve()
    })
  })
  console.log(`HOLDER started ${child.pid} ${Date.now()}`)
  current = { child, exited }
}

const stopCurrent = async () => {
  if (current === undefined) return
  const { child, exited } = current
  current = undefined
  child.kill("SIGTERM")
  await exited
}

let queue = Promise.resolve()
const enqueue = (task: () => Promise<void>) => {
  queue = queue.then(task)
}

createInterface({ input: process.stdin }).on("line", (line) => {
  switch (line.trim()) {
    case "restart":
      return enqueue(async () => {
        await stopCurrent()
        start()
      })
    case "stop":
      return enqueue(async () => {
        await stopCurrent()
        process.exit(0)
      })
  }
})
process.on("SIGTERM", () =>
  enqueue(async () => {
    await stopCurrent()
    process.exit(0)
  }))

start()
