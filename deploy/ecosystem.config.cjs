// The example service under PM2:
//
//   pm2 start deploy/ecosystem.config.cjs
//   pm2 reload effect-graceful-example   # zero-downtime: waits for "ready"
//
// PM2 stops an app with SIGINT (or, with shutdown_with_message, an IPC
// "shutdown" message), then SIGKILL after kill_timeout ms. The library
// handles both as a shutdown trigger, and sends process.send("ready") when
// it is Ready, which wait_ready waits for. Checked by test/deploy.test.ts.
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
      interpreter: "node",
      cwd: __dirname + "/..",
      exec_mode: "fork",
      instances: 1,
      // >= 25000 (SHUTDOWN_TIMEOUT) + 1000
      kill_timeout: 26000,
      // Wait for the library's "ready" (Lifecycle Ready) before routing to a
      // new instance on reload; the PGlite start can take several seconds.
      wait_ready: true,
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
