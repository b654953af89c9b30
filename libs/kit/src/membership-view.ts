/**
 * The membership view every service decides access with: who is an active
 * user (and in what role), and who is a member of a room. Membership writes
 * `users` and `members`; every service (membership's own access checks
 * included) reads them here, from a fenced watched copy ({@link FencedCopy}),
 * with each record checked against its stored-data schema. A store error, a
 * fence that fails or a copy behind its fence is 503 and a damaged record
 * 500 `corrupt_record`: all deny (fail closed), none is mistaken for "not a
 * member".
 *
 * Threat: a revoked user or a removed member served once more (a share, a
 * blob, room history) after the revoke or removal was acknowledged. A leader
 * get run beside a leader-contact fence does not close it: a stream leader
 * paused past an election answers gets with its old records once resumed,
 * while the fence is answered by the new leader.
 */
import { Kvm } from "@nats-io/kv";
import type { Bucket, KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import type { Logger } from "pino";
import { ErrorCode, ErrorReason, StoredBucket, UnibusError, memberKey } from "@unibus/contracts";
import type { Caller, Role, SignedCaller } from "./definition.js";
import { FencedCopy } from "./fenced-copy.js";
import { corruptRecord, recordCheck, storeUnavailable } from "./kv.js";

/** A user's allowlist role. */
export type UserRole = "admin" | "member";
/** A member's role in a room. */
export type RoomRole = "owner" | "member";

const STORE = "membership";
const checkUser = recordCheck(STORE, "stored.users.record");
const checkMember = recordCheck(STORE, "stored.members.record");

/** One fenced copy per bucket handle, shared by every check that reads it; started on first use. */
const copies = new WeakMap<KV, FencedCopy>();
let defaultLogger: Logger | undefined;

/**
 * The fenced copy of `kv`, created (and its watch started) on first use.
 * Call it at service start with the service's logger to have the copy's
 * first replay under way before the first request, and its log lines
 * tagged; a later call returns the same copy.
 */
export function membershipCopy(kv: KV, logger?: Logger): FencedCopy {
  let copy = copies.get(kv);
  if (copy === undefined) {
    const log = logger ?? (defaultLogger ??= pino({ level: "info" }).child({ op: "membership-view" }));
    // `members` keys are `<roomId>.<principal>`: grouped by room, so a room's
    // member list is read from the same copy (and fence) as each member's role.
    // A KV handle is a `Bucket`; a wrapper without its name gets no groups, so roomMembers refuses (503).
    const group = (kv as Partial<Pick<Bucket, "bucket">>).bucket === StoredBucket.membership.members ? roomOfMemberKey : undefined;
    copies.set(kv, (copy = new FencedCopy(kv, { op: "membership-view.watch", logger: log, ...(group === undefined ? {} : { group }) })));
    // A failed start is retried by the next read, which refuses meanwhile.
    copy.start().catch(() => undefined);
  }
  return copy;
}

/**
 * `key`'s record from the fenced copy of `kv`, checked by `check` (which
 * throws on a record its schema refuses); null when absent or deleted. A
 * fence that fails or a copy that is behind is 503 `unavailable`, an
 * unparsable record 500 `corrupt_record`: never a guess.
 */
export async function fencedRecord<T>(kv: KV, key: string, check: (value: unknown, key: string) => T): Promise<T | null> {
  let record;
  try {
    record = await membershipCopy(kv).get(key);
  } catch (err) {
    throw storeUnavailable(STORE, err);
  }
  if (record === null) return null;
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder().decode(record.value));
  } catch (err) {
    throw corruptRecord(STORE, key, err);
  }
  return check(value, key);
}

/**
 * The kit's `resolveRole` over the `users` bucket: the role of an ACTIVE
 * user, else null (so admin-only endpoints deny). A store error or a damaged
 * record throws, which the kit answers with its code: never guess a role.
 */
export function roleResolver(users: KV): (principal: string) => Promise<Role | null> {
  return async (principal) => {
    const user = await fencedRecord(users, principal, checkUser);
    // A record stored under another principal's key is damaged too.
    if (user !== null && user.principal !== principal) throw usersReaderMismatch(principal);
    return user !== null && user.status === "active" ? user.role : null;
  };
}

function usersReaderMismatch(key: string): UnibusError {
  return new UnibusError(ErrorCode.Internal, ErrorReason.CorruptRecord, "membership store holds a damaged record", { cause: new Error(`users record at ${key} names another principal`) });
}

/** The caller as an active user (admin or member); anyone else is 401/403. */
export function activeUser(caller: Caller): SignedCaller & { role: UserRole } {
  if (caller.anonymous) throw new UnibusError(ErrorCode.Unauthorized, ErrorReason.SignatureMissing, "request must carry a signed envelope");
  if (caller.role !== "admin" && caller.role !== "member") throw new UnibusError(ErrorCode.Forbidden, ErrorReason.Forbidden, "caller is not an active user");
  return caller as SignedCaller & { role: UserRole };
}

function roomOfMemberKey(key: string): string | undefined {
  const dot = key.indexOf(".");
  return dot > 0 ? key.slice(0, dot) : undefined;
}

/**
 * The room's current members (principals, unsorted), from the fenced copy of
 * `members` (the one its access checks read): one fence sent after this
 * call, then the room's keys from memory. A fence that fails or a copy
 * behind it is 503 `unavailable`, never a short list (a listing that kept a
 * removed member would seal it the next room key).
 */
export async function roomMembers(members: KV, roomId: string): Promise<string[]> {
  let keys: string[];
  try {
    keys = await membershipCopy(members).keysIn(roomId);
  } catch (err) {
    throw storeUnavailable(STORE, err);
  }
  const prefix = roomId.length + 1;
  return keys.map((k) => k.slice(prefix));
}

/** `principal`'s role in `roomId`, or null if it is not a member now. */
export async function roomRole(members: KV, roomId: string, principal: string): Promise<RoomRole | null> {
  const key = memberKey(roomId, principal);
  const member = await fencedRecord(members, key, checkMember);
  if (member !== null && (member.roomId !== roomId || member.principal !== principal)) {
    throw new UnibusError(ErrorCode.Internal, ErrorReason.CorruptRecord, "membership store holds a damaged record", { cause: new Error(`members record at ${key} names another membership`) });
  }
  return member?.role ?? null;
}

/** 403 unless `principal` is a current member of the room; its role otherwise. */
export async function requireMember(members: KV, roomId: string, principal: string): Promise<RoomRole> {
  const role = await roomRole(members, roomId, principal);
  if (role === null) throw new UnibusError(ErrorCode.Forbidden, ErrorReason.Forbidden, "not a member of this room");
  return role;
}

/**
 * The kit's `resolveRole` for a service that must start before membership
 * has created `users` (healthz, the replica gateway): the bucket is opened on
 * first use (leader reads only), and opened again after a failed open, then
 * read like {@link roleResolver}, from its fenced copy. The role of an
 * ACTIVE admin or member, else null; a read error throws, which the kit
 * answers 503 (fail closed).
 */
export function lazyUsersRoleResolver(nc: NatsConnection, logger?: Logger): (principal: string) => Promise<Role | null> {
  let users: Promise<KV> | undefined;
  let resolve: ((principal: string) => Promise<Role | null>) | undefined;
  return async (principal) => {
    if (resolve === undefined) {
      users ??= new Kvm(nc).open(StoredBucket.membership.users, { allow_direct: false }).catch((err: unknown) => {
        users = undefined;
        throw err;
      });
      let kv: KV;
      try {
        kv = await users;
      } catch (err) {
        throw storeUnavailable(STORE, err);
      }
      membershipCopy(kv, logger);
      resolve ??= roleResolver(kv);
    }
    return resolve(principal);
  };
}
