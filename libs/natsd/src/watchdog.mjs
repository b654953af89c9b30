// @ts-check
// The bus watchdog: `node watchdog.mjs <server pid> <config path>`, stdin a
// pipe from the process that owns the bus (`unibus up`). Neither nats-server
// nor a service whose event loop is blocked can notice its owner dying (they
// run in their own process groups, and SIGKILL of the owner reaches no one
// else), so this idle process holds the owner's pipe and, at EOF, stops them
// all: SIGTERM, then SIGKILL after a bound, all within 2 s.
//
// The owner tells it the children to guard, one line per change:
// `guard <pid>:<start time> …` (the whole current set; `-` for an unknown
// start time). Before every signal the pid's start time is checked again, so a
// reused pid is never hit; a child whose start time is unknown is never
// signalled (its lifeline preload still ends it).
// Plain JavaScript so that it starts in tens of milliseconds with no loader.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";

/** nats-server flushes JetStream on SIGTERM; SIGKILL after this. */
const SERVER_TERM_MS = 1_000;
/** Services hold no state (every mutation is durable before it is acknowledged): a short drain, then SIGKILL. */
const CHILD_TERM_MS = 600;
/** How long a SIGKILLed process may take to disappear before the watchdog gives up. */
const KILL_MS = 600;
const POLL_MS = 20;
/** A guard line longer than this is not from our owner (a few hundred pids at most). */
const MAX_LINE = 16_384;

const pid = Number(process.argv[2]);
const configPath = resolve(process.argv[3] ?? "");
if (!Number.isInteger(pid) || pid <= 1 || !process.argv[3]) {
  process.stderr.write("usage: watchdog.mjs <server pid> <config path>\n");
  process.exit(2);
}
// The owner may be gone when we write: a broken pipe must not crash us mid-stop.
process.stdout.on("error", () => undefined);
process.stderr.on("error", () => undefined);

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

/**
 * Fields of /proc/<pid>/stat after the command name: [0] state, [2] process
 * group, [19] start time in clock ticks since boot. Undefined once gone or a
 * zombie (it has exited; only its reaping is pending).
 * @returns {string[] | undefined}
 */
function statOf(/** @type {number} */ p) {
  try {
    const stat = readFileSync(`/proc/${p}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return fields[0] === "Z" || fields[0] === "X" ? undefined : fields;
  } catch {
    return undefined;
  }
}

function isOurServer() {
  const argv = argvOf(pid);
  if (argv === undefined) return false;
  const at = argv.indexOf("-c");
  if (!/nats-server[^/]*$/.test(argv[0] ?? "") || at < 0 || resolve(argv[at + 1] ?? "") !== configPath) return false;
  return statOf(pid)?.[19] === armedStart;
}

const armedStart = statOf(pid)?.[19];
if (!isOurServer()) {
  process.stderr.write(`watchdog: pid ${pid} is not a nats-server on ${configPath}\n`);
  process.exit(1);
}

/** @type {Map<number, string>} guarded children: pid → start time */
let children = new Map();

/** @returns {Map<number, string>} the set a `guard` line names; malformed entries are dropped (never signalled) */
function parseGuard(/** @type {string} */ line) {
  const out = new Map();
  for (const entry of line.split(" ").slice(1)) {
    const m = /^([1-9][0-9]*):([0-9]+)$/.exec(entry);
    if (m && Number(m[1]) !== pid && Number(m[1]) !== process.pid) out.set(Number(m[1]), m[2]);
  }
  return out;
}

/** The child is still the process we were told about: same pid and start time. */
function isOurChild(/** @type {number} */ p, /** @type {string} */ start) {
  return statOf(p)?.[19] === start;
}

/**
 * Signals a verified child; its whole process group when it leads one (the
 * supervisor starts each child in its own group), so helpers it spawned go too.
 * A pid cannot be reused while a group of that id exists, so the group id is
 * as safe to signal as the verified leader.
 */
function signalChild(/** @type {number} */ p, /** @type {string} */ start, /** @type {NodeJS.Signals} */ signal) {
  const stat = statOf(p);
  if (stat === undefined || stat[19] !== start) return;
  try {
    process.kill(stat[2] === String(p) ? -p : p, signal);
  } catch {
    // Exited between the check and the signal.
  }
}

function signalServer(/** @type {NodeJS.Signals} */ signal) {
  if (!isOurServer()) return;
  try {
    process.kill(pid, signal);
  } catch {
    // Exited between the check and the signal.
  }
}

/** @returns {Promise<boolean>} true once `done()` holds, false after `ms` */
async function within(/** @type {number} */ ms, /** @type {() => boolean} */ done) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (done()) return true;
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
  return done();
}

/** SIGTERM every guarded child and the server at once, then SIGKILL whatever outlives its bound. */
async function stopAll() {
  const guarded = [...children];
  const childrenGone = () => guarded.every(([p, start]) => !isOurChild(p, start));
  for (const [p, start] of guarded) signalChild(p, start, "SIGTERM");
  signalServer("SIGTERM");
  const stopChildren = (async () => {
    if (await within(CHILD_TERM_MS, childrenGone)) return true;
    for (const [p, start] of guarded) signalChild(p, start, "SIGKILL");
    return within(KILL_MS, childrenGone);
  })();
  const stopServer = (async () => {
    if (await within(SERVER_TERM_MS, () => !isOurServer())) return true;
    signalServer("SIGKILL");
    return within(KILL_MS, () => !isOurServer());
  })();
  const [a, b] = await Promise.all([stopChildren, stopServer]);
  return a && b ? 0 : 1;
}

// An orderly stop by the owner: leave the server and the children to it.
process.on("SIGTERM", () => process.exit(0));
process.on("SIGINT", () => undefined);

let fired = false;
const onOwnerGone = () => {
  if (fired) return;
  fired = true;
  void stopAll().then((code) => process.exit(code));
};
let pending = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (/** @type {string} */ chunk) => {
  // Lines the owner wrote before it died are still read before EOF.
  pending += chunk;
  let nl;
  while ((nl = pending.indexOf("\n")) >= 0) {
    const line = pending.slice(0, nl);
    pending = pending.slice(nl + 1);
    if (line.startsWith("guard")) children = parseGuard(line);
  }
  if (pending.length > MAX_LINE) pending = "";
});
process.stdin.once("end", onOwnerGone);
process.stdin.once("close", onOwnerGone);
process.stdin.once("error", onOwnerGone);
process.stdout.write("armed\n");
