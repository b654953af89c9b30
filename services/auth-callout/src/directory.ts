import type { KV, KvEntry } from "@nats-io/kv";
import { DirectoryError } from "./errors.js";
import type { RoomsRecord, UserRecord } from "./permissions.js";

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
}

function parse(entry: KvEntry | null, what: string): { value: unknown; revision: number } | null {
  if (entry === null || entry.operation !== "PUT") return null;
  try {
    return { value: entry.json(), revision: entry.revision };
  } catch (cause) {
    throw new DirectoryError(`${what} record is not JSON`, { cause });
  }
}

function isUserRecord(v: unknown, principal: string): v is UserRecord {
  if (typeof v !== "object" || v === null) return false;
  const r = v as Record<string, unknown>;
  return r.principal === principal && typeof r.role === "string" && typeof r.status === "string";
}

function isRoomsRecord(v: unknown, principal: string): v is RoomsRecord {
  if (typeof v !== "object" || v === null) return false;
  const r = v as Record<string, unknown>;
  return r.principal === principal && typeof r.rooms === "object" && r.rooms !== null && !Array.isArray(r.rooms);
}

/**
 * A {@link PrincipalDirectory} over the membership service's KV buckets
 * (`users`, `rooms_by_member`), read with two direct gets per lookup so a
 * revocation is visible to the very next login.
 *
 * A record whose `principal` does not match its key is treated as corrupt and
 * throws (threat: a mis-keyed record granting one principal another's rooms).
 */
export class KvPrincipalDirectory implements PrincipalDirectory {
  readonly #users: KV;
  readonly #rooms: KV;

  constructor(users: KV, roomsByMember: KV) {
    this.#users = users;
    this.#rooms = roomsByMember;
  }

  async lookup(principal: string): Promise<DirectoryEntry | null> {
    let userEntry: KvEntry | null;
    let roomsEntry: KvEntry | null;
    try {
      [userEntry, roomsEntry] = await Promise.all([this.#users.get(principal), this.#rooms.get(principal)]);
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

interface Held {
  value: unknown;
  revision: number;
}

/**
 * A {@link PrincipalDirectory} that keeps both buckets in memory, fed by KV
 * watchers, so a login costs no KV round trip (P1 in the bench). Misses fall
 * through to direct gets, so a principal added a moment ago is found at once.
 *
 * Staleness is bounded by watcher delivery, which the stream pushes as it
 * stores a write, before the writer's kick can even reach the client (DESIGN §4:
 * revoke = write, then kick). If a watcher stops, every lookup throws
 * (fail closed) instead of serving a frozen allowlist.
 */
export class WatchedPrincipalDirectory implements PrincipalDirectory {
  readonly #fallback: KvPrincipalDirectory;
  readonly #users = new Map<string, Held>();
  readonly #rooms = new Map<string, Held>();
  readonly #stops: (() => void)[] = [];
  #failed: Error | undefined;

  private constructor(users: KV, roomsByMember: KV) {
    this.#fallback = new KvPrincipalDirectory(users, roomsByMember);
  }

  /** Starts both watchers; resolves once they are subscribed. */
  static async start(users: KV, roomsByMember: KV): Promise<WatchedPrincipalDirectory> {
    const d = new WatchedPrincipalDirectory(users, roomsByMember);
    await d.#watch(users, d.#users, "users");
    await d.#watch(roomsByMember, d.#rooms, "rooms_by_member");
    return d;
  }

  async #watch(kv: KV, into: Map<string, Held>, what: string): Promise<void> {
    const it = await kv.watch();
    this.#stops.push(() => it.stop());
    void (async () => {
      try {
        for await (const e of it) {
          if (e.operation !== "PUT") {
            into.delete(e.key);
            continue;
          }
          let value: unknown;
          try {
            value = e.json();
          } catch {
            value = undefined; // lookup treats it as corrupt
          }
          into.set(e.key, { value, revision: e.revision });
        }
        this.#failed ??= new DirectoryError(`${what} watcher ended`);
      } catch (cause) {
        this.#failed ??= new DirectoryError(`${what} watcher failed`, { cause });
      }
    })();
  }

  async lookup(principal: string): Promise<DirectoryEntry | null> {
    if (this.#failed !== undefined) throw this.#failed;
    const user = this.#users.get(principal);
    if (user === undefined) return this.#fallback.lookup(principal);
    if (!isUserRecord(user.value, principal)) throw new DirectoryError("users record malformed");
    const rooms = this.#rooms.get(principal);
    if (rooms !== undefined && !isRoomsRecord(rooms.value, principal)) throw new DirectoryError("rooms_by_member record malformed");
    return {
      user: user.value,
      rooms: rooms === undefined ? null : (rooms.value as RoomsRecord),
      revision: `${user.revision}:${rooms?.revision ?? 0}`,
    };
  }

  /** Stops the watchers; later lookups throw. */
  stop(): void {
    for (const s of this.#stops) s();
    this.#failed ??= new DirectoryError("directory stopped");
  }
}
