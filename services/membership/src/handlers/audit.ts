import { ErrorCode, ErrorReason, UnibusError } from "@unibus/contracts";
import { handles } from "@unibus/kit";
import { checkPrincipal } from "../access.js";
import { AUDIT_DEFAULT_LIMIT } from "../store/audit.js";
import type { DenialTrail } from "../store/audit.js";

/** `audit.denials`: admins read recorded login refusals. */
export function auditHandlers(trail: DenialTrail | undefined) {
  return {
    denials: handles("membership", "audit.denials", {
      async handler(req) {
        if (trail === undefined) throw new UnibusError(ErrorCode.Unavailable, ErrorReason.Unavailable, "no audit trail configured");
        const principal = req.principal === undefined ? undefined : checkPrincipal(req.principal);
        try {
          return await trail.read(new Date(req.since), principal, req.limit ?? AUDIT_DEFAULT_LIMIT);
        } catch (err) {
          if (err instanceof UnibusError) throw err;
          throw new UnibusError(ErrorCode.Unavailable, ErrorReason.Unavailable, "the audit stream could not be read", { cause: err });
        }
      },
    }),
  };
}
