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
