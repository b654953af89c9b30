import { ErrorCode, UnibusError } from "@unibus/contracts";
import { handles } from "@unibus/kit";
import type { HandlerContext } from "@unibus/kit";
import { UsersLogOp } from "@unibus/sdk";
import type { VerifiedUsersLog } from "@unibus/sdk";
import { activeUser, checkPrincipal } from "../access.js";
import type { MembershipDeps } from "../deps.js";
import { deleteLeftoverConsumers } from "../store/room-consumers.js";
import { PageSize, parseSeqCursor, seqCursor } from "../paging.js";
import { UserStatus } from "../store/records.js";
import type { UserRecord } from "../store/records.js";
import type { UsersLogAppend } from "../store/users-log.js";

/** `users.*` endpoints: the allowlist. Admin only (the kit denies anyone whose resolved role is not admin), except `users.log`. */
export function userHandlers(deps: MembershipDeps) {
  const { store, kicker, consumers } = deps;
  const log = deps.usersLog;
  /** Appends to the users log once it has its root; a bus bootstrapped before the log existed keeps no log (clients then rely on their admin pin). */
  const logged = async (ctx: HandlerContext, decide: (l: VerifiedUsersLog) => UsersLogAppend | null): Promise<void> => {
    if (log === undefined || (await log.load()).length === 0) return;
    await log.append(ctx, decide);
  };
  /**
   * The rooms whose leftover consumers a revoke deletes, from the fenced
   * grant copy: a stale leader's get could omit a room granted just before
   * the revoke and leave its consumers to a revoked user. The revoke is
   * durable by now, so a failed fence falls back to the leader get and then
   * to nothing, logged: the next start sweeps every room stream anyway.
   */
  const revokedUsersRooms = async (principal: string, ctx: HandlerContext): Promise<string[]> => {
    try {
      return Object.keys(await store.grantedRooms(principal));
    } catch (err) {
      ctx.logger.error({ target: principal, err: err instanceof Error ? err.message : String(err) }, "revoked user's rooms not read from the fenced copy; using a leader get");
    }
    try {
      return Object.keys((await store.getRoomsByMember(principal))?.value.rooms ?? {});
    } catch (err) {
      ctx.logger.error({ target: principal, err: err instanceof Error ? err.message : String(err) }, "revoked user's rooms not read; leftover consumers wait for the start-up sweep");
      return [];
    }
  };
  return {
    add: handles("membership", "users.add", {
      async handler(req, caller, ctx) {
        const admin = activeUser(caller);
        const principal = checkPrincipal(req.principal);
        // The log first (the source of truth); its rules refuse an actor that is no admin per the log.
        await logged(ctx, (log) => {
          const known = log.user(principal);
          if (known === undefined) return { op: UsersLogOp.add, target: principal, role: req.role };
          if (!known.revoked && known.role === req.role) return null;
          throw new UnibusError(ErrorCode.Conflict, "user_exists", "principal is already on the allowlist");
        });
        const user: UserRecord = {
          principal,
          handle: req.handle,
          role: req.role,
          status: UserStatus.active,
          addedAt: new Date(ctx.now()).toISOString(),
          addedBy: admin.principal,
        };
        // kv.create: an existing principal (active or revoked) is never
        // overwritten, so a re-add cannot flip a role or un-revoke.
        const created = await store.createUser(user);
        if (created === null) throw new UnibusError(ErrorCode.Conflict, "user_exists", "principal is already on the allowlist");
        ctx.logger.info({ target: user.principal, role: user.role, revision: created.revision }, "user added");
        return { user, revision: created.revision };
      },
    }),
    list: handles("membership", "users.list", {
      async handler(req) {
        const page = await store.pageEntries<UserRecord>("users", parseSeqCursor(req.cursor), req.limit ?? PageSize.usersDefault);
        return page.next === undefined ? { users: page.items } : { users: page.items, next_cursor: seqCursor(page.next) };
      },
    }),
    get: handles("membership", "users.get", {
      async handler(req) {
        const user = await store.getUser(checkPrincipal(req.principal));
        if (user === null) throw new UnibusError(ErrorCode.NotFound, "user_not_found", "no such user");
        return { user: user.value };
      },
    }),
    log: handles("membership", "users.log", {
      // Any active user, not only admins: a member must replay it to
      // accept an admin's change in its rooms. It discloses the allowlist
      // (principals, handles, roles, who added whom) to members, which
      // users.list does not; a hash chain cannot skip entries, and that is
      // the price of not trusting this service about who is an admin.
      async handler(req, caller) {
        activeUser(caller);
        if (log === undefined) throw new UnibusError(ErrorCode.NotFound, "log_missing", "the bus keeps no users log");
        const verified = await log.load();
        if (verified.length === 0) throw new UnibusError(ErrorCode.NotFound, "log_missing", "the bus keeps no users log");
        const headSeq = verified.headSeq;
        const from = req.fromSeq ?? 0;
        const last = Math.min(headSeq, from + (req.limit ?? PageSize.logDefault) - 1);
        return { headSeq, entries: from > headSeq ? [] : await log.range(from, last) };
      },
    }),
    revoke: handles("membership", "users.revoke", {
      async handler(req, caller, ctx) {
        const admin = activeUser(caller);
        const principal = checkPrincipal(req.principal);
        // An admin revoking itself could leave the bus with no admin at all.
        if (principal === admin.principal) throw new UnibusError(ErrorCode.Conflict, "cannot_revoke_self", "an admin cannot revoke itself");
        const record = await store.getUser(principal);
        if (record === null) throw new UnibusError(ErrorCode.NotFound, "user_not_found", "no such user");
        if (record.value.status === UserStatus.revoked && log === undefined) throw new UnibusError(ErrorCode.Conflict, "already_revoked", "user is already revoked");
        await logged(ctx, (l) => (l.user(principal)?.revoked === true ? null : { op: UsersLogOp.revoke, target: principal }));
        const revoked = await store.updateUser(principal, (current) => {
          if (current === null) throw new UnibusError(ErrorCode.NotFound, "user_not_found", "no such user");
          if (current.status === UserStatus.revoked) throw new UnibusError(ErrorCode.Conflict, "already_revoked", "user is already revoked");
          return { ...current, status: UserStatus.revoked, revokedAt: new Date(ctx.now()).toISOString(), revokedBy: admin.principal };
        });
        if (revoked === null) throw new UnibusError(ErrorCode.NotFound, "user_not_found", "no such user");
        ctx.logger.info({ target: principal, revision: revoked.revision }, "user revoked");
        // The flip is durable; the kick applies it to live connections now.
        const kick = await kicker.kick(principal);
        await deleteLeftoverConsumers(consumers, await revokedUsersRooms(principal, ctx), ctx.logger);
        return { user: revoked.value, revision: revoked.revision, kick };
      },
    }),
  };
}
