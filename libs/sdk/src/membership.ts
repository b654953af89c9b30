import { normalisePrincipal } from "@unibus/crypto";
import { Subjects } from "@unibus/contracts";
import type {
  MembershipAdminBootstrapReply,
  MembershipRoomsCreateReply,
  MembershipRoomsCreateRequest,
  MembershipRoomsGetReply,
  MembershipRoomsHistoryReply,
  MembershipRoomsHistoryRequest,
  MembershipRoomsInviteReply,
  MembershipRoomsLeaveReply,
  MembershipRoomsListReply,
  MembershipRoomsLogReply,
  MembershipRoomsRemoveReply,
  MembershipUsersAddReply,
  MembershipUsersLogReply,
  MembershipUsersGetReply,
  MembershipUsersListReply,
  MembershipUsersRevokeReply,
} from "@unibus/contracts";

/** One page of a list call: where it starts and how many entries at most (the service caps it). */
export interface PageOptions {
  /** The `next_cursor` of the previous page; absent for the first. */
  cursor?: string;
  /** Most entries in the page; the service's default when absent. */
  limit?: number;
}

function pageBody(opts: PageOptions): Record<string, unknown> {
  return { ...(opts.cursor === undefined ? {} : { cursor: opts.cursor }), ...(opts.limit === undefined ? {} : { limit: opts.limit }) };
}

/**
 * Follows `next_cursor` from page to page, yielding each entry once: an
 * entry changed during the listing can come again in a later page, and is
 * skipped then. Memory grows only by one key per entry, never by a page.
 */
async function* pages<P extends { next_cursor?: string }, T>(fetch: (cursor: string | undefined) => Promise<P>, items: (page: P) => T[], key: (item: T) => string): AsyncGenerator<T> {
  const seen = new Set<string>();
  let cursor: string | undefined;
  do {
    const page = await fetch(cursor);
    for (const item of items(page)) {
      const k = key(item);
      if (seen.has(k)) continue;
      seen.add(k);
      yield item;
    }
    cursor = page.next_cursor;
  } while (cursor !== undefined);
}

/** Sends one signed request and decodes the reply (see `UnibusClient.request`). */
export type SendRequest = <T>(subject: string, body: unknown) => Promise<T>;

/** A user's role in the allowlist. */
export type UserRole = "admin" | "member";
/** A member's role in a room. */
export type RoomRole = "owner" | "member";

/**
 * `unibus.v1.membership.users.*`: the allowlist. Admin only. Principals may
 * be given as `U…` nkeys or 64-hex public keys; they are normalised first.
 */
export class UsersApi {
  constructor(private readonly send: SendRequest) {}

  /** Adds a principal; a principal already on the list is a 409 that changes nothing. */
  add(principal: string, handle: string, role: UserRole): Promise<MembershipUsersAddReply> {
    return this.send(Subjects.membership.usersAdd, { principal: normalisePrincipal(principal), handle, role });
  }

  /** One page of users, revoked ones included; follow `next_cursor` for the rest (or use {@link listAll}). */
  list(opts: PageOptions = {}): Promise<MembershipUsersListReply> {
    return this.send(Subjects.membership.usersList, pageBody(opts));
  }

  /** Every user, page by page, revoked ones included. */
  listAll(opts: Omit<PageOptions, "cursor"> = {}): AsyncGenerator<MembershipUsersListReply["users"][number]> {
    return pages((cursor) => this.list({ ...opts, ...(cursor === undefined ? {} : { cursor }) }), (p) => p.users, (u) => u.principal);
  }

  /** One user; 404 if unknown. */
  get(principal: string): Promise<MembershipUsersGetReply> {
    return this.send(Subjects.membership.usersGet, { principal: normalisePrincipal(principal) });
  }

  /** Revokes a user and closes its live connections; 409 if already revoked. */
  revoke(principal: string): Promise<MembershipUsersRevokeReply> {
    return this.send(Subjects.membership.usersRevoke, { principal: normalisePrincipal(principal) });
  }

  /**
   * One page of the users log from `fromSeq` (any active user). Unverified:
   * `UnibusClient.usersLog` verifies the chain from its root.
   */
  log(fromSeq = 0, limit?: number): Promise<MembershipUsersLogReply> {
    return this.send(Subjects.membership.usersLog, { fromSeq, ...(limit === undefined ? {} : { limit }) });
  }
}

/** `unibus.v1.membership.rooms.*`: rooms and their members. */
export class RoomsApi {
  constructor(private readonly send: SendRequest) {}

  /**
   * Creates a room owned by the caller. The caller's connection reconnects to
   * gain the room's subjects. A persisted room may ask for its own `quota`
   * (stream limits) within the service's ceilings; omitted fields take the
   * service defaults.
   */
  create(name: string, policy: MembershipRoomsCreateRequest["policy"], opts: { quota?: MembershipRoomsCreateRequest["quota"] } = {}): Promise<MembershipRoomsCreateReply> {
    return this.send(Subjects.membership.roomsCreate, opts.quota === undefined ? { name, policy } : { name, policy, quota: opts.quota });
  }

  /** A room and one page of its members (members and admins only); follow `next_cursor` (or use {@link members}); `withHandles` adds each member's handle. */
  get(roomId: string, opts: PageOptions & { withHandles?: boolean } = {}): Promise<MembershipRoomsGetReply> {
    return this.send(Subjects.membership.roomsGet, { roomId, ...pageBody(opts), ...(opts.withHandles === true ? { withHandles: true } : {}) });
  }

  /**
   * One page of a persisted room's stored frames (ciphertext, base64), read
   * by the service for current members. `Room.history()` pages through it
   * and decrypts; this is the raw form.
   */
  history(req: MembershipRoomsHistoryRequest): Promise<MembershipRoomsHistoryReply> {
    return this.send(Subjects.membership.roomsHistory, req);
  }

  /**
   * One page of the room's membership log from `fromSeq` (members and
   * admins only). Unverified: `UnibusClient.roomLogs` verifies the chain.
   */
  log(roomId: string, fromSeq = 0, limit?: number): Promise<MembershipRoomsLogReply> {
    return this.send(Subjects.membership.roomsLog, { roomId, fromSeq, ...(limit === undefined ? {} : { limit }) });
  }

  /** Every member of a room, page by page (members and admins only). */
  members(roomId: string, opts: Omit<PageOptions, "cursor"> = {}): AsyncGenerator<MembershipRoomsGetReply["members"][number]> {
    return pages((cursor) => this.get(roomId, { ...opts, ...(cursor === undefined ? {} : { cursor }) }), (p) => p.members, (m) => m.principal);
  }

  /** One page of the rooms the caller belongs to; `all: true` lists every room (admins only). Follow `next_cursor` for the rest (or use {@link listAll}). */
  list(opts: { all?: boolean } & PageOptions = {}): Promise<MembershipRoomsListReply> {
    return this.send(Subjects.membership.roomsList, { ...(opts.all === undefined ? {} : { all: opts.all }), ...pageBody(opts) });
  }

  /** Every room the caller belongs to (or every room, `all: true`), page by page. */
  listAll(opts: { all?: boolean; limit?: number } = {}): AsyncGenerator<MembershipRoomsListReply["rooms"][number]> {
    return pages((cursor) => this.list({ ...opts, ...(cursor === undefined ? {} : { cursor }) }), (p) => p.rooms, (r) => r.room.id);
  }

  /** Adds an active user to a room (owners and admins). */
  invite(roomId: string, principal: string, role?: RoomRole): Promise<MembershipRoomsInviteReply> {
    return this.send(Subjects.membership.roomsInvite, { roomId, principal: normalisePrincipal(principal), ...(role === undefined ? {} : { role }) });
  }

  /** Removes a member from a room (owners and admins). */
  remove(roomId: string, principal: string): Promise<MembershipRoomsRemoveReply> {
    return this.send(Subjects.membership.roomsRemove, { roomId, principal: normalisePrincipal(principal) });
  }

  /** Leaves a room. */
  leave(roomId: string): Promise<MembershipRoomsLeaveReply> {
    return this.send(Subjects.membership.roomsLeave, { roomId });
  }
}

/** `unibus.v1.membership.admin.*`: privileged operations of the internal bootstrap identity. */
export class AdminApi {
  constructor(private readonly send: SendRequest) {}

  /** Seeds admin #0; if an active admin exists, returns it unchanged (`created: false`). */
  bootstrap(principal: string, handle: string): Promise<MembershipAdminBootstrapReply> {
    return this.send(Subjects.membership.adminBootstrap, { principal: normalisePrincipal(principal), handle });
  }
}
