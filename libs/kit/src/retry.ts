import { setTimeout as sleep } from "node:timers/promises";

/** Options of {@link retry}. */
export interface RetryOptions {
  /** Retry until this long after the first attempt; a failure after it is final. */
  readonly budgetMs: number;
  /** Wait before retry `n` (1 = the first retry): a fixed time, or a function for a backoff. */
  readonly delayMs: number | ((retry: number) => number);
  /** False for an error no retry can fix: it is rethrown at once. Default: every error is retried. */
  readonly retryable?: (err: unknown) => boolean;
  /** Called before each wait, e.g. to log that the target is not ready yet. */
  readonly onRetry?: (err: unknown, retry: number) => void;
}

/**
 * Runs `op` until it succeeds, waiting between attempts, for at most
 * `budgetMs`: for a start-up that depends on something another process
 * brings up (a bucket, a service, the server). Rethrows the last error once
 * the budget is spent or the error is not retryable, so the caller reports
 * the real cause.
 */
export async function retry<T>(op: (attempt: number) => Promise<T>, opts: RetryOptions): Promise<T> {
  const deadline = Date.now() + opts.budgetMs;
  for (let attempt = 1; ; attempt++) {
    try {
      return await op(attempt);
    } catch (err) {
      if (opts.retryable?.(err) === false || Date.now() >= deadline) throw err;
      opts.onRetry?.(err, attempt);
      await sleep(typeof opts.delayMs === "number" ? opts.delayMs : opts.delayMs(attempt));
    }
  }
}
