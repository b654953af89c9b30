import type { KV, KvEntry } from "@nats-io/kv";
import { ErrorCode, UnibusError } from "@unibus/contracts";
import type { HandlerContext } from "@unibus/kit";
import { VerifiedUsersLog, usersLogEntry } from "@unibus/sdk";
import type { UsersLogEntry, UsersLogOp, UsersLogRole } from "@unibus/sdk";
import type { Logger } from "pino";
import { UserStatus } from "./records.js";
import type { UserRecord } from "./records.js";
import { Unchanged, isRevisionConflict, unavailable } from "./membership-store.js";
import type { MembershipStore } from "./membership-store.js";

/** Rounds of an append before giving up: each lost round means another replica appended first. */
const APPEND_ROUNDS = 16;

/** Entries read in parallel while walking the log forward: few on the first round (usually nothing is new), more while catching up. */
const READ_BATCH = { first: 2, more: 32 } as const;

/** What a handler appends; the signed request comes from the handler context. */
export interface UsersLogAppend {
  op: UsersLogOp;
  target: string;
  role?: UsersLogRole;
}

/**
 * The users log in the `users_log` bucket, key = seq, each written with KV
 * create (compare-and-set on "absent"), so of two replicas appending at one
 * position exactly one wins and the chain never forks. Before appending, the
 * service runs the clients' own verifier over the stored log plus the new
 * entry: a change clients would refuse (a non-admin per the log, a second
 * bootstrap) is refused here and never stored.
 */
export class UsersLogStore {
  readonly #kv: KV;
  #log = new VerifiedUsersLog();
  /** Appends in this process, one at a time. */
  #tail: Promise<unknown> = Promise.resolve();

  constructor(kv: KV) {
    this.#kv = kv;
  }

  async #get(seq: number): Promise<UsersLogEntry | null> {
    let entry: KvEntry | null;
    try {
      entry = await this.#kv.get(String(seq));
    } catch (err) {
      throw unavailable(err);
    }
    return entry === null || entry.operation !== "PUT" ? null : entry.json<UsersLogEntry>();
  }

  /**
   * The verified log brought up to the stored head: walks forward from what
   * is verified until an entry is absent (entry n+1 is only created once n
   * exists). Throws the verifier's error if the stored log is bad.
   */
  async load(): Promise<VerifiedUsersLog> {
    const log = this.#log;
    for (let batch: number = READ_BATCH.first; ; batch = READ_BATCH.more) {
      const seqs = Array.from({ length: batch }, (_, i) => log.length + i);
      const got = await Promise.all(seqs.map((s) => this.#get(s)));
      const end = got.indexOf(null);
      // A concurrent load (another request on this replica) may have appended
      // some of them meanwhile: entries are create-only, so those are the same.
      log.append((end === -1 ? got : got.slice(0, end)).filter((e) => e !== null && e.seq >= log.length) as UsersLogEntry[]);
      if (end !== -1) return log;
    }
  }

  /** Entries `from..to` (inclusive) of the verified log, read back from the bucket. */
  async range(from: number, to: number): Promise<UsersLogEntry[]> {
    const seqs = Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);
    const got = await Promise.all(seqs.map((s) => this.#get(s)));
    const end = got.indexOf(null);
    return (end === -1 ? got : got.slice(0, end)) as UsersLogEntry[];
  }

  /**
   * Appends the caller's signed request once `decide` (seeing the verified
   * log) says what; null from `decide` means the log already says so (a
   * retry after a crash between the append and the users record). Durable
   * when it resolves.
   */
  append(ctx: HandlerContext, decide: (log: VerifiedUsersLog) => UsersLogAppend | null): Promise<UsersLogEntry | null> {
    const run = this.#tail.then(() => this.#append(ctx, decide));
    this.#tail = run.catch(() => undefined);
    return run;
  }

  async #append(ctx: HandlerContext, decide: (log: VerifiedUsersLog) => UsersLogAppend | null): Promise<UsersLogEntry | null> {
    const envelope = ctx.envelope;
    if (envelope === undefined) throw new UnibusError(ErrorCode.Internal, "internal", "allowlist change without a signed request");
    for (let round = 0; round < APPEND_ROUNDS; round++) {
      const log = await this.load();
      const change = decide(log);
      if (change === null) return null;
      const entry = usersLogEntry({
        after: log,
        op: change.op,
        body: ctx.body,
        envelope,
        target: change.target,
        ...(change.role === undefined ? {} : { role: change.role }),
        at: new Date(ctx.now()).toISOString(),
      });
      // The clients' rules, before anything is stored (a UsersLogError is a coded 409).
      log.check(entry);
      try {
        await this.#kv.create(String(entry.seq), JSON.stringify(entry));
      } catch (err) {
        if (isRevisionConflict(err)) continue;
        throw unavailable(err);
      }
      if (log.length === entry.seq) log.append([entry]);
      return entry;
    }
    throw new UnibusError(ErrorCode.Unavailable, "unavailable", "the users log kept changing; retry", { details: { retryAfterMs: 100 } });
  }
}

/**
 * Start-up repair: handlers append to the users log first and write the
 * `users` record after, so a crash in between leaves the record behind the
 * log. Every logged user gets its record (created or revoked as the log
 * says); a record the log does not hold is left alone (users added before
 * the log existed). A bad log is reported and changes nothing.
 */
export async function repairUsersFromLog(store: MembershipStore, usersLog: UsersLogStore, logger: Logger): Promise<void> {
  try {
    const log = await usersLog.load();
    if (log.length === 0) return;
    const entries = await usersLog.range(0, log.headSeq);
    for (const e of entries) {
      const current = await store.getUser(e.target);
      const at = e.at;
      if (e.op === "revoke") {
        if (current === null || current.value.status === UserStatus.revoked) continue;
        await store.updateUser(e.target, (u) => (u === null || u.status === UserStatus.revoked ? Unchanged : { ...u, status: UserStatus.revoked, revokedAt: at, revokedBy: e.signer }));
        logger.warn({ target: e.target }, "user revocation repaired from the log");
      } else if (current === null) {
        const body = JSON.parse(Buffer.from(e.body, "base64url").toString("utf8")) as { handle: string };
        const user: UserRecord = { principal: e.target, handle: body.handle, role: e.role!, status: UserStatus.active, addedAt: at, addedBy: e.signer };
        await store.createUser(user);
        logger.warn({ target: e.target, role: e.role }, "user record repaired from the log");
      }
    }
  } catch (err) {
    logger.error({ err: err instanceof Error ? err.message : String(err) }, "users not repaired from the log");
  }
}
