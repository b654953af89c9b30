import type { StoredRoomsByMemberRecord, StoredUserRecord } from "@unibus/contracts";

/**
 * A `users` record as membership stores it: a member named "h", added at
 * the epoch by itself; a revoked one also carries when and by whom. `over`
 * sets any other field (role, handle, …).
 */
export function storedUser(principal: string, status: StoredUserRecord["status"] = "active", over: Partial<StoredUserRecord> = {}): StoredUserRecord {
  const revoked = status === "revoked" ? { revokedAt: new Date().toISOString(), revokedBy: principal } : {};
  return { principal, handle: "h", role: "member", status, addedAt: new Date(0).toISOString(), addedBy: principal, ...revoked, ...over };
}

/** A `rooms_by_member` record: the rooms `principal` holds, by role. */
export function storedRooms(principal: string, rooms: StoredRoomsByMemberRecord["rooms"]): StoredRoomsByMemberRecord {
  return { principal, rooms };
}
