// Public surface of @unibus/auth-callout: every export is named here.
export { authorize, DenyCode, DenyReason, PermissionCache } from "./authorize.js";
export type { AuthorizeOptions, AuthorizeResult } from "./authorize.js";
export { encodeAuthorizationResponse, encodeUserJwt, handleCalloutRequest } from "./callout.js";
export type { AuthorizationResponseBody, CalloutContext, CalloutOutcome, UserClaimsBody } from "./callout.js";
export { CalloutSubject, DirectoryBucket, UnibusSubject } from "@unibus/contracts";
export { StreamDenialAudit } from "./denial-audit.js";
export type { DenialAudit, StreamDenialAuditOptions } from "./denial-audit.js";
export { DenialCache, DenialCacheDefaults } from "./denial-cache.js";
export type { CachedDenial, DenialCacheOptions } from "./denial-cache.js";
export { KvPrincipalDirectory, invalidateOnUserChanges } from "./directory.js";
export type { DirectoryEntry, PrincipalDirectory, UserChangeWatch } from "./directory.js";
export { CalloutMetric, calloutMetrics } from "./metrics.js";
export { CalloutConfigError, DirectoryError, EncryptionMismatchError, InvalidRequestError } from "./errors.js";
export { decodeAuthorizationRequest, decodeJwt, encodeJwt } from "./jwt.js";
export type { AuthorizationRequest, DecodedJwt, JwtClaims } from "./jwt.js";
export { inboxOf, isSafeRoomId, permissionsFor, Role, UserStatus } from "./permissions.js";
export type { Grantee, Permissions, RoomRole, RoomsRecord, UserRecord } from "./permissions.js";
export {
  AccountJetStreamLimitsEnv,
  DefaultAccountJetStreamLimits,
  accountJetStreamLimitsFromEnv,
  calloutServerConfig,
  calloutUserPermissions,
  kvReadSubjects,
  kvWatchSubjects,
  servicePermissions,
} from "./server-config.js";
export type { AccountJetStreamLimits, CalloutServerConfigOptions, ServerPermissions, ServiceUser } from "./server-config.js";
export { AUTH_CALLOUT_SERVICE_NAME, createAuthCalloutService, denialRecord } from "./service.js";
export type { AuthCalloutServiceDeps, CalloutLogger } from "./service.js";
export { CalloutXkey } from "./xkey.js";
