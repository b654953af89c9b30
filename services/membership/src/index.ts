/**
 * @unibus/membership: the users allowlist, rooms and room members (architecture §3–5),
 * and the kicks that apply membership changes to live connections.
 */
export { createMembershipService, membershipService } from "./service.js";
export type { MembershipServiceOptions, RunningMembershipService } from "./service.js";
export type { MembershipChangeEvent, MembershipDeps } from "./deps.js";
export { SystemConnectionKicker, SystemSubject, noKicks } from "./kick.js";
export type { ConnectionKicker, KickOutcome, SystemConnectionKickerOptions } from "./kick.js";
export { MembershipBucket, RoomRoleName, UserRoleName, UserStatus, memberKey, roomStreamName, roomSubject } from "./store/records.js";
export type { MemberRecord, RoomRecord, RoomRole, RoomsByMemberRecord, UserRecord, UserRole } from "./store/records.js";
export { DefaultRoomQuotaConfig, QuotaReason, RoomQuotaEnv, loadRoomQuotaConfig, resolveRoomQuota } from "./quota.js";
export type { RoomQuota, RoomQuotaConfig, RoomQuotaRequest } from "./quota.js";
export { JetStreamRoomStreams } from "./store/room-streams.js";
export { RoomLimit } from "./handlers/rooms.js";
export type { RoomStreamOptions, RoomStreamState, RoomStreams, RoomUsage } from "./store/room-streams.js";
export { MembershipStore, Unchanged, casUpdate, isRevisionConflict } from "./store/membership-store.js";
export type { MembershipBuckets, Versioned } from "./store/membership-store.js";
export { LeaseBarrier, leaseBarrierMetrics } from "./store/lease-barrier.js";
export type { DirectoryWrite, LeaseBarrierOptions, LeaseBarrierStats } from "./store/lease-barrier.js";
