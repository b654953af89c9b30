import { open, readFile, unlink } from "node:fs/promises";
import { CliError } from "../errors.js";

/** A held pid lock; release it on shutdown. */
export interface HomeLock {
  /** The lock file. */
  readonly path: string;
  /** Removes the lock file if it is still ours. Idempotent. */
  release(): Promise<void>;
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
      return {
        path,
        async release() {
          if (released) return;
          released = true;
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
    // Stale (crashed owner) or unreadable lock: remove it and try once more.
    await unlink(path).catch(() => undefined);
  }
  throw new CliError(`cannot take the lock ${path}: another process keeps creating it`);
}

async function readLockPid(path: string): Promise<number | undefined> {
  try {
    const pid = Number((await readFile(path, "utf8")).trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}
