import { RoomSubjectPrefix, StoredBucket } from "@unibus/contracts";
import type { MembershipRoomsGetReply, MembershipUsersGetReply, StoredRoomsByMemberRecord } from "@unibus/contracts";

/** A value of the `users` bucket, key = principal (read by the auth callout). */
export type UserRecord = MembershipUsersGetReply["user"];
/** A value of the `rooms` bucket, key = room id. */
export type RoomRecord = MembershipRoomsGetReply["room"];
/** A value of the `members` bucket, key = `<roomId>.<principal>`. */
export type MemberRecord = MembershipRoomsGetReply["members"][number];
/** A user's allowlist role. */
export type UserRole = UserRecord["role"];
/** A member's role in a room. */
export type RoomRole = MemberRecord["role"];

/**
 * A value of the `rooms_by_member` bucket, key = principal: the grant-side
 * index the auth callout turns into room subject permissions (stored-data contract).
 */
export type RoomsByMemberRecord = StoredRoomsByMemberRecord;

/** Allowlist roles. */
export const UserRoleName = { admin: "admin", member: "member" } as const satisfies Record<string, UserRole>;
/** Allowlist statuses; revocation flips status, never deletes. */
export const UserStatus = { active: "active", revoked: "revoked" } as const satisfies Record<string, UserRecord["status"]>;
/** Room roles. */
export const RoomRoleName = { owner: "owner", member: "member" } as const satisfies Record<string, RoomRole>;

/** The KV buckets of the membership data model (architecture §2). */
export const MembershipBucket = StoredBucket.membership;
/** One of the {@link MembershipBucket} names. */
export type MembershipBucket = (typeof MembershipBucket)[keyof typeof MembershipBucket];

/** The data-plane subject root of a room; frames go to `<root>.>`. */
export function roomSubject(roomId: string): string {
  return `${RoomSubjectPrefix}.${roomId}`;
}

// Stream and key formats are part of the stored-data contract.
export { memberKey, roomStreamName } from "@unibus/contracts";
