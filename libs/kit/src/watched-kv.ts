import type { KV, KvEntry } from "@nats-io/kv";
import type { Logger } from "pino";
import { leaderInContact } from "./leader-contact.js";

/** How long a lookup waits for the watcher to catch up with the bucket before the caller reads the bucket directly. */
export const WATCH_CATCH_UP_MS = 500;

/**
 * How long a watcher may stay behind the bucket without progress (or stay
 * stopped) before it is replaced by a new one. After the node leading
 * `members` was killed, the ordered consumer under a watch was seen stuck
 * one revision short for as long as the test looked (30 s), and every
 * caller paid the catch-up wait and a read of the whole bucket.
 */
const STALL_MS = 5_000;

/** What a {@link WatchedKv} feeds its owner's in-memory copy, and how it watches. */
export interface WatchedKvOptions {
  /** Watch key names and operations only (no values). */
  readonly headersOnly?: boolean;
  /** `op` of its log lines, e.g. `members.watch`. */
  readonly op: string;
  /** Said when the watcher fails: what callers do meanwhile. Default: reading the bucket directly. */
  readonly fallback?: string;
  readonly logger: Logger;
  /** How long a stall lasts before the watch is replaced. Default {@link STALL_MS}. */
  readonly stallMs?: number;
  /**
   * Empties the copy before a replacement watch replays the bucket. Without
   * it the replay lands on the old copy, which KV's replay (the latest entry
   * of every key, delete markers included) also leaves correct.
   */
  reset?(): void;
  /** Applies one entry to the copy; a throw ends that watcher (callers then read the bucket until it is replaced). */
  apply(entry: KvEntry): void;
}

/**
 * A KV bucket followed by a watcher into an in-memory copy, with one error
 * policy for every cache built on it. {@link caughtUp} fences every use: it
 * reads the bucket's last sequence from the stream leader (in contact with
 * its quorum, as the kit's `leaderInContact` checks) and waits until
 * the copy has applied it; when that check cannot be made (the stream-info
 * request fails), the watcher is behind for {@link WATCH_CATCH_UP_MS}, or it
 * has stopped, the answer is false and the caller reads the bucket directly,
 * whose errors are 503: a stale copy never answers, and a broken one costs
 * speed, not correctness. A watcher that stays behind or stopped is replaced
 * (fresh copy, fresh watch) instead of leaving every later caller on the
 * slow path.
 */
export class WatchedKv {
  readonly #kv: KV;
  readonly #opts: WatchedKvOptions;
  #seen = 0;
  #healthy = false;
  #stopped = false;
  #stopIter: (() => void) | undefined;
  /** Bumped by every (re)start: entries from an older watch are ignored. */
  #generation = 0;
  /** Since when the watcher has been behind without progress, or stopped; undefined while it keeps up. */
  #stalledSince: number | undefined;
  #restarting = false;

  constructor(kv: KV, opts: WatchedKvOptions) {
    this.#kv = kv;
    this.#opts = opts;
  }

  /** A started watch: {@link start} already awaited. */
  static async watch(kv: KV, opts: WatchedKvOptions): Promise<WatchedKv> {
    const watched = new WatchedKv(kv, opts);
    await watched.start();
    return watched;
  }

  /** The bucket it follows. */
  get kv(): KV {
    return this.#kv;
  }

  get #fallback(): string {
    return this.#opts.fallback ?? "reading the bucket directly";
  }

  /** Starts (or replaces) the watch; resolves once it is created. */
  async start(): Promise<void> {
    const generation = ++this.#generation;
    this.#stopIter?.();
    this.#healthy = false;
    const iter = await this.#kv.watch(this.#opts.headersOnly === true ? { headers_only: true } : {});
    if (this.#stopped || generation !== this.#generation) {
      iter.stop();
      return;
    }
    this.#opts.reset?.();
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
        this.#opts.logger.error({ op: this.#opts.op, err: (err as Error).message }, `watcher failed; ${this.#fallback}`);
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

  /** The highest revision the copy has applied (0 right after a (re)start). */
  get applied(): number {
    return this.#seen;
  }

  /**
   * Changes every time the watch is (re)started: a copy seen current at one
   * generation restarted from empty since if this differs.
   */
  get generation(): number {
    return this.#generation;
  }

  /** False while no watcher feeds the copy (stopped, failed, or being replaced). */
  get healthy(): boolean {
    return this.#healthy;
  }

  /** True once the copy reflects every write to the bucket made before this call; false: read the bucket. */
  async caughtUp(): Promise<boolean> {
    if (!this.#healthy) {
      this.#restartIfStalled();
      return false;
    }
    let last: number;
    try {
      const { streamInfo } = await this.#kv.status();
      // Only the leader's word, from a leader that hears its quorum: a
      // replica just resumed from a pause answers stream info with a last
      // sequence far behind, and a copy "caught up" to it misses a removal.
      if (!leaderInContact(streamInfo)) return false;
      last = streamInfo.state.last_seq;
    } catch {
      return false;
    }
    return this.caughtUpTo(last);
  }

  /**
   * True once the copy has applied revision `last`, read by the caller from
   * the stream leader; false (read the bucket) when the watcher is stopped or
   * stays behind for {@link WATCH_CATCH_UP_MS}. A watcher that stays behind
   * without progress is replaced, as for {@link caughtUp}.
   */
  async caughtUpTo(last: number): Promise<boolean> {
    if (!this.#healthy) {
      this.#restartIfStalled();
      return false;
    }
    if (this.#seen >= last) {
      this.#stalledSince = undefined;
      return true;
    }
    const seenBefore = this.#seen;
    const deadline = Date.now() + WATCH_CATCH_UP_MS;
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
        this.#opts.logger.error({ op: this.#opts.op, err: (err as Error).message }, `watcher restart failed; ${this.#fallback}`);
      })
      .finally(() => {
        clearTimeout(timer);
        this.#restarting = false;
      });
  }
}
