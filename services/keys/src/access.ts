import type { KV } from "@nats-io/kv";
import { requireMember as requireRoomMember, roomMembers, roomRole as memberRole } from "@unibus/kit";
import type { RoomRole } from "@unibus/kit";

// Who is an active user, and in what role: the kit's membership view, shared
// with every service that reads membership's buckets.
export { activeUser, roleResolver } from "@unibus/kit";

/** The buckets the keys service reads from the membership service. */
export interface MembershipView {
  users: KV;
  members: KV;
}

/** `principal`'s role in `roomId`, or null if it is not a member now. */
export function roomRole(view: MembershipView, roomId: string, principal: string): Promise<RoomRole | null> {
  return memberRole(view.members, roomId, principal);
}

/**
 * The room's current members, sorted: the `members` key names of the room
 * (`<roomId>.<principal>` by construction) from the kit's fenced copy of the
 * bucket, the same watched copy the access checks read. It answers only
 * after a fence sent after this call (the stream leader, in contact with its
 * quorum, gave its last sequence and the copy applied it), so any removal
 * committed before the check began is reflected (a share sealed to a
 * removed member is a leak); otherwise 503. One stream-info request, shared
 * by concurrent callers, and no per-member read (P4).
 */
export async function currentMembers(view: MembershipView, roomId: string): Promise<string[]> {
  return (await roomMembers(view.members, roomId)).sort(compareAscii);
}

/** Byte-order comparison: the share-set order both sides compute, independent of locale. */
export function compareAscii(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** 403 unless the caller is a current member of the room. */
export function requireMember(view: MembershipView, roomId: string, principal: string): Promise<RoomRole> {
  return requireRoomMember(view.members, roomId, principal);
}
