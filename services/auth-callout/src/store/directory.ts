import { KvWatchInclude } from "@nats-io/kv";
import type { KV, KvEntry } from "@nats-io/kv";
import { LeaderContactFence, recordCheck } from "@unibus/kit";
import type { DenialCache } from "../denial-cache.js";
import { DirectoryError } from "../errors.js";
import type { RoomsRecord, UserRecord } from "../permissions.js";

/** What the callout knows about one principal. */
export interface DirectoryEntry {
  user: UserRecord;
  /** Null when the principal is in no room. */
  rooms: RoomsRecord | null;
  /**
   * Changes whenever `user` or `rooms` changes (KV revisions); keys the
   * permission cache so a membership change is never served stale.
   */
  revision: string;
}

/**
 * Read access to the allowlist and room memberships. `lookup` returns null
 * for an unknown principal and throws for anything it cannot answer: the
 * callout then denies (fail closed).
 */
export interface PrincipalDirectory {
  lookup(principal: string): Promise<DirectoryEntry | null>;
  /**
   * Optional: starts a lookup's fence now, for a principal named later.
   * The callout calls it as a login arrives, so the fence's round trip runs
   * beside the login's decoding and signature checks instead of after them.
   */
  begin?(): BegunLookup;
}

/** A lookup whose fence was begun ({@link PrincipalDirectory.begin}); answered no earlier than that fence allows. */
export interface BegunLookup {
  lookup(principal: string): Promise<DirectoryEntry | null>;
  /**
   * True when the fence leaves now (in a microtask), so work done before
   * the lookup overlaps its round trip; false when it waits for an earlier
   * fence to return, and yielding to let it leave would only delay the work.
   */
  readonly leavesNow: boolean;
}

export function parse(entry: KvEntry | null, what: string): { value: unknown; revision: number } | null {
  if (entry === null || entry.operation !== "PUT") return null;
  try {
    return { value: entry.json(), revision: entry.revision };
  } catch (cause) {
    throw new DirectoryError(`${what} record is not JSON`, { cause });
  }
}

// Both records are checked against their stored-data schemas (the same
// check every reader of them makes): a record of the wrong shape, or filed
// under another principal, is damaged and the login is denied.
const checkUser = recordCheck("membership", "stored.users.record");
const checkRooms = recordCheck("membership", "stored.rooms_by_member.record");

export function isUserRecord(v: unknown, principal: string): v is UserRecord {
  return conforms(() => checkUser(v, principal).principal === principal);
}

export function isRoomsRecord(v: unknown, principal: string): v is RoomsRecord {
  return conforms(() => checkRooms(v, principal).principal === principal);
}

function conforms(check: () => boolean): boolean {
  try {
    return check();
  } catch {
    return false;
  }
}

/**
 * A {@link PrincipalDirectory} over the membership service's KV buckets
 * (`users`, `rooms_by_member`), read with two direct gets per lookup so a
 * revocation is visible to the very next login.
 *
 * A record whose `principal` does not match its key is treated as corrupt and
 * throws (threat: a mis-keyed record granting one principal another's rooms).
 *
 * Not what the callout runs (`WatchedDirectory` is): its fence and its
 * gets are separate requests, and a node resumed from a pause past an
 * election answers gets as leader with its old records before it learns of
 * the new one, so a revoked principal can be read active while the fence
 * comes from the new leader (seen on a real cluster). Kept for benches and
 * tests that compare against per-login reads.
 */
export class KvPrincipalDirectory implements PrincipalDirectory {
  readonly #users: KV;
  readonly #rooms: KV;
  readonly #fences: readonly LeaderContactFence[];

  constructor(users: KV, roomsByMember: KV) {
    this.#users = users;
    this.#rooms = roomsByMember;
    this.#fences = [new LeaderContactFence(users), new LeaderContactFence(roomsByMember)];
  }

  async lookup(principal: string): Promise<DirectoryEntry | null> {
    let userEntry: KvEntry | null;
    let roomsEntry: KvEntry | null;
    try {
      // Leader reads, each fenced: a leader cut off from its quorum keeps
      // answering for about 10 s while the other side may already have
      // committed a revoke or a removal; a login it would decide is refused
      // (directory unavailable) instead of granted from the old record.
      [userEntry, roomsEntry] = await Promise.all([this.#users.get(principal), this.#rooms.get(principal), ...this.#fences.map((f) => f.check())]);
    } catch (cause) {
      throw new DirectoryError("directory read failed", { cause });
    }
    const user = parse(userEntry, "users");
    if (user === null) return null;
    if (!isUserRecord(user.value, principal)) throw new DirectoryError("users record malformed");
    const rooms = parse(roomsEntry, "rooms_by_member");
    if (rooms !== null && !isRoomsRecord(rooms.value, principal)) throw new DirectoryError("rooms_by_member record malformed");
    return {
      user: user.value,
      rooms: rooms === null ? null : (rooms.value as RoomsRecord),
      revision: `${user.revision}:${rooms?.revision ?? 0}`,
    };
  }
}

/** A running {@link invalidateOnUserChanges} watch. */
export interface UserChangeWatch {
  stop(): void;
}

/**
 * Drops a principal's cached refusal as soon as its `users` record changes,
 * so an admin's ADD is honoured at the next login rather than after the
 * cache TTL. Whenever the watch is (re)started the whole cache is cleared:
 * changes made while it was down would otherwise go unseen. The TTL remains
 * the bound if notices are late; the cache only ever denies, so a late
 * notice can delay an admission but never admit anyone.
 */
export function invalidateOnUserChanges(users: KV, cache: DenialCache, onError?: (err: unknown) => void): UserChangeWatch {
  let stopped = false;
  let current: { stop(): void } | undefined;
  const run = async (): Promise<void> => {
    while (!stopped) {
      try {
        const it = await users.watch({ include: KvWatchInclude.UpdatesOnly });
        current = it;
        cache.clear();
        for await (const e of it) cache.invalidate(e.key);
      } catch (err) {
        onError?.(err);
      }
      cache.clear();
      if (!stopped) await new Promise((r) => setTimeout(r, 1_000));
    }
  };
  void run();
  return {
    stop() {
      stopped = true;
      current?.stop();
    },
  };
}
