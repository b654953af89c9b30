import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import type { Socket } from "node:net";
import { fileURLToPath } from "node:url";
import { NatsServerOrphanError } from "./orphan.js";

/** The script {@link startBusWatchdog} runs (plain JavaScript: no loader, fast start). */
export const WATCHDOG_SCRIPT = fileURLToPath(new URL("./watchdog.mjs", import.meta.url));

/** A running watchdog; stop it before an orderly stop of the server and children. */
export interface BusWatchdog {
  /** OS process id of the watchdog. */
  readonly pid: number;
  /**
   * Replaces the set of child processes the watchdog ends with the server
   * when this process dies. Each pid's start time is read here, now, so the
   * watchdog can tell it from a later process that reuses the pid; pass only
   * children not yet reaped (a zombie still holds its pid).
   */
  guard(pids: readonly number[]): void;
  /** Ends the watchdog without touching the server or the children. Idempotent. */
  stop(): Promise<void>;
}

/** Start time of `pid` in clock ticks since boot (Linux), or undefined (gone, or no /proc). */
function startTimeOf(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
  } catch {
    return undefined;
  }
}

/** The line telling the watchdog which children to guard; `-` (never signalled) where the start time is unknown. */
export function guardLine(pids: readonly number[], startTime: (pid: number) => string | undefined = startTimeOf): string {
  return ["guard", ...pids.map((p) => `${p}:${startTime(p) ?? "-"}`)].join(" ") + "\n";
}

/**
 * Starts a small idle process that, as soon as this process dies (however it
 * dies), stops the nats-server `server` and every child named through
 * {@link BusWatchdog.guard}: SIGTERM, then SIGKILL after a bound, all within
 * 2 s. It holds a pipe from us whose EOF the kernel delivers even after a
 * SIGKILL or an OOM kill, which nothing inside nats-server can observe, and
 * which a child whose event loop is blocked (loading, a busy CPU) cannot act
 * on in time. Resolves once the watchdog has checked the pid is that server
 * and is armed.
 *
 * @throws NatsServerOrphanError when the watchdog cannot be armed: a server
 *   nobody would stop must not run.
 */
export async function startBusWatchdog(server: { readonly pid: number; readonly configPath: string }, readyMs = 5_000): Promise<BusWatchdog> {
  // Only PATH: the watchdog needs no secret, so it gets none (the server's env holds the JetStream key).
  const child = spawn(process.execPath, [WATCHDOG_SCRIPT, String(server.pid), server.configPath], {
    detached: true,
    env: { PATH: process.env["PATH"] },
    stdio: ["pipe", "pipe", "pipe"],
  });
  child.stdin.on("error", () => undefined);
  let stderr = "";
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (d: string) => (stderr = (stderr + d).slice(-4_096)));
  const exited = new Promise<void>((done) => {
    child.once("exit", () => done());
    child.once("error", () => done());
  });
  const armed = await new Promise<boolean>((done) => {
    const timer = setTimeout(() => done(false), readyMs);
    let out = "";
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (d: string) => {
      out += d;
      if (out.includes("armed\n")) {
        clearTimeout(timer);
        done(true);
      }
    });
    void exited.then(() => {
      clearTimeout(timer);
      done(false);
    });
  });
  if (!armed) {
    child.kill("SIGKILL");
    await exited;
    throw new NatsServerOrphanError(`the bus watchdog did not start: ${stderr.trim() || "no answer"}`);
  }
  // Neither the watchdog nor its pipe may keep an otherwise finished process alive.
  child.unref();
  for (const stream of [child.stdin, child.stdout, child.stderr]) (stream as Socket).unref();
  let stopped: Promise<void> | undefined;
  return {
    pid: child.pid ?? 0,
    guard(pids) {
      // A write after the watchdog exited fails with EPIPE, swallowed by the error handler above.
      if (stopped === undefined && !child.stdin.destroyed) child.stdin.write(guardLine(pids));
    },
    stop() {
      stopped ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
        await exited;
        child.stdin.destroy();
        child.stdout.destroy();
        child.stderr.destroy();
      })();
      return stopped;
    },
  };
}
