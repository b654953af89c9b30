import { execFile } from "node:child_process";
import { readFile, rm } from "node:fs/promises";
import { join, resolve } from "node:path";
import { promisify } from "node:util";

/** File names {@link startNatsServer} gives the config and pid file inside its dir. */
export const NatsServerFile = { config: "nats-server.conf", pid: "nats-server.pid" } as const;

/**
 * Lame duck settings for a single-node server (nats-server 2.15.1 semantics).
 * On SIGUSR2 the server stops accepting, shuts JetStream down (flushed) at
 * once, tells clients (`ldm` in INFO) and, with no client connected, exits at
 * once. With clients it first waits the grace period (default 10 s, for
 * clients to move to another server: a single node has none, so 1 s only
 * lets them see the notice), then closes them at most one a second, spread
 * over the duration (2.15.1 rejects less than 30 s). A half-open connection
 * counts as a client, so without these a lame duck stop could take over 10 s.
 */
export const SINGLE_NODE_LAME_DUCK = { lame_duck_grace_period: "1s", lame_duck_duration: "30s" } as const;

/** What a pid from a pid file turned out to be. */
export const PidIdentity = {
  /** A nats-server running on this dir's config. */
  Ours: "ours",
  /** Some other process (the pid was reused) */
  Other: "other",
  /** No such process. */
  Gone: "gone",
} as const;
export type PidIdentity = (typeof PidIdentity)[keyof typeof PidIdentity];

/** An old nats-server on the store could not be stopped or identified. */
export class NatsServerOrphanError extends Error {
  override readonly name = "NatsServerOrphanError";
}

const run = promisify(execFile);

/** argv of `pid`, or undefined once it has exited. */
async function argvOf(pid: number): Promise<string[] | undefined> {
  try {
    const raw = await readFile(`/proc/${pid}/cmdline`, "utf8");
    // A zombie has an empty cmdline: it has exited, only its parent has not reaped it.
    return raw === "" ? undefined : raw.split("\0").filter((a) => a !== "");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ESRCH") {
      // No /proc at all (macOS): ask ps. Its command column joins argv with spaces.
      if (code === "ENOENT" && !(await procMounted())) return argvFromPs(pid);
      return undefined;
    }
    throw err;
  }
}

async function procMounted(): Promise<boolean> {
  try {
    await readFile("/proc/self/cmdline");
    return true;
  } catch {
    return false;
  }
}

async function argvFromPs(pid: number): Promise<string[] | undefined> {
  try {
    const { stdout } = await run("ps", ["-o", "command=", "-p", String(pid)]);
    const line = stdout.trim();
    return line === "" ? undefined : line.split(" ");
  } catch {
    // ps exits 1 when no process has this pid.
    return undefined;
  }
}

/**
 * Whether `pid` is a nats-server started on `configPath` (argv `… -c <config>`),
 * read from the process table: a pid file alone may name a recycled pid, and
 * signalling that would hit an unrelated process.
 */
export async function identifyServerPid(pid: number, configPath: string): Promise<PidIdentity> {
  const argv = await argvOf(pid);
  if (argv === undefined) return PidIdentity.Gone;
  const exe = argv[0] ?? "";
  const at = argv.indexOf("-c");
  const ours = /nats-server[^/]*$/.test(exe) && at >= 0 && argv[at + 1] !== undefined && resolve(argv[at + 1] ?? "") === resolve(configPath);
  return ours ? PidIdentity.Ours : PidIdentity.Other;
}

/** Options of {@link stopOrphanNatsServer}. */
export interface StopOrphanOptions {
  /** How long lame duck mode may take before SIGTERM. Default 5 s. */
  readonly lameDuckMs?: number;
  /** How long SIGTERM may take before SIGKILL. Default 5 s. */
  readonly termMs?: number;
  /** Progress for humans. */
  readonly log?: (message: string) => void;
}

/** What {@link stopOrphanNatsServer} found and did. */
export interface OrphanOutcome {
  /** pid from the pid file, if any. */
  readonly pid?: number;
  /** `none`: no pid file; `stale`: its pid is gone or not our server; `stopped`: a running server was stopped. */
  readonly action: "none" | "stale" | "stopped";
  /** The signal that ended it, when stopped. */
  readonly by?: "lame-duck" | "SIGTERM" | "SIGKILL";
}

/**
 * Finds a nats-server still running on `dir` (left by a supervisor that was
 * killed) through its pid file and stops it: lame duck mode first (SIGUSR2,
 * what `nats-server --signal ldm` sends: clients are told to move on and
 * JetStream is flushed), then SIGTERM, then SIGKILL, each bounded. Two
 * servers on one JetStream store corrupt it, so call this before starting one.
 *
 * @throws NatsServerOrphanError when the old server survives SIGKILL.
 */
export async function stopOrphanNatsServer(dir: string, opts: StopOrphanOptions = {}): Promise<OrphanOutcome> {
  const pidPath = join(dir, NatsServerFile.pid);
  const configPath = join(resolve(dir), NatsServerFile.config);
  let raw: string;
  try {
    raw = await readFile(pidPath, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return { action: "none" };
    throw err;
  }
  const pid = Number(raw.trim());
  if (!Number.isInteger(pid) || pid <= 1) {
    // Not a pid: no process can be found through it; the new server rewrites the file.
    await rm(pidPath, { force: true });
    return { action: "stale" };
  }
  if ((await identifyServerPid(pid, configPath)) !== PidIdentity.Ours) {
    await rm(pidPath, { force: true });
    return { pid, action: "stale" };
  }
  opts.log?.(`an earlier nats-server (pid ${pid}) still runs on this store; stopping it (lame duck)`);
  const steps = [
    { signal: "SIGUSR2", ms: opts.lameDuckMs ?? 5_000, by: "lame-duck" },
    { signal: "SIGTERM", ms: opts.termMs ?? 5_000, by: "SIGTERM" },
    { signal: "SIGKILL", ms: 2_000, by: "SIGKILL" },
  ] as const;
  for (const step of steps) {
    try {
      process.kill(pid, step.signal);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ESRCH") return { pid, action: "stopped", by: step.by };
      throw err;
    }
    const end = Date.now() + step.ms;
    while (Date.now() < end) {
      // Asked by argv, not kill(pid, 0): an exited pid may be reused at once, and the next step must not signal that.
      if ((await identifyServerPid(pid, configPath)) !== PidIdentity.Ours) return { pid, action: "stopped", by: step.by };
      await new Promise((r) => setTimeout(r, 50));
    }
    opts.log?.(`nats-server pid ${pid} still runs ${step.ms} ms after ${step.by}`);
  }
  throw new NatsServerOrphanError(`an earlier nats-server (pid ${pid}) on ${dir} does not stop; stop it by hand before starting again`);
}
