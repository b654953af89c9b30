import { NkeyPrefix, decodeNkeyPublic } from "@unibus/crypto";
import { UnibusSubject } from "@unibus/contracts";
import type { StoredRoomsByMemberRecord, StoredUserRecord } from "@unibus/contracts";

/** A user's role in the `users` bucket (architecture §3). */
export const Role = {
  admin: "admin",
  member: "member",
} as const;
/** One of the {@link Role} values. */
export type Role = (typeof Role)[keyof typeof Role];

/** Allowlist status in the `users` bucket; revocation flips it, never deletes. */
export const UserStatus = {
  active: "active",
  revoked: "revoked",
} as const;
/** One of the {@link UserStatus} values. */
export type UserStatus = (typeof UserStatus)[keyof typeof UserStatus];

/** A value of the `users` bucket, keyed by principal (written by the membership service): the stored-data contract's type. */
export type UserRecord = StoredUserRecord;

/** A room role in the `rooms_by_member` bucket. */
export type RoomRole = StoredRoomsByMemberRecord["rooms"][string];

/** A value of the `rooms_by_member` bucket, keyed by principal: the stored-data contract's type. */
export type RoomsRecord = StoredRoomsByMemberRecord;

/**
 * Connection permissions as they go into a user JWT. Both sections are always
 * present and carry only allow lists: a user JWT without a pub/sub section
 * grants everything (nats-notes "Auth callout").
 */
export interface Permissions {
  pub: { allow: string[] };
  sub: { allow: string[] };
}

/** Who is connecting, as far as permissions are concerned. */
export type Grantee =
  | { kind: "user"; user: UserRecord }
  /** An identity that is not in the allowlist (a node before it joins). Only with bootstrap access. */
  | { kind: "bootstrap"; principal: string };

// A room id becomes one subject token. Anything else (".", "*", ">", spaces)
// would widen the grant: a room called "*" would open every room (threat:
// subject injection through a stored room id).
const ROOM_ID_RE = /^[A-Za-z0-9_-]{1,128}$/;

/** True iff `roomId` is safe to place into a subject as a single token. */
export function isSafeRoomId(roomId: string): boolean {
  return ROOM_ID_RE.test(roomId);
}

/** The inbox root a principal may subscribe to; the SDK sets `inboxPrefix` to `_INBOX.<principal>`. */
export function inboxOf(principal: string): string {
  return `${UnibusSubject.inboxPrefix}${principal}`;
}

/**
 * The pub/sub allow lists for a connection (architecture §4 ACL table):
 *
 * - member/admin: pub `unibus.v1.*.>` and its rooms; sub its rooms and its
 *   own inbox; admins also pub `$SRV.>` (micro discovery).
 * - bootstrap (node / unknown, only if enabled): pub `unibus.v1.replica.handshake.*`; sub its own inbox.
 *
 * Nothing else: no `$JS.API` at all, `$KV`, `$SYS`, `$O`, nor other inboxes.
 * JetStream answers an API request (a direct get, an ack) on whatever reply
 * subject the requester names, with the server's rights, so any `$JS.API`
 * grant would let a member write into the account's buckets (threat: a
 * forged allowlist record through a direct get of a frame it stored); room
 * history is read through the membership service (`rooms.history`).
 * Unsafe room ids are skipped, never widened.
 *
 * @throws RangeError for a revoked user or a principal that is not a `U…` nkey;
 *   callers deny before getting here, this is the last line.
 */
export function permissionsFor(grantee: Grantee, rooms: RoomsRecord | null): Permissions {
  const principal = grantee.kind === "user" ? grantee.user.principal : grantee.principal;
  // The principal lands in a subject: only a checked nkey may (no "*" or ">" inboxes).
  if (decodeNkeyPublic(NkeyPrefix.user, principal) === undefined) throw new RangeError("principal is not a user nkey");
  const inbox = `${inboxOf(principal)}.>`;
  if (grantee.kind === "bootstrap") {
    return { pub: { allow: [UnibusSubject.replicaHandshake] }, sub: { allow: [inbox] } };
  }
  const { user } = grantee;
  if (user.status !== UserStatus.active) throw new RangeError("no permissions for an inactive user");
  if (user.role !== Role.admin && user.role !== Role.member) throw new RangeError("unknown role");
  const roomSubjects: string[] = [];
  if (rooms !== null && rooms.principal === principal) {
    for (const roomId of Object.keys(rooms.rooms).sort()) {
      if (isSafeRoomId(roomId)) roomSubjects.push(`${UnibusSubject.roomPrefix}${roomId}.>`);
    }
  }
  const pub: string[] = [UnibusSubject.controlPlane, ...roomSubjects];
  if (user.role === Role.admin) pub.push(UnibusSubject.microDiscovery);
  return { pub: { allow: pub }, sub: { allow: [...roomSubjects, inbox] } };
}
