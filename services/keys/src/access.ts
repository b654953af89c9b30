import type { KV } from "@nats-io/kv";
import { ErrorCode, ErrorReason, UnibusError } from "@unibus/contracts";
import type { Caller, Role, SignedCaller } from "@unibus/kit";
import type { MemberDirectory } from "./member-directory.js";
import { listKeys, readJson } from "./records.js";

/** The slice of a membership `users` record the keys service relies on. */
interface UserView {
  role: "admin" | "member";
  status: "active" | "revoked";
}

/** The slice of a membership `members` record the keys service relies on. */
interface MemberView {
  role: "owner" | "member";
}

/** The buckets the keys service reads from the membership service. */
export interface MembershipView {
  users: KV;
  members: KV;
  /** `members` key names in memory, with a freshness barrier; without it every listing reads the bucket. */
  memberDirectory?: MemberDirectory;
}

/** The kit's `resolveRole`: the role of an ACTIVE user, else null. A store error throws (503), never a guess. */
export function roleResolver(users: KV): (principal: string) => Promise<Role | null> {
  return async (principal) => {
    const user = await readJson<UserView>(users, principal);
    return user !== null && user.status === "active" ? user.role : null;
  };
}

/** The caller as an active user; anyone else is 403. */
export function activeUser(caller: Caller): SignedCaller & { role: "admin" | "member" } {
  if (caller.anonymous) throw new UnibusError(ErrorCode.Unauthorized, ErrorReason.SignatureMissing, "request must carry a signed envelope");
  if (caller.role !== "admin" && caller.role !== "member") throw new UnibusError(ErrorCode.Forbidden, ErrorReason.Forbidden, "caller is not an active user");
  return caller as SignedCaller & { role: "admin" | "member" };
}

/** `principal`'s role in `roomId`, or null if it is not a member now. */
export async function roomRole(view: MembershipView, roomId: string, principal: string): Promise<MemberView["role"] | null> {
  return (await readJson<MemberView>(view.members, `${roomId}.${principal}`))?.role ?? null;
}

/**
 * The room's current members, sorted. Read from the `members` key names: from
 * the {@link MemberDirectory} once it has caught up with the bucket's last
 * write (one stream-info request), else from one ordered consumer over
 * `<roomId>.*`; the key is `<roomId>.<principal>` by construction.
 *
 * An ordered consumer may run on any replica, and one that lags would still
 * list a member removed a moment ago (a share to a removed member is a
 * leak). So each member that listing names is confirmed by a leader read: a
 * stale listing can then only miss a new member, which the exact-set check
 * refuses (retry), never keep a removed one. Only this fallback pays the
 * per-member reads.
 */
export async function currentMembers(view: MembershipView, roomId: string): Promise<string[]> {
  const watched = (await view.memberDirectory?.members(roomId)) ?? null;
  if (watched !== null) return watched.sort(compareAscii);
  const prefix = `${roomId}.`;
  const listed = (await listKeys(view.members, `${roomId}.*`)).map((k) => k.slice(prefix.length));
  const roles = await Promise.all(listed.map((p) => roomRole(view, roomId, p)));
  return listed.filter((_, i) => roles[i] !== null).sort(compareAscii);
}

/** Byte-order comparison: the share-set order both sides compute, independent of locale. */
export function compareAscii(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** 403 unless the caller is a current member of the room. */
export async function requireMember(view: MembershipView, roomId: string, principal: string): Promise<MemberView["role"]> {
  const role = await roomRole(view, roomId, principal);
  if (role === null) throw new UnibusError(ErrorCode.Forbidden, ErrorReason.Forbidden, "not a member of this room");
  return role;
}
