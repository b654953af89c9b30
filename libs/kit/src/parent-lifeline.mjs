// @ts-check
// Preloaded into every supervised node process (`node --import <this> …`),
// before any loader or service code, so that a child notices its supervisor's
// death even while it is still loading or restarting. UNIBUS_PARENT_FD names
// a pipe the supervisor never writes to; the kernel closes the supervisor's
// end however it dies (SIGKILL, OOM), and EOF here turns into the child's
// own SIGTERM (drain), bounded by a hard exit: an orphan must not keep
// serving, nor hold its port against the next start.
// Plain JavaScript: it runs before the TypeScript loader is registered.
import { Socket } from "node:net";

const ENV = "UNIBUS_PARENT_FD";
/** Drain bound once the supervisor is gone: services hold no state (every mutation is durable before it is acknowledged), so a fast exit loses at most a reply. */
const PARENT_GONE_GRACE_MS = 500;

const raw = process.env[ENV];
// Not inherited further: a grandchild's fd 3 is some other file.
delete process.env[ENV];
if (raw !== undefined && raw !== "") {
  // 0-2 are stdio; a lifeline there would be confused with the log streams.
  if (!/^[1-9][0-9]*$/.test(raw) || Number(raw) < 3) {
    process.stderr.write(`${ENV} must be a file descriptor >= 3, got ${JSON.stringify(raw)}; refusing to run unsupervised\n`);
    process.exit(1);
  }
  /** @type {Socket} */
  let socket;
  try {
    socket = new Socket({ fd: Number(raw), readable: true, writable: false });
  } catch (err) {
    process.stderr.write(`${ENV}=${raw} is not an open pipe (${err instanceof Error ? err.message : String(err)}); refusing to run unsupervised\n`);
    process.exit(1);
  }
  let fired = false;
  const gone = () => {
    if (fired) return;
    fired = true;
    setTimeout(() => process.exit(1), PARENT_GONE_GRACE_MS).unref();
    // The service's own SIGTERM handling drains; without a handler yet, the default action ends us at once.
    process.kill(process.pid, "SIGTERM");
  };
  // The supervisor never writes; any end, error or close means it is gone.
  socket.on("data", () => undefined);
  socket.once("end", gone);
  socket.once("close", gone);
  socket.once("error", gone);
  // The lifeline alone must not keep a finished process alive.
  socket.unref();
}
