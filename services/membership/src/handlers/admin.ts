import { ErrorCode, ErrorReason, UnibusError } from "@unibus/contracts";
import { handles } from "@unibus/kit";
import { checkPrincipal } from "../access.js";
import type { MembershipDeps } from "../deps.js";
import { UserRoleName, UserStatus } from "../store/records.js";
import type { UserRecord } from "../store/records.js";

/**
 * `admin.bootstrap`: seeds admin #0 (architecture §3). Only the privileged internal
 * bootstrap identity may call it — its principal comes from config and it
 * connects as a config-level user allowed only this subject and its inbox.
 * Idempotent: once an active admin exists, it is returned and nothing changes,
 * so the bootstrap identity can never mint a second admin.
 */
export function adminHandlers(deps: MembershipDeps) {
  const { store } = deps;
  return {
    bootstrap: handles("membership", "admin.bootstrap", {
      async handler(req, caller, ctx) {
        if (caller.anonymous || deps.bootstrapPrincipal === undefined || caller.principal !== deps.bootstrapPrincipal) {
          throw new UnibusError(ErrorCode.Forbidden, ErrorReason.Forbidden, "only the bootstrap identity may bootstrap");
        }
        const existing = (await store.listUsers()).find((u) => u.role === UserRoleName.admin && u.status === UserStatus.active);
        if (existing !== undefined) return { user: existing, created: false };
        const principal = checkPrincipal(req.principal);
        // Entry 0 of the users log first, the root every client pins: this
        // very signed request. A retry after a crash before the record finds
        // it logged already; a second bootstrap of someone else is refused.
        await deps.usersLog?.append(ctx, (log) => {
          if (log.length === 0) return { op: "bootstrap", target: principal, role: UserRoleName.admin };
          if (log.isAdmin(principal)) return null;
          throw new UnibusError(ErrorCode.Conflict, "already_bootstrapped", "the users log already has its root");
        });
        const user: UserRecord = {
          principal,
          handle: req.handle,
          role: UserRoleName.admin,
          status: UserStatus.active,
          addedAt: new Date(ctx.now()).toISOString(),
          addedBy: caller.principal,
        };
        const created = await store.createUser(user);
        if (created === null) {
          // The principal exists but is not an active admin (a member, or
          // revoked): bootstrap never promotes or un-revokes.
          throw new UnibusError(ErrorCode.Conflict, "user_exists", "principal exists and is not an active admin");
        }
        ctx.logger.info({ target: user.principal, revision: created.revision }, "admin bootstrapped");
        return { user, created: true };
      },
    }),
  };
}
