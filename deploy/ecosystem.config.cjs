// The example service under PM2, in cluster mode:
//
//   pm2 start deploy/ecosystem.config.cjs
//   pm2 reload effect-graceful-example   # zero-downtime: one instance at a time
//
// Cluster mode, not fork mode. In cluster mode PM2's primary process holds
// the port (Node's cluster module) and hands connections to the workers, so
// on reload it starts a new worker, waits for its "ready" (wait_ready), and
// only then stops an old one: nothing is refused. Fork mode cannot reload
// without a gap: there PM2's `reload` is a restart (stop, then start; see
// lib/God/Reload.js), and the port has no listener for the whole drain and
// start-up of the new process. Measured by `npm run bench:restart`
// (bench/restart/README.md): fork mode refuses every connection in that
// window; cluster mode lost none.
//
// PM2 stops an app with SIGINT (or, with shutdown_with_message, an IPC
// "shutdown" message), then SIGKILL after kill_timeout ms. The library
// handles both as a shutdown trigger, and sends process.send("ready") when
// it is Ready, which wait_ready waits for. (PM2 7.0.4 sends SIGINT, not the
// message, to the old worker of a cluster-mode reload: the worker has been
// renamed `_old_<id>` by then, and God.killProcess sends the message only to
// numeric ids. Both work.) Checked by test/deploy.test.ts; every setting
// here is exercised live by the restart bench.
//
// Rule: kill_timeout >= SHUTDOWN_TIMEOUT + 1 s. PM2's default kill_timeout is
// 1600 ms: without this setting PM2 kills the process mid-drain (the
// start-up budget check, PlatformCheck, warns about it).
module.exports = {
  apps: [
    {
      name: "effect-graceful-example",
      script: "examples/service/main.ts",
      // Node >= 22.18 / 24 runs TypeScript directly; use dist/*.js otherwise.
      // (Cluster workers run on the Node that runs PM2's daemon.)
      interpreter: "node",
      cwd: __dirname + "/..",
      exec_mode: "cluster",
      // At least 2: while one is replaced, the other serves.
      instances: 2,
      // >= 25000 (SHUTDOWN_TIMEOUT) + 1000
      kill_timeout: 26000,
      // Wait for the library's "ready" (Lifecycle Ready) before stopping an
      // old worker on reload; the PGlite start can take several seconds.
      wait_ready: true,
      // The longest wait for "ready": after it PM2 stops the old worker anyway.
      listen_timeout: 20000,
      // Stop with an IPC message rather than SIGINT (works on Windows too).
      shutdown_with_message: true,
      env: {
        HOST: "127.0.0.1",
        PORT: "3000",
        LOG_FILE: "requests.jsonl",
        SHUTDOWN_TIMEOUT: "25 seconds"
      }
    }
  ]
}
