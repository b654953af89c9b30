import type { KV, KvEntry } from "@nats-io/kv";
import { LeaderOutOfContactError, WatchedKv, leaderInContact } from "@unibus/kit";
import type { Logger } from "pino";
import type { DirectoryEntry, PrincipalDirectory } from "./directory.js";
import { isRoomsRecord, isUserRecord, parse } from "./directory.js";
import { DirectoryError } from "../errors.js";
import type { RoomsRecord, UserRecord } from "../permissions.js";

/**
 * How long a fence waits for the two stream leaders' answers. A login is
 * decided within nats-server's 2 s callout wait or not at all; past this
 * the batch is refused (directory unavailable) instead of left to time out.
 */
export const FENCE_TIMEOUT_MS = 1_500;

/** One principal's record as the watch last applied it: a checked record, or damaged (the login is refused). */
type Held<T> = { ok: true; value: T; revision: number } | { ok: false; revision: number; why: string };

interface Waiter {
  principal: string;
  resolve(entry: DirectoryEntry | null): void;
  reject(err: unknown): void;
}

/** Counters of a {@link WatchedDirectory}, for tests, the bench and logs. */
export interface WatchedDirectoryStats {
  /** Fences sent (each: one stream-info request per bucket). */
  fences: number;
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
 * arrival, joins the next fence; a fence asks both stream leaders for their
 * last sequence (stream info, which only the leader answers, and which also
 * says whether the leader still hears a quorum) and is sent after every
 * lookup of its batch arrived; the batch is then answered from memory once
 * both watches have applied those sequences. The leader had applied every
 * write it acknowledged, so a write acknowledged before a login arrived is
 * at or below the fence's sequence and in the copy that answers it.
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
  #open: Waiter[] | undefined;
  #running = false;
  readonly stats: WatchedDirectoryStats = { fences: 0, fromMemory: 0, behind: 0, refused: 0 };

  private constructor(users: KV, roomsByMember: KV, opts: WatchedDirectoryOptions) {
    const stall = opts.stallMs !== undefined ? { stallMs: opts.stallMs } : {};
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
    return new Promise((resolve, reject) => {
      (this.#open ??= []).push({ principal, resolve, reject });
      if (!this.#running) {
        this.#running = true;
        // Logins delivered in the same read from the socket join this first fence.
        queueMicrotask(() => void this.#drain());
      }
    });
  }

  /** One fence at a time; lookups arriving while one is out wait for the next, which is sent after they arrived. */
  async #drain(): Promise<void> {
    try {
      while (this.#open !== undefined) {
        const batch = this.#open;
        this.#open = undefined;
        await this.#decide(batch);
      }
    } finally {
      this.#running = false;
    }
  }

  async #decide(batch: Waiter[]): Promise<void> {
    this.stats.fences++;
    let fence: { users: number; rooms: number } | undefined;
    try {
      fence = await this.#fence();
    } catch (cause) {
      this.stats.refused += batch.length;
      const err = new DirectoryError("directory fence failed", { cause });
      for (const w of batch) w.reject(err);
      return;
    }
    // Checked synchronously with the answers below: a watcher replaced since
    // its catch-up starts its copy from empty and must not answer.
    if (fence === undefined || !this.#current(this.#usersWatch, fence.users) || !this.#current(this.#roomsWatch, fence.rooms)) {
      this.stats.behind += batch.length;
      const err = new DirectoryError("directory copy behind its fence");
      for (const w of batch) w.reject(err);
      return;
    }
    this.stats.fromMemory += batch.length;
    for (const w of batch) {
      try {
        w.resolve(this.#fromMemory(w.principal));
      } catch (err) {
        w.reject(err);
      }
    }
  }

  /**
   * The leaders' last sequences, once both copies have applied them;
   * undefined when a watcher is behind past the bound; throws when the
   * leaders cannot vouch. Either way the batch is refused.
   */
  async #fence(): Promise<{ users: number; rooms: number } | undefined> {
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
