/**
 * The bus's allowlist as a hash-chained log of admins' own signed requests
 * (contracts/specs/membership-log.md, "Users log"), rooted at entry 0: the
 * bootstrap identity's signed request seeding admin #0. Every client replays
 * it and so learns who is an admin without trusting the membership service
 * (threat: a compromised service naming an extra admin, whose room changes
 * clients would then accept, so room keys get sealed to whoever it adds).
 */
import { ErrorCode, Subjects, UnibusError } from "@unibus/contracts";
import type { MembershipUsersLogReply } from "@unibus/contracts";
import { fromBase64Url, isPrincipal, sha256, toBase64Url } from "@unibus/crypto";
import type { SigningKey } from "@unibus/crypto";
import { ChainErrorReason, SignedChain, ZERO_HASH, checkPinnedHead, concat, field, signedLink, readSignedBody, signedLinkHashFields, syncChain, u64 } from "./signed-chain.js";
import type { SignedLinkEnvelope } from "./signed-chain.js";

/** One entry of the users log, as stored and served. */
export type UsersLogEntry = MembershipUsersLogReply["entries"][number];
/** An allowlist role. */
export type UsersLogRole = "admin" | "member";

/** Domain separation of the users log's entry hash; never reused. */
export const UsersLogFormat = { entryContext: "unibus-users-log-v1" } as const;

/** The allowlist operations the users log records. */
export const UsersLogOp = { bootstrap: "bootstrap", add: "add", revoke: "revoke" } as const;
/** One of the {@link UsersLogOp} values. */
export type UsersLogOp = (typeof UsersLogOp)[keyof typeof UsersLogOp];

/** The request subject each operation must have been signed for. */
export const UsersLogOpSubject = {
  bootstrap: Subjects.membership.adminBootstrap,
  add: Subjects.membership.usersAdd,
  revoke: Subjects.membership.usersRevoke,
} as const satisfies Record<UsersLogOp, string>;

/** Reasons of a {@link UsersLogError}: the room log's, plus a root other than the pinned one. */
export const UsersLogErrorReason = { ...ChainErrorReason, rootMismatch: "log_root_mismatch" } as const;
/** One of the {@link UsersLogErrorReason} values. */
export type UsersLogErrorReason = (typeof UsersLogErrorReason)[keyof typeof UsersLogErrorReason];

/** A users log that failed verification; never fall back to the service's word when it is thrown. */
export class UsersLogError extends UnibusError {
  constructor(
    reason: UsersLogErrorReason,
    message: string,
    readonly seq?: number,
  ) {
    super(ErrorCode.Conflict, reason, `users log${seq === undefined ? "" : ` entry ${seq}`}: ${message} (${reason})`);
    this.name = "UsersLogError";
  }
}

/**
 * `sha256(field("unibus-users-log-v1") ‖ u64(seq) ‖ prev ‖ field(op) ‖
 * field(subject) ‖ field(body) ‖ field(signer) ‖ u64(timestamp) ‖
 * field(nonce) ‖ field(signature) ‖ field(target) ‖ field(role))`; `at` is
 * not hashed (server time, nobody signs it).
 */
export function usersLogEntryHash(e: UsersLogEntry): Uint8Array {
  const prev = fromBase64Url(e.prev);
  if (prev.byteLength !== ZERO_HASH.byteLength) throw new RangeError("prev must be 32 bytes");
  return sha256(
    concat([
      field(UsersLogFormat.entryContext),
      u64(e.seq),
      prev,
      ...signedLinkHashFields(e),
      field(e.target),
      field(e.role ?? ""),
    ]),
  );
}

/** What {@link usersLogEntry} builds an entry from. */
export interface UsersLogEntryInput {
  after: { length: number; headHash: Uint8Array };
  op: UsersLogOp;
  /** The request body bytes exactly as signed. */
  body: Uint8Array;
  envelope: SignedLinkEnvelope;
  target: string;
  role?: UsersLogRole;
  /** Server time (ISO 8601; not hashed). */
  at: string;
}

/** The next entry of the users log: the signed request as received, chained to the head. */
export function usersLogEntry(i: UsersLogEntryInput): UsersLogEntry {
  return {
    seq: i.after.length,
    prev: toBase64Url(i.after.headHash),
    ...signedLink(i.op, UsersLogOpSubject[i.op], i.body, i.envelope),
    target: i.target,
    ...(i.role === undefined ? {} : { role: i.role }),
    at: i.at,
  };
}

/** The target and role the signed body states; throws on anything malformed. */
function signedEffect(op: UsersLogOp, body: Uint8Array): { target: string; role?: UsersLogRole } {
  const req = readSignedBody(body);
  const target = req["principal"];
  if (typeof target !== "string" || !isPrincipal(target)) throw new TypeError("principal missing or invalid");
  if (op === UsersLogOp.revoke) return { target };
  const role = op === UsersLogOp.bootstrap ? "admin" : req["role"];
  if (role !== "admin" && role !== "member") throw new TypeError("bad role");
  return { target, role };
}

/** A user's state in the log. */
interface UserState {
  role: UsersLogRole;
  /** Signed timestamp of the revoke entry; undefined while active. */
  revokedAt?: number;
}

/** Options of {@link VerifiedUsersLog}. */
export interface UsersLogVerifyOptions {
  /**
   * The root to require: the bootstrap identity's principal (`U…`) or entry
   * 0's hash (base64url). Unset: entry 0 is accepted as it comes (pin it
   * then, trust on first use).
   */
  trustedRoot?: string;
}

/**
 * The users log as far as it has been verified. Rules: entry 0 is the
 * bootstrap (admin #0, signed by the root); every later entry is an add or
 * revoke signed by a principal that is an active admin at that point.
 */
export class VerifiedUsersLog extends SignedChain<UsersLogEntry> {
  readonly #users = new Map<string, UserState>();
  readonly #trustedRoot: string | undefined;

  constructor(opts: UsersLogVerifyOptions = {}) {
    super();
    this.#trustedRoot = opts.trustedRoot;
  }

  /** Entry 0's hash, base64url (what a client pins); undefined before it is verified. */
  get rootHash(): string | undefined {
    const h = this.hashAt(0);
    return h === undefined ? undefined : toBase64Url(h);
  }

  /** The principal → role of every active user, after the newest verified entry. */
  get activeUsers(): ReadonlyMap<string, UsersLogRole> {
    return new Map([...this.#users].filter(([, u]) => u.revokedAt === undefined).map(([p, u]) => [p, u.role]));
  }

  /** `principal`'s role and whether it is revoked, at the verified head; undefined if never added. */
  user(principal: string): { role: UsersLogRole; revoked: boolean } | undefined {
    const u = this.#users.get(principal);
    return u === undefined ? undefined : { role: u.role, revoked: u.revokedAt !== undefined };
  }

  /** True when `principal` is an active admin at the verified head. */
  isAdmin(principal: string): boolean {
    const u = this.#users.get(principal);
    return u?.role === "admin" && u.revokedAt === undefined;
  }

  /**
   * Whether an action `principal` signed at `timestamp` (unix ms) carries
   * admin authority: it was made admin in the verified log and not revoked
   * by an entry signed at or before `timestamp`. The limit (timestamps are
   * the signers' clocks) is in the spec.
   */
  wasAdminAt(principal: string, timestamp: number): boolean {
    const u = this.#users.get(principal);
    return u?.role === "admin" && (u.revokedAt === undefined || timestamp < u.revokedAt);
  }

  /** Checks `e` as the next entry without applying it; throws the first failed check. */
  check(e: UsersLogEntry): void {
    const seq = this.length;
    const fail = (reason: UsersLogErrorReason, message: string): UsersLogError => new UsersLogError(reason, message, e.seq);
    const body = this.checkLink(e, (op) => UsersLogOpSubject[op as UsersLogOp], fail);
    const op = e.op;
    let effect: { target: string; role?: UsersLogRole };
    try {
      effect = signedEffect(op, body);
    } catch {
      throw fail(UsersLogErrorReason.badEntry, "the signed request is malformed");
    }
    if (effect.target !== e.target || (effect.role ?? null) !== (e.role ?? null)) throw fail(UsersLogErrorReason.badEntry, "target or role disagrees with the signed request");
    if (seq === 0) {
      if (op !== UsersLogOp.bootstrap) throw fail(UsersLogErrorReason.missing, "the log does not start with the bootstrap");
      const root = this.#trustedRoot;
      if (root !== undefined && root !== e.signer && root !== toBase64Url(usersLogEntryHash(e))) throw fail(UsersLogErrorReason.rootMismatch, "entry 0 is not the pinned root");
      return;
    }
    if (op === UsersLogOp.bootstrap) throw fail(UsersLogErrorReason.unauthorized, "admin #0 is bootstrapped only once, at entry 0");
    // Only an admin per this log at this point: the service's own users list is not trusted for it.
    if (!this.isAdmin(e.signer)) throw fail(UsersLogErrorReason.unauthorized, "only an active admin changes the allowlist");
    const current = this.#users.get(e.target);
    if (op === UsersLogOp.add && current !== undefined) throw fail(UsersLogErrorReason.badEntry, "the principal is already on the allowlist");
    if (op === UsersLogOp.revoke) {
      if (current === undefined || current.revokedAt !== undefined) throw fail(UsersLogErrorReason.badEntry, "revokes a principal that is not active");
      if (e.target === e.signer) throw fail(UsersLogErrorReason.badEntry, "an admin cannot revoke itself");
    }
  }

  /** Verifies and applies `entries` in order; on the first failure throws and keeps what was verified before it. */
  override append(entries: readonly UsersLogEntry[]): void {
    for (const e of entries) {
      this.check(e);
      this.recordLink(e, usersLogEntryHash(e));
      if (e.op === UsersLogOp.revoke) this.#users.set(e.target, { ...this.#users.get(e.target)!, revokedAt: e.timestamp });
      else this.#users.set(e.target, { role: e.role as UsersLogRole });
    }
  }
}

/** Verifies a whole users log from entry 0. */
export function verifyUsersLog(entries: readonly UsersLogEntry[], opts: UsersLogVerifyOptions = {}): VerifiedUsersLog {
  const log = new VerifiedUsersLog(opts);
  log.append(entries);
  if (log.length === 0) throw new UsersLogError(UsersLogErrorReason.missing, "the users log is empty");
  return log;
}

/** What a client persists across processes: the root (entry 0's hash) and the verified head. */
export interface PinnedUsersLog {
  root: string;
  seq: number;
  hash: string;
}

/** Where the pin lives (the CLI keeps it in its home directory). */
export interface UsersLogPinStore {
  get(): PinnedUsersLog | undefined | Promise<PinnedUsersLog | undefined>;
  set(pin: PinnedUsersLog): void | Promise<void>;
}

/** Options of {@link UsersLogSync}. */
export interface UsersLogSyncOptions extends UsersLogVerifyOptions {
  pageSize?: number;
  /** Persists the root and head: a later log with another root, or without the head, is refused. */
  pin?: UsersLogPinStore;
  /** The reader's own key: entries it signed (an admin's own adds and revokes) are checked by signing them again. */
  own?: SigningKey;
}

/** Reads one page of the users log from `fromSeq` (the client's `users.log`). */
export type UsersLogFetch = (fromSeq: number, limit: number) => Promise<MembershipUsersLogReply>;

/**
 * The client's verified users log, synced incrementally from its verified
 * head (that entry asked again, so a changed one shows as a fork); a
 * shorter log later is a rollback. Concurrent syncs share one.
 */
export class UsersLogSync {
  readonly #fetch: UsersLogFetch;
  readonly #opts: UsersLogSyncOptions;
  readonly #log: VerifiedUsersLog;
  #running: Promise<VerifiedUsersLog> | undefined;

  constructor(fetch: UsersLogFetch, opts: UsersLogSyncOptions = {}) {
    this.#fetch = fetch;
    this.#opts = opts;
    this.#log = new VerifiedUsersLog(opts);
  }

  /** The log verified so far (possibly empty), without asking the service. */
  get cached(): VerifiedUsersLog {
    return this.#log;
  }

  sync(): Promise<VerifiedUsersLog> {
    this.#running ??= this.#sync().finally(() => (this.#running = undefined));
    return this.#running;
  }

  async #sync(): Promise<VerifiedUsersLog> {
    const log = this.#log;
    await syncChain<UsersLogEntry>({
      log,
      fetch: this.#fetch,
      limit: this.#opts.pageSize ?? 512,
      entryHash: usersLogEntryHash,
      fail: (reason, message, seq) => new UsersLogError(reason, message, seq),
      own: this.#opts.own,
    });
    if (log.length === 0) throw new UsersLogError(UsersLogErrorReason.missing, "the bus has no users log");
    await this.#checkPinned(log);
    return log;
  }

  /** The root and a head verified in an earlier process must still be there, unchanged. */
  async #checkPinned(log: VerifiedUsersLog): Promise<void> {
    const store = this.#opts.pin;
    if (store === undefined) return;
    const pinned = await store.get();
    if (pinned !== undefined && pinned.root !== log.rootHash) throw new UsersLogError(UsersLogErrorReason.rootMismatch, "entry 0 differs from the root pinned before", 0);
    const next = checkPinnedHead(log, pinned, (reason, message, seq) => new UsersLogError(reason, message, seq));
    if (next !== undefined) await store.set({ root: log.rootHash!, ...next });
  }
}
