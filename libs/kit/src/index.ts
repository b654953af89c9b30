/**
 * @unibus/kit: what every unibus service shares — micro registration, request
 * and reply validation, signed-envelope checks, replay protection, role checks,
 * error mapping, logging, stats, bucket set-up and the process main.
 */
export { Access, BinaryReply, DEFAULT_MAX_PAYLOAD_BYTES, binaryReply, ServiceDefinitionError, defineService, endpoint, endpointFor, endpointTable, handles } from "./definition.js";
export type {
  AnonymousCaller,
  Caller,
  EndpointImpl,
  EndpointRow,
  EndpointSpec,
  EndpointTable,
  EndpointTableOptions,
  HandlerContext,
  ReplyOf,
  RequestOf,
  Role,
  ServiceDefinition,
  SignedCaller,
  TypedEndpointSpec,
} from "./definition.js";
export { startService } from "./start-service.js";
export { EndpointStats } from "./endpoint-stats.js";
export { rawEndpoint } from "./raw-endpoint.js";
export type { RawEndpointSpec, RawHandlerContext, RawOutcome } from "./raw-endpoint.js";
export type { KitDeps, RunningService } from "./start-service.js";
export { BucketSetupError, ENVELOPE_WINDOW_MS, NonceBucket, openBuckets, openExistingBuckets } from "./buckets.js";
export type { BucketSpec, OpenBucketsOptions } from "./buckets.js";
export { ServiceJetStream, serviceJetStream } from "./jetstream.js";
export { LeaderContact, LeaderContactFence, LeaderOutOfContactError, leaderInContact } from "./leader-contact.js";
export type { StreamClusterView } from "./leader-contact.js";
export { retry } from "./retry.js";
export type { RetryOptions } from "./retry.js";
export { PARENT_LIFELINE_FD_ENV, PARENT_LIFELINE_PRELOAD } from "./parent-lifeline.js";
export { LogLevel, SHUTDOWN_GRACE_MS, ServiceConfigError, kitServiceEntry, loadServiceConfig, runServiceMain, runServiceProcess } from "./service-main.js";
export type { CreateService, KitConnectionOptions, ServiceConfig, ServiceEntry, ServiceMainSpec, ServiceProcessMember, StartedService } from "./service-main.js";
export { MetricsSubject, RequestOutcome, defineCounter, kvErrorCounter, metricsRegistry, recordRequest, requestCounter, requestDuration, serveMetrics, serviceInfo } from "./metrics.js";
export type { MetricsReply, MetricsResponder } from "./metrics.js";
export {
  AccountJetStreamLimitsEnv,
  DefaultAccountJetStreamLimits,
  accountJetStreamLimitsFromEnv,
  calloutServerConfig,
  calloutUserPermissions,
  healthzJetStreamSubjects,
  kvReadSubjects,
  kvWatchSubjects,
  servicePermissions,
  serviceStoragePermissions,
} from "./server-config.js";
export type { AccountJetStreamLimits, CalloutServerConfigOptions, ServerPermissions, ServiceUser } from "./server-config.js";
export { Unchanged, casUpdate, corruptRecord, isRevisionConflict, listKeys, readRecord, readVersioned, recordCheck, storeUnavailable } from "./kv.js";
export type { RecordReader, StoredRecordId, Versioned } from "./kv.js";
export { activeUser, fencedRecord, lazyUsersRoleResolver, membershipCopy, requireMember, roleResolver, roomMembers, roomRole } from "./membership-view.js";
export { FENCE_TIMEOUT_MS, FenceBatcher, FencedCopies, FencedCopy, FencedCopyBehindError } from "./fenced-copy.js";
export type { BegunFence, BegunRead, FenceBatcherOptions, FenceMark, FencedBucket, FencedCopiesOptions, FencedCopyOptions, FencedCopyStats, FencedRecord, FencedView } from "./fenced-copy.js";
export type { RoomRole, UserRole } from "./membership-view.js";
export { WATCH_CATCH_UP_MS, WatchedKv } from "./watched-kv.js";
export type { WatchedKvOptions } from "./watched-kv.js";
