import { AckPolicy, DeliverPolicy, JetStreamApiError, jetstreamManager } from "@nats-io/jetstream";
import type { JetStreamManager } from "@nats-io/jetstream";
import { createInbox, nanos } from "@nats-io/transport-node";
import type { Msg, NatsConnection } from "@nats-io/transport-node";
import type { KV } from "@nats-io/kv";
import { UnibusError } from "@unibus/contracts";
import { Unchanged, casUpdate as kitCasUpdate, corruptRecord, fencedRecord, isRevisionConflict, listKeys, readVersioned, recordCheck, roomRole, storeUnavailable } from "@unibus/kit";
import type { RecordReader, RoomRole, Versioned } from "@unibus/kit";
import type { MemberRecord, RoomRecord, RoomsByMemberRecord, UserRecord } from "./records.js";
import { memberKey } from "./records.js";
import type { DirectoryWrite } from "./lease-barrier.js";

/** The four buckets the store works on. */
export interface MembershipBuckets {
  users: KV;
  rooms: KV;
  members: KV;
  roomsByMember: KV;
}

export type { Versioned } from "@unibus/kit";

/** One page of a bucket's entries; `next` is where the following page starts (absent: this was the last). */
export interface Page<T> {
  items: T[];
  next?: number;
}

/** Longest wait for one page's messages; a page normally arrives in milliseconds. */
const PAGE_FETCH_MS = 5_000;

/**
 * The stream sequence and pending count a JetStream ack subject carries:
 * `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`, or
 * the longer form with domain and account hash in front.
 */
export function parseAckSubject(reply: string | undefined): { seq: number; pending: number } | null {
  const t = reply?.split(".") ?? [];
  if (t[0] !== "$JS" || t[1] !== "ACK") return null;
  const [seq, pending] = t.length === 9 ? [t[5], t[8]] : t.length >= 11 ? [t[7], t[10]] : [undefined, undefined];
  const out = { seq: Number(seq), pending: Number(pending) };
  return Number.isSafeInteger(out.seq) && Number.isSafeInteger(out.pending) ? out : null;
}

/**
 * True when a message read from a KV bucket's stream is a put. KV's delete
 * and purge markers carry no payload (a put is the only operation that
 * does), so only an empty message has its headers decoded for `KV-Operation`: decoding every entry's headers (a
 * create's `Nats-Expected-Last-Subject-Sequence` is stored with it) was
 * about a tenth of the services' CPU in a cold rekey's log pages (P4).
 */
export function isKvPut(m: Msg): boolean {
  if (m.data.byteLength > 0) return true;
  const op = m.headers?.get("KV-Operation") ?? "";
  return op === "" || op === "PUT";
}

/** What {@link deliverRange}'s callback says after a message: go on, or end the range (with an error to fail it). */
export type RangeStep = "more" | "end" | Error;

/** Where and how much {@link deliverRange} reads. */
export interface RangeOptions {
  /** The stream sequence the range starts at. */
  readonly start: number;
  /** Messages the server sends ahead of the reader (never acknowledged: the range ends first). */
  readonly maxInFlight: number;
  /** Only this subject (wildcards allowed). */
  readonly filterSubject?: string;
  /** Named in the timeout's error. */
  readonly what: string;
  /** After the consumer exists: true ends the range at once (nothing can come to end it). */
  readonly emptyAt?: (numPending: number) => boolean;
  /** Wait for the consumer's deletion before returning (a page that must leave nothing behind), else delete in the background (it expires anyway). */
  readonly awaitDelete?: boolean;
}

/**
 * Hands the messages of `stream` from `start` on to `step`, one
 * short-lived in-memory push consumer per call (memory bounded by
 * `maxInFlight`), with each message's stream sequence and the count the
 * server says is still pending; heartbeats are skipped. Ends when `step`
 * says so, or fails on its error, the subscription's error, or after
 * {@link PAGE_FETCH_MS}. The paged listings and the room logs' pages share it.
 */
export async function deliverRange(nc: NatsConnection, jsm: JetStreamManager, stream: string, opts: RangeOptions, step: (m: Msg, at: { seq: number; pending: number }) => RangeStep): Promise<void> {
  const inbox = createInbox();
  let settle: (failure?: Error) => void = () => undefined;
  const done = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => settle(new Error(`${opts.what} not complete within ${PAGE_FETCH_MS} ms`)), PAGE_FETCH_MS);
    const sub = nc.subscribe(inbox, {
      callback: (err, m) => {
        if (err !== null) return settle(err);
        const at = parseAckSubject(m.reply);
        // Heartbeats and flow control carry no ack subject.
        if (at === null) return;
        const next = step(m, at);
        if (next !== "more") settle(next === "end" ? undefined : next);
      },
    });
    settle = (failure) => {
      clearTimeout(timer);
      sub.unsubscribe();
      if (failure === undefined) resolve();
      else reject(failure);
    };
  });
  // Awaited below; marked handled now so a failure during set-up is not "unhandled".
  done.catch(() => undefined);
  let consumer: string | undefined;
  try {
    const info = await jsm.consumers.add(stream, {
      deliver_subject: inbox,
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: opts.start,
      ack_policy: AckPolicy.Explicit,
      max_ack_pending: opts.maxInFlight,
      mem_storage: true,
      num_replicas: 1,
      inactive_threshold: nanos(PAGE_FETCH_MS * 2),
      ...(opts.filterSubject === undefined ? {} : { filter_subject: opts.filterSubject }),
    });
    consumer = info.name;
    if (opts.emptyAt?.(info.num_pending) === true) return;
    await done;
  } finally {
    // Idempotent once settled; otherwise stops the subscription and timer.
    settle();
    if (consumer !== undefined) {
      const deleted = jsm.consumers.delete(stream, consumer).catch(() => undefined);
      if (opts.awaitDelete === true) await deleted;
    }
  }
}

// KV access is the kit's (one compare-and-set loop, one error mapping); the
// records other services also read are checked against their stored-data
// schema, so a damaged one is 500 corrupt_record here too, never trusted.
const STORE = "membership";
const anyRecord = { store: STORE } as const;
const checkUser = recordCheck(STORE, "stored.users.record");
const checkMember = recordCheck(STORE, "stored.members.record");
const checkRoomsByMember = recordCheck(STORE, "stored.rooms_by_member.record");
const checkRoom = recordCheck(STORE, "stored.rooms.record");
const UserReader: RecordReader<UserRecord> = { store: STORE, check: checkUser };
const MemberReader: RecordReader<MemberRecord> = { store: STORE, check: checkMember };
const RoomsByMemberReader: RecordReader<RoomsByMemberRecord> = { store: STORE, check: checkRoomsByMember };
const RoomReader: RecordReader<RoomRecord> = { store: STORE, check: checkRoom };
/** What a listed record of each bucket is checked against (the same schemas as a single read). */
const PAGE_CHECKS: { readonly [B in keyof MembershipBuckets]: (value: unknown, key: string) => unknown } = {
  users: checkUser,
  rooms: checkRoom,
  members: checkMember,
  roomsByMember: checkRoomsByMember,
};

export { Unchanged, isRevisionConflict } from "@unibus/kit";

/** A store failure the caller may retry; never a sign that the request was wrong. */
export function unavailable(cause: unknown): UnibusError {
  return storeUnavailable(STORE, cause);
}

function encode(value: unknown): string {
  return JSON.stringify(value);
}

function read<T>(kv: KV, key: string, reader: RecordReader<T> = anyRecord): Promise<Versioned<T> | null> {
  return readVersioned(kv, key, reader);
}

/**
 * Read-modify-write of one key by compare-and-set (the kit's loop): a
 * concurrent writer makes the write fail and the loop re-reads instead of
 * overwriting. `mutate` sees null for a missing key; returning `Unchanged`
 * writes nothing, returning null deletes the key.
 */
export function casUpdate<T>(kv: KV, key: string, mutate: (current: T | null) => T | null | typeof Unchanged, reader: RecordReader<T> = anyRecord): Promise<Versioned<T> | null> {
  return kitCasUpdate(kv, key, reader, mutate);
}

/**
 * Typed access to the membership data model. Every write is a JetStream KV
 * write that has been acknowledged by the stream when the promise resolves,
 * so a handler that awaits it acknowledges only durable state (architecture §1.3).
 */
/** The stream sequence of the newest message on `subject` (wildcards allowed), read from the stream leader; 0 when none. */
async function lastSeqOf(jsm: JetStreamManager, stream: string, subject: string): Promise<number> {
  try {
    return (await jsm.streams.getMessage(stream, { last_by_subj: subject }))?.seq ?? 0;
  } catch (err) {
    if (err instanceof JetStreamApiError && err.status === 404) return 0;
    throw err;
  }
}

/**
 * Up to `limit` live entries of `kv` from stream sequence `start` on (see
 * {@link MembershipStore.pageEntries}); shared with the room logs.
 */
export async function pageKvEntries<T>(
  nc: NatsConnection,
  jsm: JetStreamManager,
  kv: KV,
  start: number,
  limit: number,
  keyFilter?: string,
  check?: (value: unknown, key: string) => T,
): Promise<Page<T>> {
  try {
    const status = await kv.status();
    const stream = status.streamInfo.config.name;
    if (start > status.streamInfo.state.last_seq) return { items: [] };
    const prefix = `$KV.${status.bucket}.`;
    const filterSubject = keyFilter === undefined ? undefined : `${prefix}${keyFilter}`;
    // The fence: the last sequence this page must see, read from the stream
    // leader. The page's consumer may sit on a follower that lags an
    // acknowledged write; "nothing pending" there is not the end until it
    // has delivered up to the fence (threat: a just-added user missing from
    // a listing right after nodes come back).
    const fence = filterSubject === undefined ? status.streamInfo.state.last_seq : await lastSeqOf(jsm, stream, filterSubject);
    const items: T[] = [];
    let next: number | undefined;
    await deliverRange(
      nc,
      jsm,
      stream,
      {
        start,
        maxInFlight: limit,
        ...(filterSubject === undefined ? {} : { filterSubject }),
        what: `page of ${status.bucket}`,
        // Nothing matches from here, even at the leader: no message will come to end the page.
        emptyAt: (pending) => pending === 0 && fence < start,
        awaitDelete: true,
      },
      (m, at) => {
        if (isKvPut(m)) {
          // A listed record is checked like a read one: a damaged record fails the page (500), never reaches a client as if sound.
          try {
            items.push(check === undefined ? m.json<T>() : check(m.json<unknown>(), m.subject.slice(prefix.length)));
          } catch (err) {
            return err instanceof UnibusError ? err : corruptRecord(STORE, m.subject.slice(prefix.length), err);
          }
        }
        const more = at.pending > 0 || at.seq < fence;
        next = more ? at.seq + 1 : undefined;
        return !more || items.length >= limit ? "end" : "more";
      },
    );
    return next === undefined ? { items } : { items, next };
  } catch (err) {
    if (err instanceof UnibusError) throw err;
    throw unavailable(err);
  }
}

export class MembershipStore {
  #jsm: JetStreamManager | undefined;
  /**
   * Called after every write to `users` or `rooms_by_member` with its
   * sequence, before the write's method returns: the callouts' lease
   * barrier, so no caller acknowledges (or kicks for) a write a callout may
   * still answer a login without. Unset (unit fixtures): no wait.
   */
  settle: ((write: DirectoryWrite) => Promise<void>) | undefined;

  constructor(
    readonly buckets: MembershipBuckets,
    readonly nc?: NatsConnection,
  ) {}

  /**
   * Up to `limit` live entries of `bucket` from stream sequence `start` on:
   * one short-lived consumer per page, memory bounded by the page, and no
   * listing of every key (kv.keys() sends all keys each call, so paging
   * 100,000 users by sorted key cost a full scan per page). Buckets keep one
   * revision per key, so the stream holds each live key once, in the order of
   * its last change: an entry changed during a listing moves behind the
   * cursor and may be listed twice, but one that exists throughout is never
   * skipped.
   *
   * The consumer pushes to an inbox with explicit acks that are never sent,
   * and `max_ack_pending` = `limit` makes the server stop after one page. A
   * pull fetch would need `$JS.API.CONSUMER.MSG.NEXT`, which this service's
   * bucket grant does not include.
   */
  async pageEntries<T>(bucket: keyof MembershipBuckets, start: number, limit: number, keyFilter?: string): Promise<Page<T>> {
    if (this.nc === undefined) throw unavailable(new Error("store has no connection for paging"));
    let jsm = this.#jsm;
    if (jsm === undefined) {
      try {
        jsm = await jetstreamManager(this.nc);
      } catch (err) {
        throw unavailable(err);
      }
    }
    this.#jsm = jsm;
    return pageKvEntries<T>(this.nc, jsm, this.buckets[bucket], start, limit, keyFilter, PAGE_CHECKS[bucket] as ((value: unknown, key: string) => T) | undefined);
  }

  getUser(principal: string): Promise<Versioned<UserRecord> | null> {
    return read(this.buckets.users, principal, UserReader);
  }

  /** Creates a user; null when the principal already exists (nothing written). */
  async createUser(user: UserRecord): Promise<Versioned<UserRecord> | null> {
    let revision: number;
    try {
      revision = await this.buckets.users.create(user.principal, encode(user));
    } catch (err) {
      if (isRevisionConflict(err)) return null;
      throw unavailable(err);
    }
    await this.settle?.({ users: revision });
    return { value: user, revision };
  }

  /** Settles only a write: the start-up repair leaves most records unchanged, and a revoke's retry is refused (already revoked). */
  async updateUser(principal: string, mutate: (current: UserRecord | null) => UserRecord | typeof Unchanged): Promise<Versioned<UserRecord> | null> {
    let wrote = false;
    const result = await casUpdate(this.buckets.users, principal, (current: UserRecord | null) => {
      const next = mutate(current);
      wrote = next !== Unchanged;
      return next;
    }, UserReader);
    if (result !== null && wrote) await this.settle?.({ users: result.revision });
    return result;
  }

  /** Every room id, sorted; a full key scan, for start-up sweeps and tests, not for answering requests. */
  async listRoomIds(): Promise<string[]> {
    return (await this.#keys(this.buckets.rooms)).sort();
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
    return read(this.buckets.rooms, roomId, RoomReader);
  }

  async createRoom(room: RoomRecord): Promise<number> {
    try {
      return await this.buckets.rooms.create(room.id, encode(room));
    } catch (err) {
      throw unavailable(err);
    }
  }

  /**
   * `principal`'s role in `roomId` for an access decision (null: not a member
   * now), from the kit's fenced copy of `members`, as every service reads
   * it: a removal acknowledged by another replica is never followed by an
   * answer with the old rights, which a leader get (a stale leader may
   * answer it) cannot promise. {@link getMember} is for writes.
   */
  memberRole(roomId: string, principal: string): Promise<RoomRole | null> {
    return roomRole(this.buckets.members, roomId, principal);
  }

  getMember(roomId: string, principal: string): Promise<Versioned<MemberRecord> | null> {
    return read(this.buckets.members, memberKey(roomId, principal), MemberReader);
  }

  updateMember(roomId: string, principal: string, mutate: (current: MemberRecord | null) => MemberRecord | null | typeof Unchanged): Promise<Versioned<MemberRecord> | null> {
    return casUpdate(this.buckets.members, memberKey(roomId, principal), mutate, MemberReader);
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
      const entry = await read(this.buckets.members, key, MemberReader);
      if (entry !== null) out.push(entry.value);
    }
    return out.sort((a, b) => a.principal.localeCompare(b.principal));
  }

  /** `principal`'s grant record by leader get: for writes (their compare-and-set reads), not for what a caller may see ({@link grantedRooms}). */
  getRoomsByMember(principal: string): Promise<Versioned<RoomsByMemberRecord> | null> {
    return read(this.buckets.roomsByMember, principal, RoomsByMemberReader);
  }

  /**
   * The rooms `principal` is granted now, with its role in each ({} when it
   * has no grant record), from the fenced copy of `rooms_by_member` (the
   * kit's `membershipCopy`, as for {@link memberRole}): one fence sent
   * after this call, then the whole record from memory. For what a caller
   * may see: a removal acknowledged by another replica is never followed by
   * a list that still holds the room, which a leader get cannot promise (a
   * leader paused past an election answers it with the old record once
   * resumed). A fence not answered, a leader out of contact or a copy
   * behind is 503 and a damaged record 500 `corrupt_record`, never an
   * empty or partial answer.
   */
  async grantedRooms(principal: string): Promise<RoomsByMemberRecord["rooms"]> {
    const grants = await fencedRecord(this.buckets.roomsByMember, principal, checkRoomsByMember);
    // A record stored under another principal's key would list its rooms to the wrong caller.
    if (grants !== null && grants.principal !== principal) throw corruptRecord(STORE, principal, new Error(`rooms_by_member record at ${principal} names another principal`));
    return grants?.rooms ?? {};
  }

  /**
   * The memberships of `listed` (a page read from the stream) that are
   * current, each as the fenced copy of `members` holds it now: a page's
   * consumer, and the leader read that ends it, may be answered from before
   * a removal, and must not name the removed member. The reads are issued
   * together, so one fence sent after this call answers them all.
   */
  async currentMembers(listed: readonly MemberRecord[]): Promise<MemberRecord[]> {
    const current = await Promise.all(
      listed.map(async (m) => {
        const key = memberKey(m.roomId, m.principal);
        const record = await fencedRecord(this.buckets.members, key, checkMember);
        if (record !== null && (record.roomId !== m.roomId || record.principal !== m.principal)) throw corruptRecord(STORE, key, new Error(`members record at ${key} names another membership`));
        return record;
      }),
    );
    return current.filter((m): m is MemberRecord => m !== null);
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
    }, RoomsByMemberReader);
    // Unchanged too: a retried invite or removal must not be acknowledged
    // on a write an interrupted attempt left unsettled. A principal never
    // granted has nothing to settle.
    if (result !== null) await this.settle?.({ rooms_by_member: result.revision });
    return result?.revision ?? 0;
  }

  #keys(kv: KV, filter?: string): Promise<string[]> {
    return listKeys(kv, STORE, filter);
  }
}
