import type { KV, KvWatchEntry } from "@nats-io/kv";
import type { Logger } from "pino";

/** How long a lookup waits for the watcher to catch up with the bucket before the caller reads the bucket directly. */
export const WATCH_CATCH_UP_MS = 500;

/** What a {@link WatchedKv} is told and how it watches. */
export interface WatchedKvOptions {
  readonly logger: Logger;
  /** Log `op` of a watcher failure, e.g. `members.watch`. */
  readonly op: string;
  /** Watch key names and operations only (no values). */
  readonly headersOnly?: boolean;
  /** Applies one entry to the cache; a throw ends the watcher (the cache then answers "not caught up" for good). */
  readonly apply: (entry: KvWatchEntry) => void;
}

/**
 * A KV bucket followed by a watcher into an in-memory cache, with one error
 * policy for every cache built on it: the cache vouches for its contents
 * only after it has applied every write up to the bucket's last sequence
 * read at the time of the lookup, so a write committed before the lookup
 * began is always reflected. When that check cannot be made (the stream
 * info request fails), the watcher is behind for {@link WATCH_CATCH_UP_MS},
 * or the watcher has stopped (logged once), {@link caughtUp} is false and the
 * caller reads the bucket directly, whose errors are 503: a stale cache never
 * answers, and a broken one costs speed, not correctness.
 */
export class WatchedKv {
  readonly kv: KV;
  #seen = 0;
  #healthy = false;
  #stop: (() => void) | undefined;

  private constructor(kv: KV) {
    this.kv = kv;
  }

  /** Starts the watcher; resolves once it is running (initial values follow as entries). */
  static async watch(kv: KV, opts: WatchedKvOptions): Promise<WatchedKv> {
    const watched = new WatchedKv(kv);
    const iter = await kv.watch(opts.headersOnly === true ? { headers_only: true } : {});
    watched.#stop = () => iter.stop();
    watched.#healthy = true;
    void (async () => {
      try {
        for await (const e of iter) {
          opts.apply(e);
          watched.#seen = Math.max(watched.#seen, e.revision);
        }
      } catch (err) {
        opts.logger.error({ op: opts.op, err: (err as Error).message }, "KV watcher failed; reading the bucket directly");
      } finally {
        watched.#healthy = false;
      }
    })();
    return watched;
  }

  /** True once the cache holds every write up to the bucket's last sequence as of this call. */
  async caughtUp(): Promise<boolean> {
    if (!this.#healthy) return false;
    let last: number;
    try {
      last = (await this.kv.status()).streamInfo.state.last_seq;
    } catch {
      return false;
    }
    const deadline = Date.now() + WATCH_CATCH_UP_MS;
    while (this.#healthy && this.#seen < last) {
      if (Date.now() > deadline) return false;
      await new Promise((r) => setTimeout(r, 2));
    }
    return this.#healthy;
  }

  stop(): void {
    this.#stop?.();
    this.#healthy = false;
  }
}
