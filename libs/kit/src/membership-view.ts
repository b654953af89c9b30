/**
 * The membership view every service decides access with: who is an active
 * user (and in what role), and who is a member of a room. Membership writes
 * `users` and `members`; every other service reads them here, by leader
 * reads, with each record checked against its stored-data schema. A store
 * error is 503 and a damaged record 500 `corrupt_record`: both deny (fail
 * closed), neither is mistaken for "not a member".
 */
import { Kvm } from "@nats-io/kv";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { ErrorCode, ErrorReason, StoredBucket, UnibusError, memberKey } from "@unibus/contracts";
import type { Caller, Role, SignedCaller } from "./definition.js";
import { readRecord, recordCheck, storeUnavailable } from "./kv.js";
import { LeaderContactFence } from "./leader-contact.js";
import type { RecordReader } from "./kv.js";

/** A user's allowlist role. */
export type UserRole = "admin" | "member";
/** A member's role in a room. */
export type RoomRole = "owner" | "member";

const usersReader = { store: "membership", check: recordCheck("membership", "stored.users.record") } satisfies RecordReader<unknown>;
const membersReader = { store: "membership", check: recordCheck("membership", "stored.members.record") } satisfies RecordReader<unknown>;

/**
 * The kit's `resolveRole` over the `users` bucket: the role of an ACTIVE
 * user, else null (so admin-only endpoints deny). A store error or a damaged
 * record throws, which the kit answers with its code: never guess a role.
 */
/** One fence per bucket handle, shared by every check that reads it. */
const fences = new WeakMap<KV, LeaderContactFence>();

/**
 * A read that decides access, fenced like the callout's: a leader cut off
 * from its quorum may still answer with a record the other side already
 * changed (a revoke, a removal), so its answer is refused (503) instead.
 */
async function fencedRead<T>(kv: KV, read: () => Promise<T>): Promise<T> {
  let fence = fences.get(kv);
  if (fence === undefined) fences.set(kv, (fence = new LeaderContactFence(kv)));
  const [value] = await Promise.all([
    read(),
    fence.check().catch((err: unknown) => {
      throw storeUnavailable("membership", err);
    }),
  ]);
  return value;
}

export function roleResolver(users: KV): (principal: string) => Promise<Role | null> {
  return async (principal) => {
    const user = await fencedRead(users, () => readRecord(users, principal, usersReader));
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

/** `principal`'s role in `roomId`, or null if it is not a member now. */
export async function roomRole(members: KV, roomId: string, principal: string): Promise<RoomRole | null> {
  const key = memberKey(roomId, principal);
  const member = await fencedRead(members, () => readRecord(members, key, membersReader));
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
 * first use, leader reads only, and opened again after a failed open. The
 * role of an ACTIVE admin or member, else null; a read error throws, which
 * the kit answers 503 (fail closed).
 */
export function lazyUsersRoleResolver(nc: NatsConnection): (principal: string) => Promise<Role | null> {
  let users: Promise<KV> | undefined;
  return async (principal) => {
    users ??= new Kvm(nc).open(StoredBucket.membership.users, { allow_direct: false }).catch((err: unknown) => {
      users = undefined;
      throw err;
    });
    const entry = await (await users).get(principal);
    if (entry === null || entry.operation !== "PUT") return null;
    const user = entry.json<{ role?: string; status?: string }>();
    return user.status === "active" && (user.role === "admin" || user.role === "member") ? user.role : null;
  };
}
