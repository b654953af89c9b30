import { JetStreamApiError } from "@nats-io/jetstream";
import { ErrorCode, ErrorReason, UnibusError } from "@unibus/contracts";
import { handles } from "@unibus/kit";
import { RoomLogOp, deriveRoomId } from "@unibus/sdk";
import type { HandlerContext } from "@unibus/kit";
import { activeUser, checkPrincipal } from "../access.js";
import type { MembershipDeps } from "../deps.js";
import type { KickOutcome } from "../kick.js";
import { DefaultRoomQuotaConfig, resolveRoomQuota } from "../quota.js";
import { RoomHistoryLimits } from "../store/room-history.js";
import { InsufficientResourcesErrCode } from "../store/room-streams.js";
import { deleteLeftoverConsumers } from "../store/room-consumers.js";
import { RoomRoleName, UserStatus, roomSubject } from "../store/records.js";
import type { MemberRecord, RoomRecord, RoomRole } from "../store/records.js";
import { PageSize, parseRoomIdCursor, parseSeqCursor, roomIdCursor, seqCursor } from "../paging.js";
import { Unchanged } from "../store/membership-store.js";
import type { MembershipStore } from "../store/membership-store.js";

/**
 * Rooms one principal may belong to. Its login JWT grants each room twice
 * (pub and sub, ~82 B of claims per room with the SDK's 24-character ids),
 * and the callout's signed reply wraps that JWT in a second base64 layer:
 * ~146 B per room, so past about 7,100 rooms the reply exceeds nats-server's
 * 1 MiB payload limit and the principal can no longer log in at all (bench
 * P12 prints the sizes). 5,000 stays well under it, with room for grants
 * that race past the check below (a handful, one per concurrent request).
 */
export const RoomLimit = {
  perPrincipal: 5_000,
  /** The stable reason of the refusal. */
  reason: "room_limit",
} as const;

/** Refuses a grant that would put `principal` in more rooms than `limit`; a room it is already in costs nothing. */
function checkRoomLimit(rooms: Record<string, unknown> | undefined, roomId: string, limit: number, who: "you" | "the invitee"): void {
  if (rooms === undefined || roomId in rooms) return;
  if (Object.keys(rooms).length >= limit) {
    throw new UnibusError(ErrorCode.Forbidden, RoomLimit.reason, `${who === "you" ? "you are" : "the invitee is"} already in ${limit} rooms, the most one identity can hold and still log in`, {
      details: { limit },
    });
  }
}

/** Rounds of a grant/removal before giving up: only a tight race with the opposite change repeats one. */
const MEMBERSHIP_ROUNDS = 8;

function busy(): UnibusError {
  return new UnibusError(ErrorCode.Unavailable, ErrorReason.Unavailable, "membership changed concurrently; retry", { details: { retryAfterMs: 100 } });
}

/** The account has no storage left to reserve a new room's max_bytes: an operator must raise the account limit. */
function streamCreateError(err: unknown): UnibusError {
  if (err instanceof JetStreamApiError && err.code === InsufficientResourcesErrCode) {
    return new UnibusError(ErrorCode.Unavailable, "storage_exhausted", "the bus has no storage left for another persisted room of this size", { cause: err });
  }
  return new UnibusError(ErrorCode.Unavailable, ErrorReason.Unavailable, "room stream could not be created", { cause: err });
}

function notFound(): UnibusError {
  return new UnibusError(ErrorCode.NotFound, "room_not_found", "no such room");
}

/**
 * Makes `principal` a member of `roomId` with `role`. Order fails closed: the
 * `members` record first, the grant the auth callout reads (`rooms_by_member`)
 * last, so a crash in between leaves a record without access, and a retry
 * completes it. If a concurrent removal deleted the record between the two
 * writes, the round repeats so a grant never outlives its record.
 *
 * @returns the member record and the membership revision (the grant entry's KV revision).
 */
export async function grantMembership(store: MembershipStore, roomId: string, principal: string, role: RoomRole, by: string, at: string): Promise<{ member: MemberRecord; revision: number }> {
  for (let round = 0; round < MEMBERSHIP_ROUNDS; round++) {
    await store.updateMember(roomId, principal, (current) =>
      current?.role === role ? Unchanged : { roomId, principal, role, addedAt: current?.addedAt ?? at, addedBy: current?.addedBy ?? by },
    );
    const revision = await store.setRoomGrant(principal, roomId, role);
    const check = await store.getMember(roomId, principal);
    if (check?.value.role === role) return { member: check.value, revision };
  }
  throw busy();
}

/**
 * Ends a membership. Order fails closed: the grant (`rooms_by_member`) goes
 * first, the `members` record last, deleted only at the revision read, so a
 * concurrent re-invite is not silently erased; the round repeats if a grant
 * reappeared meanwhile. Idempotent: a retry after a crash finishes the job.
 *
 * @returns the membership revision, or null if the principal was not a member.
 */
export async function revokeMembership(store: MembershipStore, roomId: string, principal: string): Promise<number | null> {
  for (let round = 0; round < MEMBERSHIP_ROUNDS; round++) {
    const member = await store.getMember(roomId, principal);
    const grants = await store.getRoomsByMember(principal);
    const granted = grants !== null && roomId in grants.value.rooms;
    if (member === null && !granted) return round === 0 ? null : (grants?.revision ?? 0);
    const revision = await store.setRoomGrant(principal, roomId, null);
    if (member !== null && !(await store.deleteMember(roomId, principal, member.revision))) continue;
    const after = await store.getRoomsByMember(principal);
    if (after === null || !(roomId in after.value.rooms)) return revision;
  }
  throw busy();
}

async function roomOrThrow(store: MembershipStore, roomId: string): Promise<RoomRecord> {
  const room = await store.getRoom(roomId);
  if (room === null) throw notFound();
  return room.value;
}

/** `rooms.*` endpoints. Callers must be active users; room management needs ownership or the admin role. */
export function roomHandlers(deps: MembershipDeps) {
  const { store, kicker, streams, consumers, roomLog } = deps;
  const selfKickDelayMs = deps.selfKickDelayMs ?? 250;
  const quotaConfig = deps.quotas ?? DefaultRoomQuotaConfig;
  const roomLimit = deps.roomLimit ?? RoomLimit.perPrincipal;

  /** Applies a membership change to live connections; the caller's own after its reply. */
  const kickAfterChange = async (principal: string, callerPrincipal: string): Promise<KickOutcome> =>
    principal === callerPrincipal ? kicker.kickLater(principal, selfKickDelayMs) : kicker.kick(principal);

  const requireManager = async (roomId: string, caller: { principal: string; role: string }): Promise<void> => {
    if (caller.role === "admin") return;
    if ((await store.memberRole(roomId, caller.principal)) !== RoomRoleName.owner) throw new UnibusError(ErrorCode.Forbidden, ErrorReason.Forbidden, "only room owners and admins may do this");
  };

  const iso = (ctx: HandlerContext): string => new Date(ctx.now()).toISOString();

  return {
    create: handles("membership", "rooms.create", {
      async handler(req, caller, ctx) {
        const user = activeUser(caller);
        // Before any write: a refused quota leaves no stream and no record.
        const quota = resolveRoomQuota(quotaConfig, req.quota, req.policy.persist);
        // The id follows from the creator's signature, so the creation entry
        // cannot be replayed as the founding entry of another room.
        if (ctx.envelope === undefined) throw new UnibusError(ErrorCode.Unauthorized, ErrorReason.SignatureMissing, "request must carry a signed envelope");
        const id = deriveRoomId(ctx.envelope.signature);
        // Also before any write: the creator becomes the owner, so its grant grows.
        checkRoomLimit((await store.getRoomsByMember(user.principal))?.value.rooms, id, roomLimit, "you");
        const room: RoomRecord = { id, name: req.name, subject: roomSubject(id), policy: req.policy, createdBy: user.principal, createdAt: iso(ctx) };
        // Stream, log entry 0, room, owner record, then the owner's grant: a
        // crash leaves at most an orphan nobody is granted.
        if (quota !== undefined) await streams.ensure(id, quota).catch((err: unknown) => Promise.reject(streamCreateError(err)));
        await roomLog.append(id, ctx, (log) => (log.length === 0 ? { op: RoomLogOp.create, target: user.principal, role: RoomRoleName.owner } : null));
        await store.createRoom(room);
        const { revision } = await grantMembership(store, id, user.principal, RoomRoleName.owner, user.principal, room.createdAt);
        ctx.logger.info({ room: id, persist: room.policy.persist, quota, revision }, "room created");
        return { room, revision, kick: await kickAfterChange(user.principal, user.principal), ...(quota === undefined ? {} : { quota }) };
      },
    }),
    get: handles("membership", "rooms.get", {
      async handler(req, caller) {
        const user = activeUser(caller);
        // Non-members learn nothing, not even whether the room exists.
        if (user.role !== "admin" && (await store.memberRole(req.roomId, user.principal)) === null) {
          throw new UnibusError(ErrorCode.Forbidden, ErrorReason.Forbidden, "not a member of this room");
        }
        const room = await roomOrThrow(store, req.roomId);
        // One page of members: a stream page filtered to this room's keys.
        const page = await store.pageEntries<MemberRecord>("members", parseSeqCursor(req.cursor), req.limit ?? PageSize.membersDefault, `${req.roomId}.*`);
        // Each listed member confirmed on the fenced copy (one fence for the
        // page), so a removal acknowledged before this request is never
        // shown as a member; the cursor still follows the stream page.
        let members = await store.currentMembers(page.items);
        if (req.withHandles === true) {
          // Handles of this room's members only: the caller shares the room
          // with them, and the full users list stays admin-only.
          const users = await Promise.all(members.map((m) => store.getUser(m.principal)));
          members = members.map((m, i) => (users[i] == null ? m : { ...m, handle: users[i].value.handle }));
        }
        const next = page.next === undefined ? {} : { next_cursor: seqCursor(page.next) };
        if (!room.policy.persist) return { room, members, ...next };
        const state = await streams.describe(req.roomId).catch((err: unknown) => Promise.reject(new UnibusError(ErrorCode.Unavailable, ErrorReason.Unavailable, "room stream could not be read", { cause: err })));
        return { room, members, ...next, ...(state ?? {}) };
      },
    }),
    history: handles("membership", "rooms.history", {
      async handler(req, caller, ctx) {
        const user = activeUser(caller);
        // Current members only (admins too only if members): history is the
        // room's content, and a removed member must lose it with the grant.
        // A store error throws (503), never reads.
        if ((await store.memberRole(req.roomId, user.principal)) === null) {
          throw new UnibusError(ErrorCode.Forbidden, ErrorReason.Forbidden, "not a member of this room");
        }
        const room = await roomOrThrow(store, req.roomId);
        if (!room.policy.persist) throw new UnibusError(ErrorCode.NotFound, "room_not_persisted", "the room keeps no history");
        if (deps.history === undefined) throw new UnibusError(ErrorCode.Unavailable, ErrorReason.Unavailable, "room history is not available");
        const start = req.startSeq !== undefined ? { seq: req.startSeq } : req.startTime !== undefined ? { start_time: new Date(req.startTime).toISOString() } : { seq: 1 };
        const page = await deps.history
          .page(req.roomId, start, req.limit ?? RoomHistoryLimits.defaultFrames)
          .catch((err: unknown) => Promise.reject(new UnibusError(ErrorCode.Unavailable, ErrorReason.Unavailable, "room history could not be read", { cause: err })));
        if (page === null) throw new UnibusError(ErrorCode.NotFound, "room_not_persisted", "the room keeps no history");
        ctx.logger.debug({ room: req.roomId, frames: page.messages.length, nextSeq: page.nextSeq }, "history page read");
        return page;
      },
    }),
    log: handles("membership", "rooms.log", {
      async handler(req, caller) {
        const user = activeUser(caller);
        // Members and admins only, like rooms.get: the log names every member.
        if (user.role !== "admin" && (await store.memberRole(req.roomId, user.principal)) === null) {
          throw new UnibusError(ErrorCode.Forbidden, ErrorReason.Forbidden, "not a member of this room");
        }
        const { headSeq, entries } = await roomLog.page(req.roomId, req.fromSeq ?? 0, req.limit ?? PageSize.logDefault);
        if (headSeq < 0) throw new UnibusError(ErrorCode.NotFound, "log_missing", "the room has no membership log");
        return { roomId: req.roomId, headSeq, entries };
      },
    }),
    list: handles("membership", "rooms.list", {
      async handler(req, caller) {
        const user = activeUser(caller);
        if (req.all === true && user.role !== "admin") throw new UnibusError(ErrorCode.Forbidden, ErrorReason.Forbidden, "only admins may list all rooms");
        // The caller's rooms and roles from its grant record, read from the
        // fenced copy: one fence for the whole page, and a removal
        // acknowledged before this request never shows up in it (threat: a
        // removed member still listed the room, with its record, by a stale
        // leader's get). Filtering the leader-get grant through the fenced
        // `members` copy would also hide the removal, but costs a lookup per
        // room and still misses a room granted just before the request;
        // the grant record is also exactly what the caller's next login is
        // granted. A fence that fails is 503: never a stale or partial list.
        const own = await store.grantedRooms(user.principal);
        const limit = req.limit ?? PageSize.roomsDefault;
        const withRole = (room: RoomRecord): { room: RoomRecord; role?: RoomRole } => {
          const role = own[room.id];
          return role === undefined ? { room } : { room, role };
        };
        if (req.all === true) {
          // Every room: a page of the bucket's stream, never a scan of all keys.
          const page = await store.pageEntries<RoomRecord>("rooms", parseSeqCursor(req.cursor), limit);
          const rooms = page.items.map(withRole);
          return page.next === undefined ? { rooms } : { rooms, next_cursor: seqCursor(page.next) };
        }
        // The caller's own rooms come from one grant record, so they page by id.
        const after = parseRoomIdCursor(req.cursor);
        const ids = Object.keys(own).filter((id) => id > after).sort();
        const rooms: { room: RoomRecord; role?: RoomRole }[] = [];
        let last = "";
        for (const id of ids) {
          if (rooms.length >= limit) break;
          last = id;
          // A leader get is enough here: room records are only ever created,
          // so a stale answer is "absent" (the room is skipped), never
          // another room's data; which rooms to show was decided above.
          const room = await store.getRoom(id);
          if (room !== null) rooms.push(withRole(room.value));
        }
        return last !== "" && last !== ids[ids.length - 1] ? { rooms, next_cursor: roomIdCursor(last) } : { rooms };
      },
    }),
    invite: handles("membership", "rooms.invite", {
      async handler(req, caller, ctx) {
        const user = activeUser(caller);
        const principal = checkPrincipal(req.principal);
        const role = req.role ?? RoomRoleName.member;
        await requireManager(req.roomId, user);
        await roomOrThrow(store, req.roomId);
        const invitee = await store.getUser(principal);
        if (invitee === null) throw new UnibusError(ErrorCode.NotFound, "user_not_found", "invitee is not a user");
        if (invitee.value.status !== UserStatus.active) throw new UnibusError(ErrorCode.Conflict, "user_not_active", "invitee is revoked");
        const [existing, grants] = await Promise.all([store.getMember(req.roomId, principal), store.getRoomsByMember(principal)]);
        // Before the log entry: a refused invite leaves no trace.
        checkRoomLimit(grants?.value.rooms, req.roomId, roomLimit, "the invitee");
        // The log first: it is what clients seal room keys to. A log that
        // already says so (a crash after the append) only gets its records.
        const appended = await roomLog.append(req.roomId, ctx, (log) =>
          log.members.get(principal) === role ? null : { op: RoomLogOp.invite, target: principal, role, asAdmin: user.role === "admin" && log.members.get(user.principal) !== RoomRoleName.owner },
        );
        if (appended === null && existing?.value.role === role && grants?.value.rooms[req.roomId] === role) {
          throw new UnibusError(ErrorCode.Conflict, "already_member", "already a member with this role");
        }
        const { member, revision } = await grantMembership(store, req.roomId, principal, role, user.principal, iso(ctx));
        ctx.logger.info({ room: req.roomId, target: principal, role, revision }, "member added");
        deps.announce?.({ roomId: req.roomId, principal, change: "added", revision });
        return { member, revision, kick: await kickAfterChange(principal, user.principal) };
      },
    }),
    remove: handles("membership", "rooms.remove", {
      async handler(req, caller, ctx) {
        const user = activeUser(caller);
        const principal = checkPrincipal(req.principal);
        await requireManager(req.roomId, user);
        // The log first, so no client seals another key to the removed
        // member even if the records below fail (they are repaired on start).
        const appended = await roomLog.append(req.roomId, ctx, (log) =>
          log.members.has(principal) ? { op: RoomLogOp.remove, target: principal, asAdmin: user.role === "admin" && log.members.get(user.principal) !== RoomRoleName.owner } : null,
        );
        const revoked = await revokeMembership(store, req.roomId, principal);
        if (revoked === null && appended === null) throw new UnibusError(ErrorCode.NotFound, "not_member", "not a member of this room");
        const revision = revoked ?? 0;
        ctx.logger.info({ room: req.roomId, target: principal, revision }, "member removed");
        deps.announce?.({ roomId: req.roomId, principal, change: "removed", revision });
        const kick = await kickAfterChange(principal, user.principal);
        await deleteLeftoverConsumers(consumers, [req.roomId], ctx.logger);
        return { roomId: req.roomId, principal, revision, kick };
      },
    }),
    leave: handles("membership", "rooms.leave", {
      async handler(req, caller, ctx) {
        const user = activeUser(caller);
        const appended = await roomLog.append(req.roomId, ctx, (log) => (log.members.has(user.principal) ? { op: RoomLogOp.leave, target: user.principal } : null));
        const revoked = await revokeMembership(store, req.roomId, user.principal);
        if (revoked === null && appended === null) throw new UnibusError(ErrorCode.NotFound, "not_member", "not a member of this room");
        const revision = revoked ?? 0;
        ctx.logger.info({ room: req.roomId, revision }, "member left");
        deps.announce?.({ roomId: req.roomId, principal: user.principal, change: "left", revision });
        const kick = await kickAfterChange(user.principal, user.principal);
        await deleteLeftoverConsumers(consumers, [req.roomId], ctx.logger);
        return { roomId: req.roomId, principal: user.principal, revision, kick };
      },
    }),
  };
}
