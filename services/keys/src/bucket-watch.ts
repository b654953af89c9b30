import type { KV, KvEntry } from "@nats-io/kv";
import type { Logger } from "pino";

/** How long a caller waits for the watcher to catch up with the bucket before reading the bucket itself. */
const CATCH_UP_MS = 500;

/**
 * How long a watcher may stay behind the bucket without progress (or stay
 * stopped) before it is replaced by a new one. After the node leading
 * `members` was killed, the ordered consumer under a watch was seen stuck
 * one revision short for as long as the test looked (30 s), and every
 * caller paid the catch-up wait and a read of the whole bucket.
 */
const STALL_MS = 5_000;

/** What a {@link BucketWatch} feeds its owner's in-memory copy. */
export interface BucketWatchOptions {
  /** Watch key names and operations only. */
  readonly headersOnly: boolean;
  /** `op` of its log lines, e.g. `members.watch`. */
  readonly op: string;
  /** Said when the watcher fails: what callers do meanwhile. */
  readonly fallback: string;
  readonly logger: Logger;
  /** How long a stall lasts before the watch is replaced. Default {@link STALL_MS}. */
  readonly stallMs?: number;
  /** Empties the copy: a new watch delivers every key's current state again. */
  reset(): void;
  apply(entry: KvEntry): void;
}

/**
 * A KV watch that keeps an in-memory copy of a bucket, for the keys
 * service's directories. {@link caughtUp} fences every use: it reads the
 * bucket's last sequence from the stream leader and waits until the copy
 * has applied it, else the caller reads the bucket. A watcher that stays
 * behind or stops is replaced (fresh copy, fresh watch) instead of leaving
 * every later caller on the slow path.
 */
export class BucketWatch {
  readonly #kv: KV;
  readonly #opts: BucketWatchOptions;
  #seen = 0;
  #healthy = false;
  #stopped = false;
  #stopIter: (() => void) | undefined;
  /** Bumped by every (re)start: entries from an older watch are ignored. */
  #generation = 0;
  /** Since when the watcher has been behind without progress, or stopped; undefined while it keeps up. */
  #stalledSince: number | undefined;
  #restarting = false;

  constructor(kv: KV, opts: BucketWatchOptions) {
    this.#kv = kv;
    this.#opts = opts;
  }

  /** Starts (or replaces) the watch; resolves once it is created. */
  async start(): Promise<void> {
    const generation = ++this.#generation;
    this.#stopIter?.();
    this.#healthy = false;
    const iter = await this.#kv.watch({ headers_only: this.#opts.headersOnly });
    if (this.#stopped || generation !== this.#generation) {
      iter.stop();
      return;
    }
    this.#opts.reset();
    this.#seen = 0;
    this.#stalledSince = undefined;
    this.#stopIter = () => iter.stop();
    this.#healthy = true;
    void (async () => {
      try {
        for await (const e of iter) {
          if (generation !== this.#generation) break;
          this.#opts.apply(e);
          this.#seen = Math.max(this.#seen, e.revision);
        }
      } catch (err) {
        this.#opts.logger.error({ op: this.#opts.op, err: (err as Error).message }, `watcher failed; ${this.#opts.fallback}`);
      } finally {
        if (generation === this.#generation) this.#healthy = false;
      }
    })();
  }

  stop(): void {
    this.#stopped = true;
    this.#stopIter?.();
    this.#healthy = false;
  }

  /** True once the copy reflects every write to the bucket made before this call; false: read the bucket. */
  async caughtUp(): Promise<boolean> {
    if (!this.#healthy) {
      this.#restartIfStalled();
      return false;
    }
    let last: number;
    try {
      last = (await this.#kv.status()).streamInfo.state.last_seq;
    } catch {
      return false;
    }
    const seenBefore = this.#seen;
    const deadline = Date.now() + CATCH_UP_MS;
    while (this.#healthy && this.#seen < last) {
      if (Date.now() > deadline) {
        // Progress during the wait: catching up under load, not stalled.
        if (this.#seen > seenBefore) this.#stalledSince = undefined;
        this.#restartIfStalled();
        return false;
      }
      await new Promise((r) => setTimeout(r, 2));
    }
    if (this.#healthy) this.#stalledSince = undefined;
    return this.#healthy;
  }

  /** Replaces a watcher stalled for `stallMs`; one restart at a time, never awaited by a caller. */
  #restartIfStalled(): void {
    if (this.#stopped || this.#restarting) return;
    const now = Date.now();
    this.#stalledSince ??= now;
    if (now - this.#stalledSince < (this.#opts.stallMs ?? STALL_MS)) return;
    this.#opts.logger.warn({ op: this.#opts.op, seen: this.#seen, stalledMs: now - this.#stalledSince }, "watcher stalled; starting a new one");
    this.#restarting = true;
    const stallMs = this.#opts.stallMs ?? STALL_MS;
    let timer: NodeJS.Timeout | undefined;
    // A watch that is not even created within a stall period (its consumer
    // create unanswered) is given up: the generation moves on, so if it
    // still arrives it stops itself, and a later caller starts another.
    const bounded = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        this.#generation++;
        reject(new Error(`watch not created within ${stallMs} ms`));
      }, stallMs);
    });
    Promise.race([this.start(), bounded])
      .catch((err: unknown) => {
        // Still stalled: a later caller tries again after another stall period.
        this.#stalledSince = Date.now();
        this.#opts.logger.error({ op: this.#opts.op, err: (err as Error).message }, `watcher restart failed; ${this.#opts.fallback}`);
      })
      .finally(() => {
        clearTimeout(timer);
        this.#restarting = false;
      });
  }
}
