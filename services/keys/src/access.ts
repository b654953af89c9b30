import type { KV } from "@nats-io/kv";
import { requireMember as requireRoomMember, roomRole as memberRole } from "@unibus/kit";
import type { RoomRole } from "@unibus/kit";
import type { MemberDirectory } from "./store/member-directory.js";
import { listKeys } from "./store/records.js";

// Who is an active user, and in what role: the kit's membership view, shared
// with every service that reads membership's buckets.
export { activeUser, roleResolver } from "@unibus/kit";

/** The buckets the keys service reads from the membership service. */
export interface MembershipView {
  users: KV;
  members: KV;
  /** `members` key names in memory, with a freshness barrier; without it every listing reads the bucket. */
  memberDirectory?: MemberDirectory;
}

/** `principal`'s role in `roomId`, or null if it is not a member now. */
export function roomRole(view: MembershipView, roomId: string, principal: string): Promise<RoomRole | null> {
  return memberRole(view.members, roomId, principal);
}

/**
 * The room's current members, sorted. Read from the `members` key names: from
 * the {@link MemberDirectory} once it has caught up with the bucket's last
 * write (one stream-info request), else from one ordered consumer over
 * `<roomId>.*`; the key is `<roomId>.<principal>` by construction.
 *
 * An ordered consumer may run on any replica, and one that lags would still
 * list a member removed a moment ago (a share to a removed member is a
 * leak). So each member that listing names is confirmed through the kit's
 * membership view (its fenced copy of `members`): a stale listing can then
 * only miss a new member, which the exact-set check refuses (retry), never
 * keep a removed one. Only this fallback pays the per-member checks.
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
export function requireMember(view: MembershipView, roomId: string, principal: string): Promise<RoomRole> {
  return requireRoomMember(view.members, roomId, principal);
}
