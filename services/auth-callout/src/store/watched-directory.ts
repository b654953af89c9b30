import type { KV, KvEntry } from "@nats-io/kv";
import { LeaderOutOfContactError, WatchedKv, leaderInContact } from "@unibus/kit";
import type { Logger } from "pino";
import type { BegunLookup, DirectoryEntry, PrincipalDirectory } from "./directory.js";
import { isRoomsRecord, isUserRecord, parse } from "./directory.js";
import { DirectoryError } from "../errors.js";
import type { RoomsRecord, UserRecord } from "../permissions.js";

/**
 * How long a fence waits for the two stream leaders' answers. A login is
 * decided within nats-server's 2 s callout wait or not at all; past this
 * the batch is refused (directory unavailable) instead of left to time out.
 */
export const FENCE_TIMEOUT_MS = 1_500;

/**
 * Bounds of the fence scheduling. A lookup joins a fence sent after it
 * arrived; with one fence out at a time, a login arriving just after a
 * fence left waits for it to return and then for the next (about 1.5
 * round trips at 32 in flight). With more out at once a login joins one
 * sent right after it arrived. Bounded: every fence is two JetStream
 * requests on the servers that also do the server's side of every login,
 * and a login flood must not turn into a flood of them.
 */
export const FenceSchedule = {
  /**
   * Fences out at once; lookups beyond wait in one open batch for the next
   * free slot. One: two out showed no gain in paired bench runs (the server,
   * not the wait for a fence, bounds 32 logins in flight), and each fence
   * costs the server two JetStream requests.
   */
  maxInFlight: 1,
} as const;

/** One principal's record as the watch last applied it: a checked record, or damaged (the login is refused). */
type Held<T> = { ok: true; value: T; revision: number } | { ok: false; revision: number; why: string };

/** The leaders' last sequences a fence read, once both copies applied them. */
interface FenceSeqs {
  users: number;
  rooms: number;
}

/**
 * One fence and the lookups begun before it was sent. `outcome` settles
 * with the fence's sequences (undefined: a watcher stayed behind) or its
 * failure; it always has a handler, so a begun lookup never used (a login
 * refused before its directory read) is no unhandled rejection.
 */
interface Batch {
  sent: boolean;
  readonly outcome: Promise<FenceSeqs | undefined>;
  settle(v: FenceSeqs | undefined): void;
  fail(err: unknown): void;
}

function newBatch(): Batch {
  let settle!: (v: FenceSeqs | undefined) => void;
  let fail!: (err: unknown) => void;
  const outcome = new Promise<FenceSeqs | undefined>((resolve, reject) => {
    settle = resolve;
    fail = reject;
  });
  outcome.catch(() => undefined);
  return { sent: false, outcome, settle, fail };
}

/** Counters of a {@link WatchedDirectory}, for tests, the bench and logs. */
export interface WatchedDirectoryStats {
  /** Fences sent (each: one stream-info request per bucket). */
  fences: number;
  /** Most fences out at once so far (bounded by the options' `maxFencesInFlight`). */
  maxInFlight: number;
  /** Lookups answered from memory after their fence. */
  fromMemory: number;
  /** Lookups refused because a watcher stayed behind their fence (or was replaced meanwhile). */
  behind: number;
  /** Lookups refused because their fence failed (no answer, or a leader out of contact). */
  refused: number;
}

/** Options of {@link WatchedDirectory}. */
export interface WatchedDirectoryOptions {
  readonly logger: Logger;
  /** Replace a watcher that stays behind this long (the kit's default otherwise). */
  readonly stallMs?: number;
  /** Fences out at once (default {@link FenceSchedule.maxInFlight}); 1 = one fence at a time. */
  readonly maxFencesInFlight?: number;
}

function hold<T>(entry: KvEntry, what: string, check: (v: unknown, principal: string) => v is T): Held<T> | undefined {
  let parsed: { value: unknown; revision: number } | null;
  try {
    parsed = parse(entry, what);
  } catch {
    return { ok: false, revision: entry.revision, why: `${what} record is not JSON` };
  }
  if (parsed === null) return undefined;
  if (!check(parsed.value, entry.key)) return { ok: false, revision: entry.revision, why: `${what} record malformed` };
  return { ok: true, value: parsed.value, revision: parsed.revision };
}

/**
 * The directory kept in memory from watches of `users` and
 * `rooms_by_member`, with every admission fenced by the stream leaders.
 *
 * A revoke or a room removal is "write, then kick": the client kicked comes
 * straight back, and its login must see the write. A watched copy alone may
 * lag an acknowledged write (seen under load), so no lookup is answered
 * from memory until a fence proves the copy current: each lookup, on
 * arrival ({@link begin}), joins the next fence to be sent; a fence asks
 * both stream leaders for their last sequence (stream info, which only the
 * leader answers, and which also says whether the leader still hears a
 * quorum) and is sent after every lookup of its batch arrived; a lookup is
 * then answered from memory once both watches have applied those
 * sequences ({@link FenceSchedule} bounds the fences out at once). The
 * leader had applied every write it acknowledged, so a write acknowledged
 * before a login arrived is at or below the fence's sequence and in the
 * copy that answers it.
 *
 * Fail closed: a fence that is not answered, or answered by a leader out of
 * contact with its quorum (which may already be superseded by a leader
 * that committed a revoke) or by a replica that is not the leader, refuses
 * its whole batch; so does a watcher still behind after the kit's catch-up
 * bound (it is replaced once stalled). There is no fallback to per-login
 * leader reads: nats-server answers a read from any node that believes it
 * leads, and a node just resumed from a pause answers reads with its old
 * records before it learns of the new leader, so a read cannot be tied to
 * the leader that answered the fence; the copy, checked against the
 * fence's own sequence, can.
 * A fence is two requests however many logins wait on it: at 32 logins in
 * flight that replaces 64 JetStream reads.
 */
export class WatchedDirectory implements PrincipalDirectory {
  readonly #users = new Map<string, Held<UserRecord>>();
  readonly #rooms = new Map<string, Held<RoomsRecord>>();
  readonly #usersWatch: WatchedKv;
  readonly #roomsWatch: WatchedKv;
  /** The batch not sent yet, which a lookup begun now joins. */
  #open: Batch | undefined;
  #inFlight = 0;
  readonly #maxInFlight: number;
  readonly stats: WatchedDirectoryStats = { fences: 0, maxInFlight: 0, fromMemory: 0, behind: 0, refused: 0 };

  private constructor(users: KV, roomsByMember: KV, opts: WatchedDirectoryOptions) {
    const stall = opts.stallMs !== undefined ? { stallMs: opts.stallMs } : {};
    this.#maxInFlight = Math.max(1, opts.maxFencesInFlight ?? FenceSchedule.maxInFlight);
    const fallback = "refusing logins until the copy catches up";
    this.#usersWatch = new WatchedKv(users, {
      op: "directory.users.watch",
      logger: opts.logger,
      fallback,
      ...stall,
      reset: () => this.#users.clear(),
      apply: (e) => this.#apply(this.#users, e, hold(e, "users", isUserRecord)),
    });
    this.#roomsWatch = new WatchedKv(roomsByMember, {
      op: "directory.rooms_by_member.watch",
      logger: opts.logger,
      fallback,
      ...stall,
      reset: () => this.#rooms.clear(),
      apply: (e) => this.#apply(this.#rooms, e, hold(e, "rooms_by_member", isRoomsRecord)),
    });
  }

  /** A directory whose two watches are created (their replay may still be under way: fences wait for it). */
  static async start(users: KV, roomsByMember: KV, opts: WatchedDirectoryOptions): Promise<WatchedDirectory> {
    const dir = new WatchedDirectory(users, roomsByMember, opts);
    try {
      await Promise.all([dir.#usersWatch.start(), dir.#roomsWatch.start()]);
    } catch (err) {
      dir.stop();
      throw err;
    }
    return dir;
  }

  stop(): void {
    this.#usersWatch.stop();
    this.#roomsWatch.stop();
  }

  #apply<T>(map: Map<string, Held<T>>, e: KvEntry, held: Held<T> | undefined): void {
    if (held === undefined) map.delete(e.key);
    else map.set(e.key, held);
  }

  lookup(principal: string): Promise<DirectoryEntry | null> {
    return this.begin().lookup(principal);
  }

  /**
   * Joins the next fence to be sent, now, before the caller's own work (the
   * callout's request decoding and signature checks), so that work runs
   * while the fence is out. The fence is sent after this call returns (in a
   * microtask, so logins delivered in the same read from the socket share
   * it, or when a slot frees), never before: a write acknowledged before
   * the login arrived is at or below its sequences.
   */
  begin(): BegunLookup {
    let batch = this.#open;
    const leavesNow = this.#inFlight < this.#maxInFlight;
    if (batch === undefined) {
      batch = this.#open = newBatch();
      if (leavesNow) queueMicrotask(() => this.#sendOpen());
    }
    const joined = batch;
    return { lookup: (principal) => this.#answer(joined, principal), leavesNow };
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
    void this.#fence().then(
      (seqs) => batch.settle(seqs),
      (cause: unknown) => batch.fail(new DirectoryError("directory fence failed", { cause })),
    ).finally(() => {
      this.#inFlight--;
      this.#sendOpen();
    });
  }

  async #answer(batch: Batch, principal: string): Promise<DirectoryEntry | null> {
    let fence: FenceSeqs | undefined;
    try {
      fence = await batch.outcome;
    } catch (err) {
      this.stats.refused++;
      throw err;
    }
    // Checked synchronously with the answer: a watcher replaced since its
    // catch-up starts its copy from empty and must not answer. The copy only
    // moves forward otherwise, so a lookup answered later than its fence
    // returned is answered from data at least as new.
    if (fence === undefined || !this.#current(this.#usersWatch, fence.users) || !this.#current(this.#roomsWatch, fence.rooms)) {
      this.stats.behind++;
      throw new DirectoryError("directory copy behind its fence");
    }
    this.stats.fromMemory++;
    return this.#fromMemory(principal);
  }

  /**
   * The leaders' last sequences, once both copies have applied them;
   * undefined when a watcher is behind past the bound; throws when the
   * leaders cannot vouch. Either way the batch is refused.
   */
  async #fence(): Promise<FenceSeqs | undefined> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`directory fence not answered within ${FENCE_TIMEOUT_MS} ms`)), FENCE_TIMEOUT_MS);
    });
    try {
      const [users, rooms] = await Promise.race([Promise.all([this.#usersWatch.kv.status(), this.#roomsWatch.kv.status()]), timeout]);
      for (const s of [users, rooms]) {
        if (!leaderInContact(s.streamInfo)) throw new LeaderOutOfContactError(s.streamInfo.config.name);
      }
      const lastUsers = users.streamInfo.state.last_seq;
      const lastRooms = rooms.streamInfo.state.last_seq;
      const [u, r] = await Promise.all([this.#usersWatch.caughtUpTo(lastUsers), this.#roomsWatch.caughtUpTo(lastRooms)]);
      return u && r ? { users: lastUsers, rooms: lastRooms } : undefined;
    } finally {
      clearTimeout(timer);
    }
  }

  #current(watch: WatchedKv, last: number): boolean {
    return watch.healthy && watch.applied >= last;
  }

  #fromMemory(principal: string): DirectoryEntry | null {
    const user = this.#users.get(principal);
    if (user === undefined) return null;
    if (!user.ok) throw new DirectoryError(user.why);
    const rooms = this.#rooms.get(principal);
    if (rooms !== undefined && !rooms.ok) throw new DirectoryError(rooms.why);
    return { user: user.value, rooms: rooms?.value ?? null, revision: `${user.revision}:${rooms?.revision ?? 0}` };
  }
}
