import { rmSync } from "node:fs";

/** Something that must be undone synchronously if the test process dies before `stop()`. */
interface Leftover {
  /** Kills server processes (must be synchronous). */
  kill(): void;
  /** Temp dir to remove, if this owner created it. */
  dir?: string;
}

const leftovers = new Set<Leftover>();
let installed = false;

function sweep(): void {
  for (const l of leftovers) {
    try {
      l.kill();
    } catch {
      // Already gone.
    }
    if (l.dir) rmSync(l.dir, { recursive: true, force: true });
  }
  leftovers.clear();
}

function onSignal(signal: NodeJS.Signals): void {
  sweep();
  // Restore the default disposition so the process still dies of the signal
  // it was sent (we only wanted to clean up on the way out).
  process.removeListener(signal, onSignal);
  if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
}

/**
 * Registers servers and temp dirs to be killed and removed when the process
 * exits or is interrupted, so a failing or aborted test leaves nothing behind.
 * Returns the function that unregisters them after a normal `stop()`.
 */
export function trackLeftover(leftover: Leftover): () => void {
  if (!installed) {
    installed = true;
    process.once("exit", sweep);
    for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.once(signal, onSignal);
  }
  leftovers.add(leftover);
  return () => {
    leftovers.delete(leftover);
  };
}
