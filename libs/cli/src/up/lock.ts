import { readFileSync } from "node:fs";
import { open, readFile, rename, unlink, writeFile } from "node:fs/promises";
import { CliError } from "../errors.js";

/** A held pid lock; release it on shutdown. */
export interface HomeLock {
  /** The lock file. */
  readonly path: string;
  /**
   * Records the holder's running children in the lock file, so that a start
   * taking over after a crash waits for them first. Writes are serialized.
   */
  recordChildren(pids: readonly number[]): Promise<void>;
  /** Removes the lock file if it is still ours. Idempotent. */
  release(): Promise<void>;
}

/** How long a takeover waits for a dead holder's children before killing them. */
const CHILD_EXIT_WAIT_MS = 3_000;

/** Start time of `pid` in clock ticks since boot (Linux), or undefined (gone, or no /proc). */
export function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
  } catch {
    return undefined;
  }
}

/** A recorded child that is still the same process: same pid and start time. */
function stillRunning(child: { pid: number; start: string | undefined }): boolean {
  if (!isProcessAlive(child.pid)) return false;
  const now = processStartTime(child.pid);
  // No start time known: the pid alone cannot tell a reused pid apart, so count it as running (fail closed).
  return child.start === undefined || now === undefined || now === child.start;
}

/** True when a process with this pid exists (EPERM means it exists but is not ours). */
export function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Takes the pid lock at `path` so two `unibus up` never share one state dir
 * (two nats-servers on one JetStream store would corrupt it). A lock whose pid
 * is no longer running was left by a crash and is taken over.
 */
export async function acquireHomeLock(path: string, pid: number = process.pid): Promise<HomeLock> {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      // "wx" is O_CREAT|O_EXCL: of two racing starts exactly one creates the file.
      const fh = await open(path, "wx", 0o600);
      try {
        await fh.writeFile(`${pid}\n`);
      } finally {
        await fh.close();
      }
      let released = false;
      let writes: Promise<void> = Promise.resolve();
      return {
        path,
        recordChildren(pids) {
          const body = `${pid}\n` + pids.map((p) => `child ${p} ${processStartTime(p) ?? "-"}\n`).join("");
          // rename: a concurrent reader sees the old or the new list, never half of one.
          writes = writes.then(async () => {
            if (released) return;
            const tmp = `${path}.${pid}.tmp`;
            await writeFile(tmp, body, { mode: 0o600 });
            await rename(tmp, path);
          });
          return writes;
        },
        async release() {
          if (released) return;
          released = true;
          // A write under way would rename its file over the lock after we removed it.
          await writes.catch(() => undefined);
          const holder = await readLockPid(path);
          if (holder === pid) await unlink(path).catch(() => undefined);
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    const holder = await readLockPid(path);
    if (holder !== undefined && holder !== pid && isProcessAlive(holder)) {
      throw new CliError(
        `another \`unibus up\` (pid ${holder}) is using this state dir (lock ${path}).\n` +
          "Stop it first, or set UNIBUS_HOME to use another dir. If no such process is yours, delete the lock file.",
      );
    }
    // Stale (crashed owner) or unreadable lock. Its services may still be
    // draining: a new bus must not start while they hold the port or reconnect.
    await waitForChildren(path);
    await unlink(path).catch(() => undefined);
  }
  throw new CliError(`cannot take the lock ${path}: another process keeps creating it`);
}

/**
 * Waits for the children a dead holder recorded, then SIGKILLs those whose
 * start time proves they are still the same processes.
 *
 * @throws CliError when one still runs and cannot be verified or killed.
 */
async function waitForChildren(path: string): Promise<void> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch {
    return;
  }
  const children = text
    .split("\n")
    .map((line) => /^child ([1-9][0-9]*) (\S+)$/.exec(line))
    .filter((m) => m !== null)
    .map((m) => ({ pid: Number(m[1]), start: m[2] === "-" ? undefined : m[2] }));
  const end = Date.now() + CHILD_EXIT_WAIT_MS;
  while (children.some(stillRunning) && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
  for (const child of children.filter(stillRunning)) {
    if (child.start === undefined || processStartTime(child.pid) === undefined) {
      throw new CliError(`a process of the previous \`unibus up\` (pid ${child.pid}) still runs; stop it, then start again`);
    }
    process.kill(child.pid, "SIGKILL");
  }
  const killEnd = Date.now() + 1_000;
  while (children.some(stillRunning) && Date.now() < killEnd) await new Promise((r) => setTimeout(r, 50));
  const left = children.find(stillRunning);
  if (left !== undefined) throw new CliError(`a process of the previous \`unibus up\` (pid ${left.pid}) does not stop; stop it, then start again`);
}

async function readLockPid(path: string): Promise<number | undefined> {
  try {
    // First line: the holder. Later lines list its children.
    const pid = Number((await readFile(path, "utf8")).split("\n")[0]?.trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}
