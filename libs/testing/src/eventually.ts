import { setTimeout as sleep } from "node:timers/promises";

/** Options of {@link eventually}. */
export interface EventuallyOptions {
  /** Give up after this long. Default 5 s: generous on a shared 2-core machine. */
  timeoutMs?: number;
  /** Pause between reads. Default 20 ms. */
  intervalMs?: number;
  /** Said in the error on timeout, beside the last value read. */
  what?: string;
}

/**
 * Reads `read()` until `done` holds on its value and returns that value; a
 * bounded poll on something observable, for state that has no event to wait
 * on (a stream's message count, a record written by another process). Throws
 * with the last value once `timeoutMs` pass.
 */
export async function eventually<T>(read: () => T | Promise<T>, done: (value: T) => boolean, opts: EventuallyOptions = {}): Promise<T> {
  const timeoutMs = opts.timeoutMs ?? 5_000;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (done(value)) return value;
    if (Date.now() > deadline) throw new Error(`${opts.what ?? "condition"} not met within ${timeoutMs} ms; last value: ${JSON.stringify(value)}`);
    await sleep(opts.intervalMs ?? 20);
  }
}

/** Options of {@link retryUntil}. */
export interface RetryUntilOptions {
  /** Give up after this long and throw the last error. */
  timeoutMs: number;
  /** Pause between attempts. Default 500 ms: each attempt is a network round trip. */
  intervalMs?: number;
}

/**
 * Calls `attempt` until it resolves and returns its value; on timeout throws
 * the last error. For an action that fails until the system has recovered
 * (a failover: reconnects, new stream leaders), where the action itself is
 * the observable event.
 */
export async function retryUntil<T>(attempt: () => Promise<T>, opts: RetryUntilOptions): Promise<T> {
  const deadline = Date.now() + opts.timeoutMs;
  for (;;) {
    try {
      return await attempt();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await sleep(opts.intervalMs ?? 500);
    }
  }
}
