import { JetStreamApiError, jetstreamManager } from "@nats-io/jetstream";
import type { JetStreamManager } from "@nats-io/jetstream";
import type { KV, KvEntry } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { ErrorCode, UnibusError } from "@unibus/contracts";
import { corruptRecord } from "@unibus/kit";
import type { HandlerContext } from "@unibus/kit";
import { VerifiedRoomLog, roomLogEntry } from "@unibus/sdk";
import type { RoomLogEntry, RoomLogOp, RoomLogRole } from "@unibus/sdk";
import type { Logger } from "pino";
import type { ConnectionKicker } from "../kick.js";
import { grantMembership, revokeMembership } from "../handlers/rooms.js";
import { deliverRange, isKvPut, isRevisionConflict, pageKvEntries, unavailable } from "./membership-store.js";
import type { MembershipStore } from "./membership-store.js";

/** Ranges up to this long are read with parallel gets; longer ones with one consumer page. */
const RANGE_BY_GETS = 16;

/** Most entries one `rooms.log` page holds, whatever the caller asks (the request schema's maximum). */
export const LOG_PAGE_MAX = 512;

/** A room's newest stored entry: its log seq and its stream sequence (the last message a page may need). */
interface LogHead {
  seq: number;
  streamSeq: number;
}

/** One `rooms.log` page: the head when it was read and entries from the first asked, in order. */
export interface RoomLogPage {
  headSeq: number;
  entries: RoomLogEntry[];
}

/** Rounds of an append before giving up: each lost round means another replica appended first. */
const APPEND_ROUNDS = 16;

/** The `room_log` key of entry `seq` of `roomId`. */
export function roomLogKey(roomId: string, seq: number): string {
  return `${roomId}.${seq}`;
}

/** What a handler appends: the op and its effect; the signed request comes from the handler context. */
export interface RoomLogAppend {
  op: RoomLogOp;
  target: string;
  role?: RoomLogRole;
  /** Set when the actor acts as a bus admin, not as an owner of the room. */
  asAdmin?: boolean;
}

/**
 * The rooms' membership logs in the `room_log` bucket, one key per entry
 * (`<roomId>.<seq>`), each written with create (compare-and-set on
 * "absent"): of two replicas appending at the same position exactly one
 * wins, so the chain never forks. Before appending, the service verifies the
 * log and the new entry with the clients' own verifier (admin claims
 * accepted, since it checked the caller's role itself): an entry clients
 * would reject never gets stored and never poisons a room.
 */
export class RoomLogStore {
  readonly #kv: KV;
  readonly #nc: NatsConnection | undefined;
  #jsm: JetStreamManager | undefined;
  readonly #logs = new Map<string, VerifiedRoomLog>();
  #namesAsked: Promise<{ stream: string; bucket: string }> | undefined;
  /** The tail of each room's queue of appends in this process: one at a time per room, so local appends never race each other. */
  readonly #tails = new Map<string, Promise<unknown>>();

  constructor(kv: KV, nc?: NatsConnection) {
    this.#kv = kv;
    this.#nc = nc;
  }

  /** Seq of `roomId`'s newest stored entry (-1: none), read from the stream leader. */
  async headSeq(roomId: string): Promise<number> {
    if (this.#nc === undefined) {
      // No connection (unit tests): walk forward from what is known.
      let seq = this.#logs.get(roomId)?.headSeq ?? -1;
      while ((await this.#get(roomId, seq + 1)) !== null) seq++;
      return seq;
    }
    return (await this.#head(roomId))?.seq ?? -1;
  }

  /** The bucket's stream and bucket names, asked once (they never change; a failed ask is asked again). */
  #names(): Promise<{ stream: string; bucket: string }> {
    this.#namesAsked ??= this.#kv.status().then(
      (s) => ({ stream: s.streamInfo.config.name, bucket: s.bucket }),
      (err: unknown) => {
        this.#namesAsked = undefined;
        throw err;
      },
    );
    return this.#namesAsked;
  }

  async #manager(): Promise<JetStreamManager> {
    if (this.#nc === undefined) throw new Error("room log store has no connection");
    this.#jsm ??= await jetstreamManager(this.#nc);
    return this.#jsm;
  }

  /** `roomId`'s newest stored entry (null: none), read from the stream leader. */
  async #head(roomId: string): Promise<LogHead | null> {
    try {
      const jsm = await this.#manager();
      const { stream, bucket } = await this.#names();
      const msg = await jsm.streams.getMessage(stream, { last_by_subj: `$KV.${bucket}.${roomId}.*` });
      if (msg === null) return null;
      const seq = Number(msg.subject.slice(msg.subject.lastIndexOf(".") + 1));
      if (!Number.isSafeInteger(seq) || seq < 0) throw new Error(`malformed log key ${msg.subject}`);
      return { seq, streamSeq: msg.seq };
    } catch (err) {
      if (err instanceof JetStreamApiError && err.status === 404) return null;
      throw unavailable(err);
    }
  }

  async #get(roomId: string, seq: number): Promise<RoomLogEntry | null> {
    let entry: KvEntry | null;
    try {
      entry = await this.#kv.get(roomLogKey(roomId, seq));
    } catch (err) {
      throw unavailable(err);
    }
    return entry === null || entry.operation !== "PUT" ? null : entry.json<RoomLogEntry>();
  }

  /**
   * Entries `from..to` (inclusive) in order; a missing one ends the list
   * early. A long range is one consumer page from the first entry's stream
   * sequence: entries are never rewritten, and entry n+1 is only created
   * once entry n exists, so the stream holds a room's entries in seq order.
   */
  async range(roomId: string, from: number, to: number): Promise<RoomLogEntry[]> {
    const count = to - from + 1;
    if (this.#nc !== undefined && count > RANGE_BY_GETS) {
      let first: KvEntry | null;
      try {
        first = await this.#kv.get(roomLogKey(roomId, from));
      } catch (err) {
        throw unavailable(err);
      }
      if (first === null || first.operation !== "PUT") return [];
      let jsm = this.#jsm;
      if (jsm === undefined) {
        try {
          jsm = await jetstreamManager(this.#nc);
        } catch (err) {
          throw unavailable(err);
        }
      }
      this.#jsm = jsm;
      const page = await pageKvEntries<RoomLogEntry>(this.#nc, jsm, this.#kv, first.revision, count, `${roomId}.*`);
      const out: RoomLogEntry[] = [];
      for (const e of page.items) {
        if (e.seq !== from + out.length) break;
        out.push(e);
      }
      return out;
    }
    const seqs = Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);
    const got = await Promise.all(seqs.map((s) => this.#get(roomId, s)));
    const end = got.indexOf(null);
    return (end === -1 ? got : got.slice(0, end)) as RoomLogEntry[];
  }

  /**
   * One page of `roomId`'s log as `rooms.log` serves it: the head, read from
   * the stream leader, and the entries from `from` up to it (at most `limit`,
   * and never more than {@link LOG_PAGE_MAX}), in order; a missing or
   * deleted entry ends the page early. Nothing is verified here: clients
   * check the chain and its signatures against the head themselves.
   *
   * A long page is the first entry by a leader get (read beside the head:
   * entries are create-only, so it is the same entry either way) and the
   * rest as one consumer page from the entry after it, up to the head's
   * stream sequence, which the head read already gave: no stream info and
   * no second last-message read per page, and the consumer is removed
   * without waiting (the reply does not depend on it; an ephemeral consumer
   * left over expires by itself).
   */
  async page(roomId: string, from: number, limit: number): Promise<RoomLogPage> {
    const count = Math.max(0, Math.min(limit, LOG_PAGE_MAX));
    if (this.#nc === undefined || count <= RANGE_BY_GETS) {
      const headSeq = await this.headSeq(roomId);
      const last = Math.min(headSeq, from + count - 1);
      return { headSeq, entries: from > last ? [] : await this.range(roomId, from, last) };
    }
    const [head, early] = await Promise.all([this.#head(roomId), this.#getEntry(roomId, from)]);
    if (head === null) return { headSeq: -1, entries: [] };
    const last = Math.min(head.seq, from + count - 1);
    if (from > last) return { headSeq: head.seq, entries: [] };
    // Read before the head while the entry was being appended: it exists now (the head is at or past it).
    const first = early ?? (await this.#getEntry(roomId, from));
    if (first === null || first.entry.seq !== from) return { headSeq: head.seq, entries: [] };
    const entries = [first.entry];
    if (last > from) entries.push(...(await this.#run(roomId, first.revision + 1, from + 1, last, head.streamSeq)));
    return { headSeq: head.seq, entries };
  }

  /** Entry `seq` of `roomId` with its stream sequence, by a leader get; null when it is missing or deleted. */
  async #getEntry(roomId: string, seq: number): Promise<{ entry: RoomLogEntry; revision: number } | null> {
    let got: KvEntry | null;
    try {
      got = await this.#kv.get(roomLogKey(roomId, seq));
    } catch (err) {
      throw unavailable(err);
    }
    if (got === null || got.operation !== "PUT") return null;
    try {
      return { entry: got.json<RoomLogEntry>(), revision: got.revision };
    } catch (err) {
      throw corruptRecord("membership", got.key, err);
    }
  }

  /**
   * Entries `fromSeq..toSeq` of `roomId` as one consumer page from stream
   * sequence `start`, ending at the first message that is not the next entry.
   * `fence` is the head's stream sequence: the consumer may sit on a replica
   * that lags the leader, so "nothing pending" there ends the page only once
   * it has delivered up to the fence (threat: a page cut short of an
   * acknowledged entry, which the client would take for a gap).
   */
  async #run(roomId: string, start: number, fromSeq: number, toSeq: number, fence: number): Promise<RoomLogEntry[]> {
    const nc = this.#nc;
    if (nc === undefined) throw unavailable(new Error("room log store has no connection"));
    let jsm: JetStreamManager;
    let names: { stream: string; bucket: string };
    try {
      jsm = await this.#manager();
      names = await this.#names();
    } catch (err) {
      throw unavailable(err);
    }
    const { stream, bucket } = names;
    const prefix = `$KV.${bucket}.`;
    const want = toSeq - fromSeq + 1;
    const out: RoomLogEntry[] = [];
    try {
      await deliverRange(nc, jsm, stream, { start, maxInFlight: want, filterSubject: `${prefix}${roomId}.*`, what: "room log page" }, (m, at) => {
        if (!isKvPut(m)) return "end";
        let entry: RoomLogEntry;
        try {
          entry = m.json<RoomLogEntry>();
        } catch (e) {
          return corruptRecord("membership", m.subject.slice(prefix.length), e);
        }
        // Not the next entry (a gap, or a key out of order): the page ends before it.
        if (entry === null || typeof entry !== "object" || entry.seq !== fromSeq + out.length) return "end";
        out.push(entry);
        return out.length >= want || (at.pending === 0 && at.seq >= fence) ? "end" : "more";
      });
    } catch (err) {
      throw err instanceof UnibusError ? err : unavailable(err);
    }
    return out;
  }

  /** The verified log of `roomId`, brought up to the stored head. Throws the verifier's error if the stored log is bad. */
  async load(roomId: string): Promise<VerifiedRoomLog> {
    const log = this.#logs.get(roomId) ?? new VerifiedRoomLog(roomId, { acceptAdminClaims: true });
    const head = await this.headSeq(roomId);
    if (head > log.headSeq) {
      const entries = await this.range(roomId, log.length, head);
      // A concurrent load of the same room may have appended some meanwhile: entries are create-only, so those are the same.
      log.append(entries.filter((e) => e.seq >= log.length));
    }
    this.#logs.set(roomId, log);
    return log;
  }

  /**
   * Appends the caller's signed request as the next entry of `roomId`'s log,
   * once `decide` (seeing the verified log) returns what to append; it
   * returns null when the log already says so (a retry after a crash between
   * the append and the membership records), and nothing is appended. The
   * entry is acknowledged by the stream (durable) when this resolves.
   */
  append(roomId: string, ctx: HandlerContext, decide: (log: VerifiedRoomLog) => RoomLogAppend | null): Promise<{ entry: RoomLogEntry; log: VerifiedRoomLog } | null> {
    const run = (this.#tails.get(roomId) ?? Promise.resolve()).then(() => this.#append(roomId, ctx, decide));
    const tail = run.catch(() => undefined);
    this.#tails.set(roomId, tail);
    void tail.then(() => {
      if (this.#tails.get(roomId) === tail) this.#tails.delete(roomId);
    });
    return run;
  }

  async #append(roomId: string, ctx: HandlerContext, decide: (log: VerifiedRoomLog) => RoomLogAppend | null): Promise<{ entry: RoomLogEntry; log: VerifiedRoomLog } | null> {
    const envelope = ctx.envelope;
    if (envelope === undefined) throw new UnibusError(ErrorCode.Internal, "internal", "membership change without a signed request");
    for (let round = 0; round < APPEND_ROUNDS; round++) {
      const log = await this.load(roomId);
      const change = decide(log);
      if (change === null) return null;
      const entry = roomLogEntry({
        after: log,
        roomId,
        op: change.op,
        body: ctx.body,
        envelope,
        target: change.target,
        ...(change.role === undefined ? {} : { role: change.role }),
        ...(change.asAdmin === true ? { asAdmin: true } : {}),
        at: new Date(ctx.now()).toISOString(),
      });
      // The clients' rules, before anything is stored (a RoomLogError is a coded 409).
      log.check(entry);
      try {
        await this.#kv.create(roomLogKey(roomId, entry.seq), JSON.stringify(entry));
      } catch (err) {
        // Another replica appended at this position first: re-read and decide again.
        if (isRevisionConflict(err)) continue;
        throw unavailable(err);
      }
      // A concurrent load (a rooms.log page, the repair) may have read it back already.
      if (log.length === entry.seq) log.append([entry]);
      return { entry, log };
    }
    throw new UnibusError(ErrorCode.Unavailable, "unavailable", "the room's membership log kept changing; retry", { details: { retryAfterMs: 100 } });
  }
}

/**
 * Start-up repair: the log is the source of truth, so every room's member
 * records and grants are made to match its verified log. Handlers append
 * first and write the records after, so a crash in between leaves records
 * behind the log; this finishes the job (a removal's grant revoked, an
 * invite's granted). A room whose log fails verification or that has no log
 * (made before logs existed) is logged and left alone.
 */
export async function repairFromLogs(store: MembershipStore, roomLog: RoomLogStore, logger: Logger, kicker?: ConnectionKicker): Promise<void> {
  for (const roomId of await store.listRoomIds()) {
    try {
      if ((await roomLog.headSeq(roomId)) < 0) continue;
      const log = await roomLog.load(roomId);
      const room = await store.getRoom(roomId);
      const records = new Map((await store.listMembers(roomId)).map((m) => [m.principal, m.role]));
      for (const [principal, role] of log.members) {
        if (records.get(principal) === role) continue;
        await grantMembership(store, roomId, principal, role, room?.value.createdBy ?? principal, new Date().toISOString());
        logger.warn({ room: roomId, target: principal, role }, "member record repaired from the log");
      }
      for (const principal of records.keys()) {
        if (log.members.has(principal)) continue;
        await revokeMembership(store, roomId, principal);
        await kicker?.kick(principal);
        logger.warn({ room: roomId, target: principal }, "membership the log does not hold revoked");
      }
    } catch (err) {
      logger.error({ room: roomId, err: err instanceof Error ? err.message : String(err) }, "room not repaired from its log");
    }
  }
}
