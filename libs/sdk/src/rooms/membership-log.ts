/**
 * A room's membership as a hash-chained log of its members' own signed
 * requests (contracts/specs/membership-log.md). The membership service only
 * validates and stores entries; every client replays the chain, checks each
 * actor's envelope signature and that the rules allowed it at that point,
 * and so learns who is a member without trusting the service (threat: a
 * compromised service or server naming an extra member or a fake owner, so
 * that room keys get sealed to it). The service runs the same checks before
 * it appends, so a well-behaved service never stores an entry clients reject.
 */
import { ErrorCode, Subjects, UnibusError } from "@unibus/contracts";
import type { MembershipRoomsLogReply } from "@unibus/contracts";
import { fromBase64Url, isPrincipal, sha256, toBase64Url, toHex } from "@unibus/crypto";
import type { SigningKey } from "@unibus/crypto";
import { ChainErrorReason, FieldHasher, SignedChain, ZERO_HASH, checkPinnedHead, concat, field, signedLink, readSignedBody, syncChain, u64, writeSignedLinkFields } from "./signed-chain.js";
import type { PinnedHead, SignedLinkEnvelope } from "./signed-chain.js";

/** One entry of a room's membership log, as stored and served. */
export type RoomLogEntry = MembershipRoomsLogReply["entries"][number];
/** A member's role in a room. */
export type RoomLogRole = "owner" | "member";

/** Domain-separation strings and sizes of the log format; never reused for another purpose. */
export const RoomLogFormat = {
  /** Prefix of an entry's hash input. */
  entryContext: "unibus-room-log-v1",
  /** Prefix of the hash a room id is derived from. */
  roomIdContext: "unibus-room-id-v1",
  /** Bytes of an entry hash (SHA-256). */
  hashBytes: 32,
  /** Hex characters of a derived room id (12 bytes). */
  roomIdChars: 24,
} as const;

/** The membership operations a log records. */
export const RoomLogOp = { create: "create", invite: "invite", remove: "remove", leave: "leave" } as const;
/** One of the {@link RoomLogOp} values. */
export type RoomLogOp = (typeof RoomLogOp)[keyof typeof RoomLogOp];

/** The request subject each operation must have been signed for. */
export const RoomLogOpSubject = {
  create: Subjects.membership.roomsCreate,
  invite: Subjects.membership.roomsInvite,
  remove: Subjects.membership.roomsRemove,
  leave: Subjects.membership.roomsLeave,
} as const satisfies Record<RoomLogOp, string>;

/** Stable reasons of a {@link RoomLogError}: the checks every signed chain gets, plus the room rules'. */
export const RoomLogErrorReason = ChainErrorReason;
/** One of the {@link RoomLogErrorReason} values. */
export type RoomLogErrorReason = (typeof RoomLogErrorReason)[keyof typeof RoomLogErrorReason];

/**
 * A membership log that failed verification. Never fall back to the
 * service's word when it is thrown: whoever answered may be lying.
 */
export class RoomLogError extends UnibusError {
  constructor(
    readonly roomId: string,
    reason: RoomLogErrorReason,
    message: string,
    readonly seq?: number,
  ) {
    super(ErrorCode.Conflict, reason, `room ${roomId} membership log${seq === undefined ? "" : ` entry ${seq}`}: ${message} (${reason})`);
    this.name = "RoomLogError";
  }
}

export { ZERO_HASH, concat, field, u64 };

/**
 * `sha256(field("unibus-room-log-v1") ‖ u64(seq) ‖ prev ‖ field(roomId) ‖
 * field(op) ‖ field(subject) ‖ field(body) ‖ field(signer) ‖ u64(timestamp) ‖
 * field(nonce) ‖ field(signature) ‖ field(target) ‖ field(role) ‖
 * field(actorRole))`, fields u32 BE length-prefixed, absent ones empty; `at`
 * is not hashed (server time, nobody signs it).
 */
export function roomLogEntryHash(e: RoomLogEntry): Uint8Array {
  return entryHashWithBody(e, fromBase64Url(e.body));
}

/** {@link roomLogEntryHash} with the body already decoded from `e.body`. */
function entryHashWithBody(e: RoomLogEntry, body: Uint8Array): Uint8Array {
  const prev = fromBase64Url(e.prev);
  if (prev.byteLength !== RoomLogFormat.hashBytes) throw new RangeError("prev must be 32 bytes");
  const h = new FieldHasher().field(RoomLogFormat.entryContext).u64(e.seq).raw(prev).field(e.roomId);
  return writeSignedLinkFields(h, e, body)
    .field(e.target)
    .field(e.role ?? "")
    .field(e.actorRole ?? "")
    .digest();
}

/** What {@link roomLogEntry} builds an entry from. */
export interface RoomLogEntryInput {
  /** The verified log the entry extends (its next seq and head hash). */
  after: { length: number; headHash: Uint8Array };
  roomId: string;
  op: RoomLogOp;
  /** The request body bytes exactly as signed. */
  body: Uint8Array;
  envelope: SignedLinkEnvelope;
  target: string;
  role?: RoomLogRole;
  /** The actor acted as a bus admin, not as an owner. */
  asAdmin?: boolean;
  /** Server time of the append (ISO 8601; not hashed). */
  at: string;
}

/** The next entry of a log: the signed request as received, chained to the head. */
export function roomLogEntry(i: RoomLogEntryInput): RoomLogEntry {
  return {
    seq: i.after.length,
    prev: toBase64Url(i.after.headHash),
    roomId: i.roomId,
    ...signedLink(i.op, RoomLogOpSubject[i.op], i.body, i.envelope),
    target: i.target,
    ...(i.role === undefined ? {} : { role: i.role }),
    ...(i.asAdmin === true ? { actorRole: "admin" as const } : {}),
    at: i.at,
  };
}

/**
 * The id of the room a `rooms.create` request makes: the first 12 bytes of
 * `sha256(field("unibus-room-id-v1") ‖ signature)` as hex. The creator's
 * signature (over a fresh nonce) fixes the id, so the service cannot replay
 * one creation as the founding entry of another room.
 */
export function deriveRoomId(createSignature: string): string {
  return toHex(sha256(concat([field(RoomLogFormat.roomIdContext), fromBase64Url(createSignature)]))).slice(0, RoomLogFormat.roomIdChars);
}

/** The subject an op must have been signed for (undefined: not an op of this log). */
function subjectOfOp(op: string): string | undefined {
  return Object.hasOwn(RoomLogOpSubject, op) ? RoomLogOpSubject[op as RoomLogOp] : undefined;
}

/** What an entry's signed request says: its op's room, target and resulting role. */
interface SignedEffect {
  roomId: string;
  target: string;
  role?: RoomLogRole;
}

function principalOf(value: unknown): string {
  // Exactly as the service takes it: a valid `U…` nkey, never another spelling.
  if (typeof value !== "string" || !isPrincipal(value)) throw new TypeError("principal missing or invalid");
  return value;
}

/** Reads the effect of an entry from the signed body alone; throws on anything malformed. */
function signedEffect(e: RoomLogEntry, body: Uint8Array): SignedEffect {
  const req = readSignedBody(body);
  switch (e.op) {
    case RoomLogOp.create:
      return { roomId: deriveRoomId(e.signature), target: e.signer, role: "owner" };
    case RoomLogOp.invite: {
      const role = req["role"] ?? "member";
      if (role !== "owner" && role !== "member") throw new TypeError("bad role");
      return { roomId: String(req["roomId"]), target: principalOf(req["principal"]), role };
    }
    case RoomLogOp.remove:
      return { roomId: String(req["roomId"]), target: principalOf(req["principal"]) };
    case RoomLogOp.leave:
      return { roomId: String(req["roomId"]), target: e.signer };
    default:
      throw new TypeError("unknown op");
  }
}

/** Options of {@link VerifiedRoomLog}. */
export interface RoomLogVerifyOptions {
  /**
   * Admins whose `actorRole: "admin"` entries are accepted (pinned in the
   * client's configuration; the service's users list is not trusted for
   * this). Default: none, so only owners manage a room.
   */
  trustedAdmins?: ReadonlySet<string> | readonly string[];
  /**
   * Accept every `actorRole: "admin"` claim. Only for the membership service
   * itself, which checked the actor's role against its own users list when
   * it appended; a client must never set it.
   */
  acceptAdminClaims?: boolean;
  /**
   * The verified users log (or anything answering like it): an
   * `actorRole: "admin"` entry is accepted when its signer was an admin
   * there, not revoked by an entry signed at or before the room entry's
   * signed timestamp. Checked in addition to `trustedAdmins`.
   */
  adminAuthority?: { wasAdminAt(principal: string, timestamp: number): boolean };
}

/** One applied change, for replaying the membership at an earlier position. */
interface Change {
  target: string;
  role: RoomLogRole | null;
}

/**
 * A room's membership log as far as it has been verified: the hash of every
 * entry and the membership after each. Entries are only ever appended after
 * every check passed; a failed {@link append} leaves it unchanged.
 */
export class VerifiedRoomLog extends SignedChain<RoomLogEntry> {
  readonly roomId: string;
  readonly #changes: Change[] = [];
  readonly #members = new Map<string, RoomLogRole>();
  readonly #admins: ReadonlySet<string>;
  readonly #acceptAdminClaims: boolean;
  readonly #authority: RoomLogVerifyOptions["adminAuthority"];
  #snapshot: { seq: number; members: ReadonlyMap<string, RoomLogRole> } | undefined;
  /** Made once per log, not per entry: a cold sync checks thousands of entries. */
  readonly #chainFail = (reason: RoomLogErrorReason, message: string, seq?: number): RoomLogError => new RoomLogError(this.roomId, reason, message, seq);

  constructor(roomId: string, opts: RoomLogVerifyOptions = {}) {
    super();
    this.roomId = roomId;
    this.#admins = new Set(opts.trustedAdmins ?? []);
    this.#acceptAdminClaims = opts.acceptAdminClaims === true;
    this.#authority = opts.adminAuthority;
  }

  /** The membership after the newest verified entry: principal → role. */
  get members(): ReadonlyMap<string, RoomLogRole> {
    return this.#members;
  }

  /** The membership right after entry `seq` (verified), replayed from the start. */
  membersAt(seq: number): ReadonlyMap<string, RoomLogRole> {
    if (!Number.isSafeInteger(seq) || seq < 0 || seq >= this.length) throw new RoomLogError(this.roomId, RoomLogErrorReason.gap, `position ${seq} is not verified (head ${this.headSeq})`, seq);
    if (seq === this.headSeq) return new Map(this.#members);
    if (this.#snapshot?.seq === seq) return this.#snapshot.members;
    const members = new Map<string, RoomLogRole>();
    for (let i = 0; i <= seq; i++) {
      const c = this.#changes[i]!;
      if (c.role === null) members.delete(c.target);
      else members.set(c.target, c.role);
    }
    this.#snapshot = { seq, members };
    return members;
  }

  /**
   * Checks `e` as the next entry without applying it; throws a
   * {@link RoomLogError} naming the first failed check.
   */
  check(e: RoomLogEntry): Change {
    return this.#check(e).change;
  }

  /** {@link check}, also returning the signed body the link check decoded (the entry hash reuses it). */
  #check(e: RoomLogEntry): { change: Change; body: Uint8Array } {
    const seq = this.length;
    if (e.roomId !== this.roomId && e.seq === seq) throw this.#chainFail(RoomLogErrorReason.badEntry, "entry is for another room", e.seq);
    const body = this.checkLink(e, subjectOfOp, this.#chainFail);
    const op = e.op;
    let effect: SignedEffect;
    try {
      effect = signedEffect(e, body);
    } catch {
      throw this.#chainFail(RoomLogErrorReason.badEntry, "the signed request is malformed", e.seq);
    }
    if (effect.roomId !== this.roomId) throw this.#chainFail(RoomLogErrorReason.badEntry, "the signed request is for another room", e.seq);
    if (effect.target !== e.target || (effect.role ?? null) !== (e.role ?? null)) throw this.#chainFail(RoomLogErrorReason.badEntry, "target or role disagrees with the signed request", e.seq);
    const actor = this.#members.get(e.signer);
    const asAdmin = e.actorRole === "admin";
    const manager = asAdmin ? this.#acceptAdminClaims || this.#admins.has(e.signer) || this.#authority?.wasAdminAt(e.signer, e.timestamp) === true : actor === "owner";
    switch (op) {
      case RoomLogOp.create:
        if (seq !== 0) throw this.#chainFail(RoomLogErrorReason.unauthorized, "a room is created only once, at entry 0", e.seq);
        if (asAdmin) throw this.#chainFail(RoomLogErrorReason.badEntry, "creation claims no admin role", e.seq);
        break;
      case RoomLogOp.invite:
        if (seq === 0) throw this.#chainFail(RoomLogErrorReason.missing, "the log does not start with the room's creation", e.seq);
        if (!manager) throw this.#chainFail(RoomLogErrorReason.unauthorized, "only owners and trusted admins invite", e.seq);
        if (this.#members.get(e.target) === e.role) throw this.#chainFail(RoomLogErrorReason.badEntry, "invite changes nothing", e.seq);
        break;
      case RoomLogOp.remove:
        if (seq === 0) throw this.#chainFail(RoomLogErrorReason.missing, "the log does not start with the room's creation", e.seq);
        if (!manager) throw this.#chainFail(RoomLogErrorReason.unauthorized, "only owners and trusted admins remove", e.seq);
        if (!this.#members.has(e.target)) throw this.#chainFail(RoomLogErrorReason.badEntry, "removes a non-member", e.seq);
        break;
      case RoomLogOp.leave:
        if (seq === 0) throw this.#chainFail(RoomLogErrorReason.missing, "the log does not start with the room's creation", e.seq);
        if (asAdmin) throw this.#chainFail(RoomLogErrorReason.badEntry, "leaving claims no admin role", e.seq);
        if (actor === undefined) throw this.#chainFail(RoomLogErrorReason.unauthorized, "a non-member cannot leave", e.seq);
        break;
    }
    return { change: { target: e.target, role: op === RoomLogOp.remove || op === RoomLogOp.leave ? null : (e.role as RoomLogRole) }, body };
  }

  /** Verifies and applies `entries` in order; on the first failure throws and keeps what was verified before it. */
  override append(entries: readonly RoomLogEntry[]): void {
    for (const e of entries) {
      const { change, body } = this.#check(e);
      this.recordLink(e, entryHashWithBody(e, body));
      this.#changes.push(change);
      if (change.role === null) this.#members.delete(change.target);
      else this.#members.set(change.target, change.role);
    }
  }
}

/** Verifies a whole log from entry 0; throws {@link RoomLogError} on the first bad entry. */
export function verifyRoomLog(roomId: string, entries: readonly RoomLogEntry[], opts: RoomLogVerifyOptions = {}): VerifiedRoomLog {
  const log = new VerifiedRoomLog(roomId, opts);
  log.append(entries);
  if (log.length === 0) throw new RoomLogError(roomId, RoomLogErrorReason.missing, "the log is empty");
  return log;
}

/** A verified head a client keeps across processes, to refuse a later rollback or fork. */
export type PinnedRoomLogHead = PinnedHead;

/** Where pinned heads live (the CLI keeps them in its home directory). */
export interface RoomLogHeadStore {
  get(roomId: string): PinnedRoomLogHead | undefined | Promise<PinnedRoomLogHead | undefined>;
  set(roomId: string, head: PinnedRoomLogHead): void | Promise<void>;
}

/** Options of {@link RoomLogs}. */
export interface RoomLogsOptions extends RoomLogVerifyOptions {
  /** Entries asked per page. Default 512 (the service's maximum). */
  pageSize?: number;
  /** Persists each room's verified head; a log that no longer contains it is a fork or rollback. */
  heads?: RoomLogHeadStore;
  /**
   * Brings `adminAuthority` up to date; called before a page with an admin
   * entry is verified, so a revocation the service has logged is known. A
   * bus without a users log (`log_missing`) leaves only `trustedAdmins`.
   */
  refreshAdminAuthority?: () => Promise<unknown>;
  /** The reader's own key: entries it signed (a room's owner signed most of its log) are checked by signing them again, about a third of a verification's cost. */
  own?: SigningKey;
}

/** Reads one page of `roomId`'s log from `fromSeq` (the client's `rooms.log`). */
export type RoomLogFetch = (roomId: string, fromSeq: number, limit: number) => Promise<MembershipRoomsLogReply>;

/**
 * The verified membership logs of one client, fetched incrementally: each
 * sync asks from the last verified entry on (that entry again, so a changed
 * one is caught as a fork), verifies what is new and never forgets what it
 * verified, so a service that later shows a shorter or different log is
 * refused.
 */
export class RoomLogs {
  readonly #fetch: RoomLogFetch;
  readonly #opts: RoomLogsOptions;
  readonly #logs = new Map<string, VerifiedRoomLog>();
  readonly #syncing = new Map<string, Promise<VerifiedRoomLog>>();

  constructor(fetch: RoomLogFetch, opts: RoomLogsOptions = {}) {
    this.#fetch = fetch;
    this.#opts = opts;
  }

  /** The verified log of `roomId` so far, without asking the service (undefined: never synced). */
  cached(roomId: string): VerifiedRoomLog | undefined {
    return this.#logs.get(roomId);
  }

  /**
   * Brings `roomId`'s log up to the service's head (and at least to
   * `atLeast`, a position someone signed), verifying every new entry.
   * Concurrent calls for one room share one sync.
   */
  sync(roomId: string, atLeast?: number): Promise<VerifiedRoomLog> {
    const known = this.#logs.get(roomId);
    if (known !== undefined && atLeast !== undefined && known.headSeq >= atLeast && this.#syncing.get(roomId) === undefined) return Promise.resolve(known);
    const running = this.#syncing.get(roomId);
    if (running !== undefined) return running.then((log) => (atLeast === undefined || log.headSeq >= atLeast ? log : this.sync(roomId, atLeast)));
    const run = this.#sync(roomId, atLeast).finally(() => this.#syncing.delete(roomId));
    this.#syncing.set(roomId, run);
    return run;
  }

  async #sync(roomId: string, atLeast: number | undefined): Promise<VerifiedRoomLog> {
    const log = this.#logs.get(roomId) ?? new VerifiedRoomLog(roomId, this.#opts);
    const fail = (reason: RoomLogErrorReason, message: string, seq?: number): RoomLogError => new RoomLogError(roomId, reason, message, seq);
    try {
      await syncChain<RoomLogEntry>({
        log,
        fetch: (from, limit) => this.#fetch(roomId, from, limit),
        limit: this.#opts.pageSize ?? 512,
        entryHash: roomLogEntryHash,
        fail,
        own: this.#opts.own,
        checkPage: (page) => {
          if ((page as MembershipRoomsLogReply).roomId !== roomId) throw fail(RoomLogErrorReason.badEntry, "the service answered for another room");
        },
        beforeAppend: async (entries) => {
          if (this.#opts.refreshAdminAuthority !== undefined && entries.some((e) => e.actorRole === "admin")) await this.#refreshAdmins();
        },
      });
    } finally {
      // What verified before a failure stays verified.
      if (log.length > 0) this.#logs.set(roomId, log);
    }
    if (log.length === 0) throw fail(RoomLogErrorReason.missing, "the room has no membership log");
    if (atLeast !== undefined && log.headSeq < atLeast) throw fail(RoomLogErrorReason.gap, `the log ends at ${log.headSeq}, before signed position ${atLeast}`, atLeast);
    await this.#checkPinned(log);
    return log;
  }

  async #refreshAdmins(): Promise<void> {
    try {
      await this.#opts.refreshAdminAuthority?.();
    } catch (err) {
      // No users log at all (a bus bootstrapped before it existed): the pin alone decides. Anything else (a fork, a forged admin) fails the sync.
      if (!(err instanceof UnibusError && err.reason === RoomLogErrorReason.missing)) throw err;
    }
  }

  /** A head verified in an earlier process must still be in the log, unchanged. */
  async #checkPinned(log: VerifiedRoomLog): Promise<void> {
    const store = this.#opts.heads;
    if (store === undefined) return;
    const next = checkPinnedHead(log, await store.get(log.roomId), (reason, message, seq) => new RoomLogError(log.roomId, reason, message, seq));
    if (next !== undefined) await store.set(log.roomId, next);
  }
}
