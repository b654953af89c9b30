// @ts-check
// The nats-server watchdog: `node watchdog.mjs <server pid> <config path>`,
// stdin a pipe from the process that owns the server. nats-server cannot
// notice its owner dying (it runs in its own process group, and SIGKILL of the
// owner reaches no one else), so this process holds the owner's pipe and, at
// EOF, stops the server: SIGTERM, then SIGKILL after a bound, all within 2 s.
// Plain JavaScript so that it starts in tens of milliseconds with no loader.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";

const TERM_MS = 1_200;
const KILL_MS = 600;
const POLL_MS = 25;

const pid = Number(process.argv[2]);
const configPath = resolve(process.argv[3] ?? "");
if (!Number.isInteger(pid) || pid <= 1 || !process.argv[3]) {
  process.stderr.write("usage: watchdog.mjs <server pid> <config path>\n");
  process.exit(2);
}

/** @returns {string[] | undefined} argv of the pid, undefined once it has exited */
function argvOf(/** @type {number} */ p) {
  try {
    const raw = readFileSync(`/proc/${p}/cmdline`, "utf8");
    return raw === "" ? undefined : raw.split("\0").filter((a) => a !== "");
  } catch {
    try {
      readFileSync("/proc/self/cmdline");
      return undefined;
    } catch {
      // No /proc (macOS): ps joins argv with spaces.
      try {
        const line = execFileSync("ps", ["-o", "command=", "-p", String(p)], { encoding: "utf8" }).trim();
        return line === "" ? undefined : line.split(" ");
      } catch {
        return undefined;
      }
    }
  }
}

/** Start time in clock ticks since boot (Linux), so a reused pid is never taken for the server. */
function startTimeOf(/** @type {number} */ p) {
  try {
    const stat = readFileSync(`/proc/${p}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
  } catch {
    return undefined;
  }
}

function isOurServer() {
  const argv = argvOf(pid);
  if (argv === undefined) return false;
  const at = argv.indexOf("-c");
  if (!/nats-server[^/]*$/.test(argv[0] ?? "") || at < 0 || resolve(argv[at + 1] ?? "") !== configPath) return false;
  return startTimeOf(pid) === armedStart;
}

const armedStart = startTimeOf(pid);
if (!isOurServer()) {
  process.stderr.write(`watchdog: pid ${pid} is not a nats-server on ${configPath}\n`);
  process.exit(1);
}

// An orderly stop by the owner: leave the server to it.
process.on("SIGTERM", () => process.exit(0));
process.on("SIGINT", () => undefined);

/** @returns {Promise<boolean>} true once the server is gone, false after `ms` */
async function gone(/** @type {number} */ ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (!isOurServer()) return true;
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
  return !isOurServer();
}

async function stopServer() {
  for (const [signal, ms] of /** @type {const} */ ([["SIGTERM", TERM_MS], ["SIGKILL", KILL_MS]])) {
    if (!isOurServer()) return 0;
    try {
      process.kill(pid, signal);
    } catch {
      return 0;
    }
    if (await gone(ms)) return 0;
  }
  return 1;
}

let fired = false;
const onOwnerGone = () => {
  if (fired) return;
  fired = true;
  void stopServer().then((code) => process.exit(code));
};
process.stdin.on("data", () => undefined);
process.stdin.once("end", onOwnerGone);
process.stdin.once("close", onOwnerGone);
process.stdin.once("error", onOwnerGone);
process.stdout.write("armed\n");
