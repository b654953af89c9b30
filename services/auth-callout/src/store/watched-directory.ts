import type { KV, KvEntry } from "@nats-io/kv";
import { FENCE_TIMEOUT_MS, FencedCopies, FencedCopyBehindError } from "@unibus/kit";
import type { BegunRead, FenceMark, FencedCopyStats, FencedView } from "@unibus/kit";
import type { Logger } from "pino";
import type { BegunLookup, DirectoryEntry, PrincipalDirectory } from "./directory.js";
import { isRoomsRecord, isUserRecord } from "./directory.js";
import { DirectoryError } from "../errors.js";
import type { RoomsRecord, UserRecord } from "../permissions.js";

/**
 * How long a fence waits for the two stream leaders' answers (the kit's
 * bound). A login is decided within nats-server's 2 s callout wait or not
 * at all; past this the batch is refused (directory unavailable) instead of
 * left to time out.
 */
export { FENCE_TIMEOUT_MS };

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

/** What the directory's two copies hold per principal. */
interface Copied {
  users: Held<UserRecord>;
  rooms: Held<RoomsRecord>;
}

/** Counters of a {@link WatchedDirectory} (the kit's fenced-copy counters, per lookup), for tests, the bench and logs. */
export type WatchedDirectoryStats = FencedCopyStats;

/** Options of {@link WatchedDirectory}. */
export interface WatchedDirectoryOptions {
  readonly logger: Logger;
  /** Replace a watcher that stays behind this long (the kit's default otherwise). */
  readonly stallMs?: number;
  /** Fences out at once (default {@link FenceSchedule.maxInFlight}); 1 = one fence at a time. */
  readonly maxFencesInFlight?: number;
  /**
   * Called with a principal's key as the watch applies a change of its
   * `users` record, before any lookup can see the change: the denial cache
   * drops its refusal there, so an ADD a barrier reported applied is never
   * refused from the cache.
   */
  readonly onUserApplied?: (principal: string) => void;
}

/** What answers logins without a fence: a lease's fence mark while the lease is valid (`CalloutLease`). */
export interface DirectoryLease {
  /** The mark of the lease's fence while the lease is valid and the copies still hold it; undefined otherwise. */
  current(): FenceMark | undefined;
}

/** A stored record, parsed and checked once as the watch applies it, so a login pays a map lookup, not a parse. */
function hold<T>(entry: KvEntry, what: string, check: (v: unknown, principal: string) => v is T): Held<T> {
  let value: unknown;
  try {
    value = entry.json();
  } catch {
    return { ok: false, revision: entry.revision, why: `${what} record is not JSON` };
  }
  if (!check(value, entry.key)) return { ok: false, revision: entry.revision, why: `${what} record malformed` };
  return { ok: true, value, revision: entry.revision };
}

/**
 * The directory kept in memory from watches of `users` and
 * `rooms_by_member`, with every admission fenced by the stream leaders: the
 * kit's {@link FencedCopies} of the two buckets, one fence for both.
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
 * sequences ({@link FenceSchedule} bounds the fences out at once).
 *
 * Fail closed: a fence that is not answered, answered by a leader out of
 * contact or by a replica that is not the leader, or a copy still behind
 * after the kit's catch-up bound, refuses its whole batch (directory
 * unavailable). There is no fallback to per-login leader reads: a node
 * just resumed from a pause answers reads with its old records before it
 * learns of the new leader, so a read cannot be tied to the leader that
 * answered the fence; the copy, checked against the fence's own sequence,
 * can. A fence is two requests however many logins wait on it.
 */
export class WatchedDirectory implements PrincipalDirectory {
  readonly #copies: FencedCopies<Copied>;
  #lease: DirectoryLease | undefined;

  private constructor(users: KV, roomsByMember: KV, opts: WatchedDirectoryOptions) {
    this.#copies = new FencedCopies<Copied>(
      {
        users: {
          kv: users,
          op: "directory.users.watch",
          hold: (e) => {
            opts.onUserApplied?.(e.key);
            return hold(e, "users", isUserRecord);
          },
        },
        rooms: { kv: roomsByMember, op: "directory.rooms_by_member.watch", hold: (e) => hold(e, "rooms_by_member", isRoomsRecord) },
      },
      {
        logger: opts.logger,
        fallback: "refusing logins until the copy catches up",
        fenceTimeoutMs: FENCE_TIMEOUT_MS,
        maxFencesInFlight: opts.maxFencesInFlight ?? FenceSchedule.maxInFlight,
        ...(opts.stallMs !== undefined ? { stallMs: opts.stallMs } : {}),
      },
    );
  }

  /** A directory whose two watches are created (their replay may still be under way: fences wait for it). */
  static async start(users: KV, roomsByMember: KV, opts: WatchedDirectoryOptions): Promise<WatchedDirectory> {
    const dir = new WatchedDirectory(users, roomsByMember, opts);
    try {
      await dir.#copies.start();
    } catch (err) {
      dir.stop();
      throw err;
    }
    return dir;
  }

  stop(): void {
    this.#copies.stop();
  }

  /** Fences sent and lookups answered or refused, as of now. */
  get stats(): WatchedDirectoryStats {
    return this.#copies.stats;
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
    if (this.#lease?.current() !== undefined) {
      // Under a lease no fence is begun: the lookup is answered from memory
      // if the lease still holds when it runs, else it takes a fence then
      // (sent after this login arrived, so it still sees every ack before).
      return { lookup: (principal) => this.#held(principal), leavesNow: false };
    }
    const begun = this.#copies.begin();
    return { lookup: (principal) => answer(begun, principal), leavesNow: begun.leavesNow };
  }

  /** Logins are answered from memory while `lease` holds, fenced each otherwise. */
  useLease(lease: DirectoryLease | undefined): void {
    this.#lease = lease;
  }

  /** One fence sent after this call, with what it proved (a lease's renewal). */
  mark(): Promise<FenceMark> {
    return this.#copies.mark();
  }

  /** The copies' watch generations now, as one key: a different key means a watcher was replaced. */
  generation(): string {
    return this.#copies.generations().join(".");
  }

  /** Whether the copies still hold what `mark` proved. */
  holds(mark: FenceMark): boolean {
    return this.#copies.holds(mark);
  }

  /** Whether both copies have applied these sequences within `timeoutMs` (a barrier). */
  async appliedUpTo(users: number, roomsByMember: number, timeoutMs: number): Promise<boolean> {
    return (await this.#copies.appliedUpTo({ users, rooms: roomsByMember }, timeoutMs)) !== undefined;
  }

  async #held(principal: string): Promise<DirectoryEntry | null> {
    const mark = this.#lease?.current();
    const held = mark === undefined ? undefined : this.#copies.readHeld(mark, (view) => fromMemory(view, principal));
    if (held !== undefined) return held.value;
    return answer(this.#copies.begin(), principal);
  }
}

/** The lookup from the copies its fence vouched for; any refusal is the callout's "directory unavailable". */
function answer(begun: BegunRead<Copied>, principal: string): Promise<DirectoryEntry | null> {
  return begun.read((view) => fromMemory(view, principal)).catch((err: unknown) => {
    if (err instanceof DirectoryError) throw err;
    if (err instanceof FencedCopyBehindError) throw new DirectoryError("directory copy behind its fence", { cause: err });
    throw new DirectoryError("directory fence failed", { cause: err });
  });
}

function fromMemory(view: FencedView<Copied>, principal: string): DirectoryEntry | null {
  const user = view.get("users", principal);
  if (user === null) return null;
  if (!user.ok) throw new DirectoryError(user.why);
  const rooms = view.get("rooms", principal);
  if (rooms !== null && !rooms.ok) throw new DirectoryError(rooms.why);
  return { user: user.value, rooms: rooms?.value ?? null, revision: `${user.revision}:${rooms?.revision ?? 0}` };
}
