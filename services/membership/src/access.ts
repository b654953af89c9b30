import { ErrorCode, ErrorReason, UnibusError } from "@unibus/contracts";
import { roleResolver as kitRoleResolver } from "@unibus/kit";
import type { Role } from "@unibus/kit";
import { isPrincipal } from "@unibus/crypto";
import type { MembershipStore } from "./store/membership-store.js";
import { unavailable } from "./store/membership-store.js";

/**
 * The kit's `resolveRole` for this service: the signer's role if it is an
 * ACTIVE user, else null (so admin-only endpoints deny), read from the kit's
 * fenced copy of `users` like every other service: another replica of this
 * service may have just acknowledged the revoke, and a leader get could be
 * answered by a stale leader. A store error throws, which the kit turns into
 * 503: never guess a role (fail closed).
 */
export function roleResolver(store: MembershipStore): (principal: string) => Promise<Role | null> {
  return kitRoleResolver(store.buckets.users);
}

// The caller as an active user (admin or member): the kit's membership view.
export { activeUser } from "@unibus/kit";

/** A principal field must also pass the nkey checksum, which a schema pattern cannot check. */
export function checkPrincipal(principal: string): string {
  if (!isPrincipal(principal)) throw new UnibusError(ErrorCode.BadRequest, ErrorReason.SchemaViolation, "principal is not a valid user nkey", { details: { path: "/principal" } });
  return principal;
}

/** Wraps a store read that must succeed for the request to be answered. */
export async function mustRead<T>(read: Promise<T>): Promise<T> {
  try {
    return await read;
  } catch (err) {
    throw err instanceof UnibusError ? err : unavailable(err);
  }
}
