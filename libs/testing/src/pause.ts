import { readdirSync, readFileSync } from "node:fs";
import { eventually } from "./eventually.js";

/** The scheduler state letter of every thread of `pid` (`/proc/<pid>/task/<tid>/stat`); threads that ended are skipped. */
function threadStates(pid: number): string[] {
  const states: string[] = [];
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      // The state follows the parenthesised command name, which may itself hold spaces or parentheses.
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
      states.push(stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3));
    } catch {
      // A thread that exited between the listing and the read.
    }
  }
  return states;
}

/**
 * Freezes process `pid` with SIGSTOP and returns once every one of its
 * threads is stopped. `kill` only queues the signal: a thread running on
 * the other core can go on for a moment, so on a loaded machine a server
 * "stopped" by the bare signal may still answer what a test sends next.
 * Linux only (it reads /proc).
 *
 * @throws Error if the threads are not all stopped within `timeoutMs`.
 */
export async function pauseProcess(pid: number, timeoutMs = 5_000): Promise<void> {
  process.kill(pid, "SIGSTOP");
  await eventually(
    () => threadStates(pid),
    (states) => states.length > 0 && states.every((s) => s === "T" || s === "t"),
    { timeoutMs, intervalMs: 1, what: `every thread of process ${pid} stopped` },
  );
}
