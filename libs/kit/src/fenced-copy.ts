import type { KV, KvEntry } from "@nats-io/kv";
import type { Logger } from "pino";
import { LeaderOutOfContactError, leaderInContact } from "./leader-contact.js";
import { WatchedKv } from "./watched-kv.js";

/**
 * How long a fence waits for the stream leader's answer. Past it the batch
 * is refused (503) instead of left to run into the caller's request timeout.
 */
export const FENCE_TIMEOUT_MS = 1_500;

/** Options of {@link FenceBatcher}. */
export interface FenceBatcherOptions {
  /**
   * Fences out at once (default 1). Callers beyond wait together in one open
   * batch, sent when a fence returns. Bounded: each fence is a request to the
   * stream leaders, and a burst of callers must not become a burst of them.
   */
  readonly maxInFlight?: number;
}

/** A caller's place in a fence's batch, taken by {@link FenceBatcher.begin}. */
export interface BegunFence<F> {
  /**
   * The answer of a fence sent after the call that took this place. It
   * always has a handler, so a place taken and never awaited (a caller that
   * gave up before reading) is no unhandled rejection.
   */
  readonly fence: Promise<F>;
  /**
   * True when that fence leaves now (in a microtask): work done before
   * awaiting it overlaps its round trip. False when it waits for a fence
   * already out, and yielding to let it leave would only delay the work.
   */
  readonly leavesNow: boolean;
}

interface Batch<F> {
  sent: boolean;
  readonly outcome: Promise<F>;
  settle(v: F): void;
  fail(err: unknown): void;
}

function newBatch<F>(): Batch<F> {
  let settle!: (v: F) => void;
  let fail!: (err: unknown) => void;
  const outcome = new Promise<F>((resolve, reject) => {
    settle = resolve;
    fail = reject;
  });
  outcome.catch(() => undefined);
  return { sent: false, outcome, settle, fail };
}

/**
 * Hands out fences so that a caller is only ever satisfied by a fence SENT
 * AFTER it asked: a fence sent earlier may predate a write acknowledged
 * before the caller's request arrived (a revoke, a removal), and deciding on
 * it would grant the old rights. A caller joins the open batch, never one
 * already sent; the open batch leaves in a microtask (so callers that arrive
 * in the same read from the socket share it) when fewer than `maxInFlight`
 * fences are out, else when one returns. Concurrent checks thus share one
 * request (coalescing) without ever reusing an older answer.
 */
export class FenceBatcher<F> {
  readonly #ask: () => Promise<F>;
  readonly #maxInFlight: number;
  /** The batch not sent yet, which a caller asking now joins. */
  #open: Batch<F> | undefined;
  #inFlight = 0;
  /** Fences sent, callers that joined one, and the most fences out at once so far. */
  readonly stats = { fences: 0, waiters: 0, maxInFlight: 0 };

  /** `ask` sends one fence; it is called only after every caller it answers has called {@link next} or {@link begin}. */
  constructor(ask: () => Promise<F>, opts: FenceBatcherOptions = {}) {
    this.#ask = ask;
    this.#maxInFlight = Math.max(1, opts.maxInFlight ?? 1);
  }

  /** The answer of a fence sent after this call; rejects with that fence's error. */
  next(): Promise<F> {
    return this.begin().fence;
  }

  /** Joins the next fence to be sent, now; the fence is sent after this call returns, never before. */
  begin(): BegunFence<F> {
    let batch = this.#open;
    const leavesNow = this.#inFlight < this.#maxInFlight;
    if (batch === undefined) {
      batch = this.#open = newBatch<F>();
      if (leavesNow) queueMicrotask(() => this.#sendOpen());
    }
    this.stats.waiters++;
    return { fence: batch.outcome, leavesNow };
  }

  /** Sends the open batch's fence if a slot is free; otherwise the next fence to return sends it. */
  #sendOpen(): void {
    const batch = this.#open;
    if (batch === undefined || batch.sent || this.#inFlight >= this.#maxInFlight) return;
    this.#open = undefined;
    batch.sent = true;
    this.#inFlight++;
    this.stats.fences++;
    this.stats.maxInFlight = Math.max(this.stats.maxInFlight, this.#inFlight);
    // Called at once (an async wrapper only turns a throw into a rejection).
    const asked = (async () => this.#ask())();
    void asked
      .then(
        (v) => batch.settle(v),
        (err: unknown) => batch.fail(err),
      )
      .finally(() => {
        this.#inFlight--;
        this.#sendOpen();
      });
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

/** One bucket of {@link FencedCopies}: its handle, and what the copy holds for each live record. */
export interface FencedBucket<T> {
  readonly kv: KV;
  /** `op` of the watcher's log lines, e.g. `view.members.watch`. */
  readonly op: string;
  /**
   * What the copy holds for a live record (a PUT), computed once as the
   * watch applies it rather than at every read: a parsed, checked record,
   * or a note that it is damaged. It must not throw: a throw stops the
   * watch, and every read is refused until the watcher is replaced.
   */
  readonly hold: (entry: KvEntry) => T;
  /**
   * The group of a live key (e.g. a `members` key's room), so that
   * {@link FencedView.keysIn} lists a group without scanning the copy;
   * undefined puts the key in none. Without it the bucket has no groups.
   */
  readonly group?: (key: string) => string | undefined;
}

/** Options of {@link FencedCopies}. */
export interface FencedCopiesOptions {
  readonly logger: Logger;
  /** Replace a watcher that stays behind this long (the kit's default otherwise). */
  readonly stallMs?: number;
  /** How long a fence waits for the leaders' stream info. Default {@link FENCE_TIMEOUT_MS}. */
  readonly fenceTimeoutMs?: number;
  /** Fences out at once (default 1); see {@link FenceBatcherOptions.maxInFlight}. */
  readonly maxFencesInFlight?: number;
  /** What the watchers' log lines say is done while a copy is down. */
  readonly fallback?: string;
}

/** Counters of a fenced copy, for tests, benches and logs. */
export interface FencedCopyStats {
  /** Fences sent (each: one stream-info request per bucket). */
  fences: number;
  /** Most fences out at once so far (bounded by `maxFencesInFlight`). */
  maxInFlight: number;
  /** Reads answered from memory after their fence. */
  fromMemory: number;
  /** Reads refused because a copy stayed behind its fence (or its watcher was replaced meanwhile). */
  behind: number;
  /** Reads refused because their fence failed (no answer in time, or a leader out of contact). */
  refused: number;
  /** Reads answered from memory without a fence of their own, under a holder's guarantee ({@link FencedCopies.readHeld}). */
  held: number;
}

/**
 * What one fence proved: each copy's sequence, and the watch generation
 * that applied it. A copy still holds every write up to its sequence while
 * its generation is unchanged (a replaced watcher starts from empty).
 */
export interface FenceMark {
  readonly seqs: readonly number[];
  readonly generations: readonly number[];
}

/** The copies as of one fence, readable only while the read's callback runs. */
export interface FencedView<B> {
  /** `key`'s record in `bucket` (null: never written, deleted or purged). */
  get<K extends keyof B>(bucket: K, key: string): B[K] | null;
  /** The live keys of `group` in `bucket`, unsorted; throws for a bucket without groups (never a silent "none"). */
  keysIn<K extends keyof B>(bucket: K, group: string): string[];
  /** Every live record of `bucket`, as `[key, record]`. */
  entries<K extends keyof B>(bucket: K): Array<[string, B[K]]>;
}

/** A read whose fence was begun ({@link FencedCopies.begin}); answered no earlier than that fence allows. */
export interface BegunRead<B> {
  /** See {@link BegunFence.leavesNow}. */
  readonly leavesNow: boolean;
  /** Calls `read` with the copies once the fence vouches for them; rejects (never calls it) otherwise. */
  read<R>(read: (view: FencedView<B>) => R): Promise<R>;
}

/** One bucket's watched copy, fenced on its own stream leader. */
class Copy<T> {
  readonly records = new Map<string, T>();
  /** Live keys by {@link FencedBucket.group}, kept with `records`. */
  readonly groups = new Map<string, Set<string>>();
  readonly watch: WatchedKv;

  constructor(
    readonly bucket: FencedBucket<T>,
    opts: FencedCopiesOptions,
  ) {
    this.watch = new WatchedKv(bucket.kv, {
      op: bucket.op,
      logger: opts.logger,
      fallback: opts.fallback ?? "refusing reads until the copy catches up",
      ...(opts.stallMs !== undefined ? { stallMs: opts.stallMs } : {}),
      reset: () => {
        this.records.clear();
        this.groups.clear();
      },
      apply: (e) => {
        if (e.operation === "PUT") this.records.set(e.key, bucket.hold(e));
        else this.records.delete(e.key);
        const group = bucket.group?.(e.key);
        if (group !== undefined) this.#regroup(group, e.key, e.operation === "PUT");
      },
    });
  }

  #regroup(group: string, key: string, live: boolean): void {
    let keys = this.groups.get(group);
    if (live) {
      if (keys === undefined) this.groups.set(group, (keys = new Set()));
      keys.add(key);
    } else if (keys !== undefined) {
      keys.delete(key);
      if (keys.size === 0) this.groups.delete(group);
    }
  }

  keysIn(group: string): string[] {
    if (this.bucket.group === undefined) throw new Error(`${this.bucket.op}: the copy groups no keys`);
    return [...(this.groups.get(group) ?? [])];
  }

  /** The leader's last sequence, once the copy has applied it. */
  async fence(timeoutMs: number): Promise<number> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${this.bucket.op}: fence not answered within ${timeoutMs} ms`)), timeoutMs);
    });
    let last: number;
    try {
      const { streamInfo } = await Promise.race([this.bucket.kv.status(), timeout]);
      if (!leaderInContact(streamInfo)) throw new LeaderOutOfContactError(streamInfo.config.name);
      last = streamInfo.state.last_seq;
    } finally {
      clearTimeout(timer);
    }
    if (!(await this.watch.caughtUpTo(last))) throw new FencedCopyBehindError(this.bucket.op, last, this.watch.applied);
    return last;
  }

  /** Whether the copy still holds every write up to `fence`: a watcher replaced since its catch-up restarts from empty. */
  currentWith(fence: number): boolean {
    return this.watch.healthy && this.watch.applied >= fence;
  }
}

/**
 * KV buckets held in memory from watches, read only behind a fence: every
 * read is answered from the copies once a fence sent after the read arrived
 * ({@link FenceBatcher}) has been answered by each bucket's stream leader,
 * in contact with its quorum, and each copy has applied the last sequence
 * its leader gave. The leader had applied every write it acknowledged, so a
 * write acknowledged before the read arrived is at or below that sequence,
 * and the watch delivers the stream in order: a copy that applied it holds
 * the write (or a later one of the same key).
 *
 * Why not a leader get beside (or after) a fence: nats-server answers a get
 * from any node that believes it leads, and a leader paused past an
 * election answers with its old records once resumed, before it learns of
 * the new term; a get carries no server identity, so it cannot be tied to
 * the leader that answered the fence (seen on a real cluster: the fence from
 * the new leader, the get from the old). The copy can: it is checked
 * against the fence's own sequence. (Read-after-write by `min_last_seq` on
 * the get would do the same without a copy; nats-server 2.15 has no such
 * option.)
 *
 * Fail closed: a fence not answered within the bound, answered by a leader
 * out of contact or by a replica that is not the leader, or a copy still
 * behind after the kit's catch-up bound (its watcher is replaced once
 * stalled), rejects the whole batch. A fence is one stream-info request per
 * bucket however many reads wait on it.
 */
export class FencedCopies<B extends object> {
  readonly #copies: { readonly [K in keyof B]: Copy<B[K]> };
  readonly #list: readonly Copy<unknown>[];
  readonly #batcher: FenceBatcher<readonly number[]>;
  readonly #fenceTimeoutMs: number;
  readonly #counts = { fromMemory: 0, behind: 0, refused: 0, held: 0 };
  #started: Promise<void> | undefined;
  /**
   * The one view reads are handed, open only while a read's callback runs
   * (reads are synchronous, so one at a time): a view kept for later would
   * be an unfenced read.
   */
  readonly #view: FencedView<B> = {
    get: (bucket, key) => {
      if (!this.#viewOpen) throw new Error("a fenced view read after its read returned");
      return this.#copies[bucket].records.get(key) ?? null;
    },
    keysIn: (bucket, group) => {
      if (!this.#viewOpen) throw new Error("a fenced view read after its read returned");
      return this.#copies[bucket].keysIn(group);
    },
    entries: (bucket) => {
      if (!this.#viewOpen) throw new Error("a fenced view read after its read returned");
      return [...this.#copies[bucket].records.entries()];
    },
  };
  #viewOpen = false;

  constructor(buckets: { readonly [K in keyof B]: FencedBucket<B[K]> }, opts: FencedCopiesOptions) {
    const copies = {} as { [K in keyof B]: Copy<B[K]> };
    for (const name of Object.keys(buckets) as Array<keyof B>) copies[name] = new Copy(buckets[name], opts);
    this.#copies = copies;
    this.#list = Object.values<Copy<unknown>>(copies);
    this.#fenceTimeoutMs = opts.fenceTimeoutMs ?? FENCE_TIMEOUT_MS;
    this.#batcher = new FenceBatcher(() => this.#fence(), { maxInFlight: opts.maxFencesInFlight ?? 1 });
  }

  get stats(): FencedCopyStats {
    return { fences: this.#batcher.stats.fences, maxInFlight: this.#batcher.stats.maxInFlight, ...this.#counts };
  }

  /** Starts the watches (the first read does it otherwise); a failed start is retried by the next read. */
  start(): Promise<void> {
    this.#started ??= Promise.all(this.#list.map((c) => c.watch.start())).then(
      () => undefined,
      (err: unknown) => {
        this.#started = undefined;
        throw err;
      },
    );
    return this.#started;
  }

  stop(): void {
    for (const c of this.#list) c.watch.stop();
  }

  /** {@link begin} and read at once. */
  read<R>(read: (view: FencedView<B>) => R): Promise<R> {
    return this.begin().read(read);
  }

  /**
   * Joins the next fence to be sent, now, so that work the caller does
   * before reading runs while the fence is out. The fence is sent after this
   * call returns: a write acknowledged before it is at or below its
   * sequences.
   */
  begin(): BegunRead<B> {
    const begun = this.#batcher.begin();
    return { leavesNow: begun.leavesNow, read: (read) => this.#read(begun.fence, read) };
  }

  async #read<R>(fence: Promise<readonly number[]>, read: (view: FencedView<B>) => R): Promise<R> {
    let seqs: readonly number[];
    try {
      seqs = await fence;
    } catch (err) {
      if (err instanceof FencedCopyBehindError) this.#counts.behind++;
      else this.#counts.refused++;
      throw err;
    }
    // Checked synchronously with the read: a watcher replaced since the
    // fence's catch-up restarts from an empty copy and must not answer.
    // Otherwise a copy only moves forward, so a read answered later than its
    // fence returned is answered from data at least as new.
    for (let i = 0; i < this.#list.length; i++) {
      const copy = this.#list[i]!;
      const seq = seqs[i]!;
      if (!copy.currentWith(seq)) {
        this.#counts.behind++;
        throw new FencedCopyBehindError(copy.bucket.op, seq, copy.watch.applied);
      }
    }
    this.#counts.fromMemory++;
    this.#viewOpen = true;
    try {
      return read(this.#view);
    } finally {
      this.#viewOpen = false;
    }
  }

  /**
   * A fence sent after this call (shared with the reads of its batch): each
   * leader's last sequence once each copy has applied it, with the watch
   * generations that applied them. Rejects as a read on that fence would.
   */
  async mark(): Promise<FenceMark> {
    let seqs: readonly number[];
    try {
      seqs = await this.#batcher.next();
    } catch (err) {
      if (err instanceof FencedCopyBehindError) this.#counts.behind++;
      else this.#counts.refused++;
      throw err;
    }
    const generations = this.#list.map((c) => c.watch.generation);
    if (!this.holds({ seqs, generations })) {
      this.#counts.behind++;
      throw new FencedCopyBehindError(this.#list[0]!.bucket.op, seqs[0] ?? 0, this.#list[0]!.watch.applied);
    }
    return { seqs, generations };
  }

  /** Each copy's watch generation now (see {@link FenceMark}). */
  generations(): readonly number[] {
    return this.#list.map((c) => c.watch.generation);
  }

  /** Whether every copy still holds what `mark` proved: the same watch, healthy, at or past its sequence. */
  holds(mark: FenceMark): boolean {
    return this.#list.every((c, i) => c.watch.generation === mark.generations[i] && c.currentWith(mark.seqs[i]!));
  }

  /**
   * Reads the copies now, without a fence of its own, if they still hold
   * what `mark` proved; undefined otherwise. Only for a caller that knows,
   * by other means, that no write acknowledged before this call is missing
   * from a copy current with `mark` (the callout's lease: every such write
   * was applied by this copy before it was acknowledged).
   */
  readHeld<R>(mark: FenceMark, read: (view: FencedView<B>) => R): { value: R } | undefined {
    if (!this.holds(mark)) return undefined;
    this.#counts.held++;
    this.#viewOpen = true;
    try {
      return { value: read(this.#view) };
    } finally {
      this.#viewOpen = false;
    }
  }

  /**
   * Waits until each named copy has applied its sequence (a writer's
   * acknowledged write), for at most `timeoutMs`; the watch generations
   * then, or undefined if a copy stayed behind, stopped or was replaced.
   */
  async appliedUpTo(seqs: { readonly [K in keyof B]?: number }, timeoutMs: number): Promise<readonly number[] | undefined> {
    const names = Object.keys(this.#copies) as Array<keyof B>;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (names.every((n) => this.#copies[n].currentWith(seqs[n] ?? 0))) return this.#list.map((c) => c.watch.generation);
      if (Date.now() >= deadline) return undefined;
      await new Promise((r) => setTimeout(r, 2));
    }
  }

  /** Each leader's last sequence, once each copy has applied it; fails if any cannot vouch. */
  async #fence(): Promise<readonly number[]> {
    await this.start();
    return Promise.all(this.#list.map((c) => c.fence(this.#fenceTimeoutMs)));
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
  /** See {@link FencedBucket.group}: enables {@link FencedCopy.keysIn}. */
  readonly group?: (key: string) => string | undefined;
}

/** A live record of the copy: the value bytes as stored, and its revision (stream sequence). */
export interface FencedRecord {
  readonly value: Uint8Array;
  readonly revision: number;
}

/**
 * One KV bucket held in memory from a watch, read only behind a fence
 * ({@link FencedCopies} of one bucket): every {@link get} is answered from
 * the copy once a stream info sent after the get arrived has been answered
 * by the stream leader, in contact with its quorum, and the copy has
 * applied the last sequence that answer gives; otherwise it rejects and the
 * caller answers 503.
 */
export class FencedCopy {
  readonly #copies: FencedCopies<{ copy: FencedRecord }>;

  constructor(kv: KV, opts: FencedCopyOptions) {
    const { op, group, ...rest } = opts;
    this.#copies = new FencedCopies({ copy: { kv, op, hold: (e) => ({ value: e.value, revision: e.revision }), ...(group === undefined ? {} : { group }) } }, rest);
  }

  /** Fences sent so far. */
  get fences(): number {
    return this.#copies.stats.fences;
  }

  /** Gets answered from memory, refused because the copy was behind its fence, refused because the fence failed (and fences sent). */
  get stats(): FencedCopyStats {
    return this.#copies.stats;
  }

  /** Starts the watch (the first {@link get} does it otherwise); a failed start is retried by the next get. */
  start(): Promise<void> {
    return this.#copies.start();
  }

  stop(): void {
    this.#copies.stop();
  }

  /**
   * `key`'s live record (null: never written, deleted or purged), as of a
   * fence sent after this call. Rejects when the fence or the copy cannot
   * vouch for the answer.
   */
  get(key: string): Promise<FencedRecord | null> {
    return this.#copies.read((view) => view.get("copy", key));
  }

  /** The live keys of `group` ({@link FencedCopyOptions.group}), unsorted, as of a fence sent after this call; rejects like {@link get}. */
  keysIn(group: string): Promise<string[]> {
    return this.#copies.read((view) => view.keysIn("copy", group));
  }

  /** Every live record, as `[key, record]`, as of a fence sent after this call; rejects like {@link get}. */
  list(): Promise<Array<[string, FencedRecord]>> {
    return this.#copies.read((view) => view.entries("copy"));
  }
}
