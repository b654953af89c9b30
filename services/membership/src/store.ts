import { setTimeout as sleep } from "node:timers/promises";
import { JetStreamApiCodes, JetStreamApiError } from "@nats-io/jetstream";
import type { KV, KvEntry } from "@nats-io/kv";
import { ErrorCode, ErrorReason, UnibusError } from "@unibus/contracts";
import type { MemberRecord, RoomRecord, RoomsByMemberRecord, UserRecord } from "./records.js";
import { memberKey } from "./records.js";

/** The four buckets the store works on. */
export interface MembershipBuckets {
  users: KV;
  rooms: KV;
  members: KV;
  roomsByMember: KV;
}

/** A record with the KV revision it was read or written at. */
export interface Versioned<T> {
  value: T;
  revision: number;
}

/** Returned by a {@link casUpdate} mutator to leave the entry as it is. */
export const Unchanged = Symbol("unchanged");

/**
 * Bound of one compare-and-set loop before giving up with 503. One owner
 * creating 32 rooms at once puts 32 writers on its `rooms_by_member` key;
 * retrying at once made them collide again and again (16 immediate attempts
 * gave up under that load), so each retry waits a jittered, growing delay.
 */
const CAS_ATTEMPTS = 64;
const CAS_BUDGET_MS = 5_000;
const CAS_BACKOFF_MS = { first: 2, max: 100 } as const;

/** True for the JetStream error a failed compare-and-set (or create on an existing key) raises. */
export function isRevisionConflict(err: unknown): boolean {
  return err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamWrongLastSequence;
}

/** A store failure the caller may retry; never a sign that the request was wrong. */
export function unavailable(cause: unknown): UnibusError {
  return new UnibusError(ErrorCode.Unavailable, ErrorReason.Unavailable, "membership store unavailable", { cause });
}

function present(entry: KvEntry | null): entry is KvEntry {
  return entry !== null && entry.operation === "PUT";
}

function encode(value: unknown): string {
  return JSON.stringify(value);
}

async function read<T>(kv: KV, key: string): Promise<Versioned<T> | null> {
  let entry: KvEntry | null;
  try {
    entry = await kv.get(key);
  } catch (err) {
    throw unavailable(err);
  }
  return present(entry) ? { value: entry.json<T>(), revision: entry.revision } : null;
}

/**
 * Read-modify-write of one key by compare-and-set: the write names the
 * revision it read, so a concurrent writer (another replica) makes it fail
 * and the loop re-reads instead of overwriting — no lost update. `mutate`
 * sees null for a missing key; returning {@link Unchanged} writes nothing,
 * returning null deletes the key (also by revision).
 *
 * @returns the stored value and revision after the call (null if absent).
 */
export async function casUpdate<T>(kv: KV, key: string, mutate: (current: T | null) => T | null | typeof Unchanged): Promise<Versioned<T> | null> {
  const deadline = Date.now() + CAS_BUDGET_MS;
  for (let attempt = 0; attempt < CAS_ATTEMPTS && Date.now() < deadline; attempt++) {
    if (attempt > 0) {
      // Full jitter: the colliding writers spread out instead of retrying in lockstep.
      await sleep(Math.random() * Math.min(CAS_BACKOFF_MS.max, CAS_BACKOFF_MS.first * 2 ** attempt));
    }
    let entry: KvEntry | null;
    try {
      entry = await kv.get(key);
    } catch (err) {
      throw unavailable(err);
    }
    const current = present(entry) ? entry.json<T>() : null;
    const next = mutate(current);
    if (next === Unchanged) return current === null || entry === null ? null : { value: current, revision: entry.revision };
    try {
      if (next === null) {
        if (current === null || entry === null) return null;
        await kv.delete(key, { previousSeq: entry.revision });
        return null;
      }
      // A key never written needs create (revision 0); a deleted one is
      // updated over its delete marker so a concurrent re-create still conflicts.
      const revision = entry === null ? await kv.create(key, encode(next)) : await kv.update(key, encode(next), entry.revision);
      return { value: next, revision };
    } catch (err) {
      if (isRevisionConflict(err)) continue;
      throw unavailable(err);
    }
  }
  throw new UnibusError(ErrorCode.Unavailable, ErrorReason.Unavailable, "membership store busy; retry", { details: { retryAfterMs: 100 } });
}

/**
 * Typed access to the membership data model. Every write is a JetStream KV
 * write that has been acknowledged by the stream when the promise resolves,
 * so a handler that awaits it acknowledges only durable state (DESIGN §1.3).
 */
export class MembershipStore {
  constructor(readonly buckets: MembershipBuckets) {}

  getUser(principal: string): Promise<Versioned<UserRecord> | null> {
    return read<UserRecord>(this.buckets.users, principal);
  }

  /** Creates a user; null when the principal already exists (nothing written). */
  async createUser(user: UserRecord): Promise<Versioned<UserRecord> | null> {
    try {
      return { value: user, revision: await this.buckets.users.create(user.principal, encode(user)) };
    } catch (err) {
      if (isRevisionConflict(err)) return null;
      throw unavailable(err);
    }
  }

  updateUser(principal: string, mutate: (current: UserRecord | null) => UserRecord | typeof Unchanged): Promise<Versioned<UserRecord> | null> {
    return casUpdate<UserRecord>(this.buckets.users, principal, mutate);
  }

  async listUsers(): Promise<UserRecord[]> {
    const out: UserRecord[] = [];
    for (const key of await this.#keys(this.buckets.users)) {
      const user = await this.getUser(key);
      if (user !== null) out.push(user.value);
    }
    return out.sort((a, b) => a.principal.localeCompare(b.principal));
  }

  getRoom(roomId: string): Promise<Versioned<RoomRecord> | null> {
    return read<RoomRecord>(this.buckets.rooms, roomId);
  }

  async createRoom(room: RoomRecord): Promise<number> {
    try {
      return await this.buckets.rooms.create(room.id, encode(room));
    } catch (err) {
      throw unavailable(err);
    }
  }

  async listRoomIds(): Promise<string[]> {
    return (await this.#keys(this.buckets.rooms)).sort();
  }

  getMember(roomId: string, principal: string): Promise<Versioned<MemberRecord> | null> {
    return read<MemberRecord>(this.buckets.members, memberKey(roomId, principal));
  }

  updateMember(roomId: string, principal: string, mutate: (current: MemberRecord | null) => MemberRecord | null | typeof Unchanged): Promise<Versioned<MemberRecord> | null> {
    return casUpdate<MemberRecord>(this.buckets.members, memberKey(roomId, principal), mutate);
  }

  /** Deletes a membership only if it is still at `revision`; false when someone changed it meanwhile. */
  async deleteMember(roomId: string, principal: string, revision: number): Promise<boolean> {
    try {
      await this.buckets.members.delete(memberKey(roomId, principal), { previousSeq: revision });
      return true;
    } catch (err) {
      if (isRevisionConflict(err)) return false;
      throw unavailable(err);
    }
  }

  async listMembers(roomId: string): Promise<MemberRecord[]> {
    const out: MemberRecord[] = [];
    for (const key of await this.#keys(this.buckets.members, `${roomId}.*`)) {
      const entry = await read<MemberRecord>(this.buckets.members, key);
      if (entry !== null) out.push(entry.value);
    }
    return out.sort((a, b) => a.principal.localeCompare(b.principal));
  }

  getRoomsByMember(principal: string): Promise<Versioned<RoomsByMemberRecord> | null> {
    return read<RoomsByMemberRecord>(this.buckets.roomsByMember, principal);
  }

  /**
   * Sets (role) or clears (null) one room in a principal's grant index by
   * compare-and-set. Returns the entry's revision afterwards: the membership
   * revision the auth callout keys its cache on.
   */
  async setRoomGrant(principal: string, roomId: string, role: RoomsByMemberRecord["rooms"][string] | null): Promise<number> {
    const result = await casUpdate<RoomsByMemberRecord>(this.buckets.roomsByMember, principal, (current) => {
      const rooms = { ...(current?.rooms ?? {}) };
      if (role === null) {
        if (!(roomId in rooms)) return Unchanged;
        delete rooms[roomId];
      } else {
        if (rooms[roomId] === role) return Unchanged;
        rooms[roomId] = role;
      }
      return { principal, rooms };
    });
    return result?.revision ?? 0;
  }

  async #keys(kv: KV, filter?: string): Promise<string[]> {
    try {
      const out: string[] = [];
      for await (const key of await kv.keys(filter)) out.push(key);
      return out;
    } catch (err) {
      throw unavailable(err);
    }
  }
}
