import { spawn } from "node:child_process";
import type { Socket } from "node:net";
import { fileURLToPath } from "node:url";
import { NatsServerOrphanError } from "./orphan.js";

/** The script {@link startNatsServerWatchdog} runs (plain JavaScript: no loader, fast start). */
export const WATCHDOG_SCRIPT = fileURLToPath(new URL("./watchdog.mjs", import.meta.url));

/** A running watchdog; stop it before an orderly server stop. */
export interface NatsServerWatchdog {
  /** OS process id of the watchdog. */
  readonly pid: number;
  /** Ends the watchdog without touching the server. Idempotent. */
  stop(): Promise<void>;
}

/**
 * Starts a small process that stops the nats-server `server` (SIGTERM, then
 * SIGKILL, within 2 s) as soon as this process dies, however it dies: it
 * holds a pipe from us whose EOF the kernel delivers even after a SIGKILL or
 * an OOM kill, which nothing inside nats-server can observe. Resolves once the
 * watchdog has checked the pid is that server and is armed.
 *
 * @throws NatsServerOrphanError when the watchdog cannot be armed: a server
 *   nobody would stop must not run.
 */
export async function startNatsServerWatchdog(server: { readonly pid: number; readonly configPath: string }, readyMs = 5_000): Promise<NatsServerWatchdog> {
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
    throw new NatsServerOrphanError(`the nats-server watchdog did not start: ${stderr.trim() || "no answer"}`);
  }
  // Neither the watchdog nor its pipe may keep an otherwise finished process alive.
  child.unref();
  for (const stream of [child.stdin, child.stdout, child.stderr]) (stream as Socket).unref();
  let stopped: Promise<void> | undefined;
  return {
    pid: child.pid ?? 0,
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
