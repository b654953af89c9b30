import type { KV, KvEntry } from "@nats-io/kv";
import type { Logger } from "pino";
import { LeaderOutOfContactError, leaderInContact } from "./leader-contact.js";
import { WatchedKv } from "./watched-kv.js";

/**
 * How long a fence waits for the stream leader's answer. Past it the batch
 * is refused (503) instead of left to run into the caller's request timeout.
 */
export const FENCE_TIMEOUT_MS = 1_500;

interface FenceWaiter<F> {
  resolve(fence: F): void;
  reject(err: unknown): void;
}

/**
 * Hands out fences so that a caller is only ever satisfied by a fence SENT
 * AFTER it asked: a fence sent earlier may predate a write acknowledged
 * before the caller's request arrived (a revoke, a removal), and deciding on
 * it would grant the old rights. Callers that ask while a fence is out wait
 * for the next one, sent once that one is done, so concurrent checks share
 * one request (coalescing) without ever reusing an older answer.
 */
export class FenceBatcher<F> {
  readonly #ask: () => Promise<F>;
  #open: FenceWaiter<F>[] | undefined;
  #running = false;
  /** Fences sent and callers they answered (or refused). */
  readonly stats = { fences: 0, waiters: 0 };

  /** `ask` sends one fence; it is called only after every caller it answers has called {@link next}. */
  constructor(ask: () => Promise<F>) {
    this.#ask = ask;
  }

  /** The answer of a fence sent after this call; rejects with that fence's error. */
  next(): Promise<F> {
    return new Promise<F>((resolve, reject) => {
      (this.#open ??= []).push({ resolve, reject });
      if (!this.#running) {
        this.#running = true;
        // Checks that arrive in the same read from the socket join this first fence.
        queueMicrotask(() => void this.#drain());
      }
    });
  }

  async #drain(): Promise<void> {
    try {
      while (this.#open !== undefined) {
        const batch = this.#open;
        this.#open = undefined;
        this.stats.fences++;
        this.stats.waiters += batch.length;
        try {
          const fence = await this.#ask();
          for (const w of batch) w.resolve(fence);
        } catch (err) {
          for (const w of batch) w.reject(err);
        }
      }
    } finally {
      this.#running = false;
    }
  }
}

/** The copy was not current with its fence: a watcher behind, stopped or replaced. Refuse, never guess. */
export class FencedCopyBehindError extends Error {
  constructor(
    readonly copy: string,
    readonly fence: number,
    readonly applied: number,
  ) {
    super(`${copy}: the copy has applied ${applied}, behind its fence ${fence}`);
    this.name = "FencedCopyBehindError";
  }
}

/** Options of {@link FencedCopy}. */
export interface FencedCopyOptions {
  /** `op` of the watcher's log lines, e.g. `view.members.watch`. */
  readonly op: string;
  readonly logger: Logger;
  /** Replace a watcher that stays behind this long (the kit's default otherwise). */
  readonly stallMs?: number;
  /** How long a fence waits for the leader's stream info. Default {@link FENCE_TIMEOUT_MS}. */
  readonly fenceTimeoutMs?: number;
}

/** A live record of the copy: the value bytes as stored, and its revision (stream sequence). */
export interface FencedRecord {
  readonly value: Uint8Array;
  readonly revision: number;
}

/**
 * A KV bucket held in memory from a watch, read only behind a fence: every
 * {@link get} is answered from the copy once a stream info sent after the
 * get arrived has been answered by the stream leader, in contact with its
 * quorum, and the copy has applied the last sequence that answer gives.
 *
 * Why not a leader get beside (or after) a fence: nats-server answers a get
 * from any node that believes it leads, and a leader paused past an
 * election answers with its old records once resumed, before it learns of
 * the new term; a get carries no server identity, so it cannot be tied to
 * the leader that answered the fence (seen on a real cluster: the fence from
 * the new leader, the get from the old). The copy can: it is checked
 * against the fence's own sequence, and the watch delivers the stream in
 * order, so a copy that applied that sequence holds every write the fence's
 * leader had acknowledged. (Read-after-write by `min_last_seq` on the get
 * would do the same without a copy; nats-server 2.15 has no such option.)
 *
 * Fail closed: a fence not answered within the bound, answered by a leader
 * out of contact or by a replica that is not the leader, or a copy still
 * behind after the kit's catch-up bound, rejects; the caller answers 503.
 */
export class FencedCopy {
  readonly #kv: KV;
  readonly #op: string;
  readonly #watch: WatchedKv;
  readonly #records = new Map<string, FencedRecord>();
  readonly #batcher: FenceBatcher<number>;
  readonly #fenceTimeoutMs: number;
  #started: Promise<void> | undefined;
  /** Gets answered from memory, refused because the copy was behind its fence, refused because the fence failed. */
  readonly stats = { fromMemory: 0, behind: 0, refused: 0 };

  constructor(kv: KV, opts: FencedCopyOptions) {
    this.#kv = kv;
    this.#op = opts.op;
    this.#fenceTimeoutMs = opts.fenceTimeoutMs ?? FENCE_TIMEOUT_MS;
    this.#watch = new WatchedKv(kv, {
      op: opts.op,
      logger: opts.logger,
      fallback: "refusing reads until the copy catches up",
      ...(opts.stallMs !== undefined ? { stallMs: opts.stallMs } : {}),
      reset: () => this.#records.clear(),
      apply: (e) => this.#apply(e),
    });
    this.#batcher = new FenceBatcher(() => this.#fence());
  }

  /** Fences sent so far. */
  get fences(): number {
    return this.#batcher.stats.fences;
  }

  /** Starts the watch (the first {@link get} does it otherwise); a failed start is retried by the next get. */
  start(): Promise<void> {
    this.#started ??= this.#watch.start().catch((err: unknown) => {
      this.#started = undefined;
      throw err;
    });
    return this.#started;
  }

  stop(): void {
    this.#watch.stop();
  }

  #apply(e: KvEntry): void {
    if (e.operation === "PUT") this.#records.set(e.key, { value: e.value, revision: e.revision });
    else this.#records.delete(e.key);
  }

  /**
   * `key`'s live record (null: never written, deleted or purged), as of a
   * fence sent after this call. Rejects when the fence or the copy cannot
   * vouch for the answer.
   */
  async get(key: string): Promise<FencedRecord | null> {
    let fence: number;
    try {
      fence = await this.#batcher.next();
    } catch (err) {
      if (err instanceof FencedCopyBehindError) this.stats.behind++;
      else this.stats.refused++;
      throw err;
    }
    // Checked synchronously with the read: a watcher replaced since the
    // fence's catch-up restarts from an empty copy and must not answer.
    if (!this.#watch.healthy || this.#watch.applied < fence) {
      this.stats.behind++;
      throw new FencedCopyBehindError(this.#op, fence, this.#watch.applied);
    }
    this.stats.fromMemory++;
    return this.#records.get(key) ?? null;
  }

  /** The leader's last sequence, once the copy has applied it. */
  async #fence(): Promise<number> {
    await this.start();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${this.#op}: fence not answered within ${this.#fenceTimeoutMs} ms`)), this.#fenceTimeoutMs);
    });
    let last: number;
    try {
      const { streamInfo } = await Promise.race([this.#kv.status(), timeout]);
      if (!leaderInContact(streamInfo)) throw new LeaderOutOfContactError(streamInfo.config.name);
      last = streamInfo.state.last_seq;
    } finally {
      clearTimeout(timer);
    }
    if (!(await this.#watch.caughtUpTo(last))) throw new FencedCopyBehindError(this.#op, last, this.#watch.applied);
    return last;
  }
}
