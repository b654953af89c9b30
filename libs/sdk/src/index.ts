/**
 * @unibus/sdk: connect to the bus as an identity, send signed control-plane
 * requests, and manage users and rooms through typed helpers.
 */
export { connect, tlsOption } from "./client.js";
export { envelopeHeaders, signedRequest } from "./signed-request.js";
export type { ConnectOptions, RequestOptions, UnibusClient } from "./client.js";
export { ReconnectBackoff, ReconnectBackoffDefaults } from "./reconnect-backoff.js";
export type { ReconnectBackoffOptions } from "./reconnect-backoff.js";
export { AdminApi, RoomsApi, UsersApi } from "./membership.js";
export type { PageOptions, RoomRole, SendRequest, UserRole } from "./membership.js";
export { UnibusError, ErrorCode, ErrorReason } from "@unibus/contracts";
export { openRoom, RoomLimits, RoomPublishReason, RoomSubject } from "./rooms/room.js";
export type { HistoryOptions, Room, RoomControl, RoomMessage, RoomMessageCallback, RoomOpener, RoomReject, RoomSubscription } from "./rooms/room.js";
export { FreshnessLimits } from "./rooms/replay-guard.js";
export { RoomAccessTimeoutError, waitForRoomAccess } from "./rooms/access.js";
export type { RoomAccessOptions } from "./rooms/access.js";
export { FrameFormat, RejectReason } from "./rooms/frame.js";
export { NoRoomKeyError, ROOM_KEY_BYTES, StaticRoomKeys } from "./rooms/keyring.js";
export type { RoomEpochKey, RoomKeySource } from "./rooms/keyring.js";
export { KeysApi } from "./keys/api.js";
export { RoomLogError, RoomLogErrorReason, RoomLogFormat, RoomLogOp, RoomLogOpSubject, RoomLogs, VerifiedRoomLog, ZERO_HASH, deriveRoomId, roomLogEntry, roomLogEntryHash, verifyRoomLog } from "./rooms/membership-log.js";
export { UsersLogError, UsersLogErrorReason, UsersLogFormat, UsersLogOp, UsersLogOpSubject, UsersLogSync, VerifiedUsersLog, usersLogEntry, usersLogEntryHash, verifyUsersLog } from "./rooms/users-log.js";
export type { PinnedUsersLog, UsersLogEntry, UsersLogEntryInput, UsersLogFetch, UsersLogPinStore, UsersLogRole, UsersLogSyncOptions, UsersLogVerifyOptions } from "./rooms/users-log.js";
export type { PinnedRoomLogHead, RoomLogEntry, RoomLogEntryInput, RoomLogFetch, RoomLogHeadStore, RoomLogRole, RoomLogsOptions, RoomLogVerifyOptions } from "./rooms/membership-log.js";
export { KeysServiceKeyring, UntrustedShareError, UntrustedShareReason } from "./keys/keyring.js";
export type { KeyringClient, KeysServiceKeyringOptions } from "./keys/keyring.js";
export { EPOCH_ROLLBACK, FileEpochStore } from "./keys/epoch-floor.js";
export { rotateAgreementKey, withNewAgreementKey } from "./keys/rotate.js";
export type { RotateAgreementKeyOptions } from "./keys/rotate.js";
export { prepareRoomKeys, readyRoom, RoomReadyStage, RoomReadyStageText } from "./keys/ready.js";
export type { PrepareRoomKeysOptions, ReadyRoom, ReadyRoomOptions, RoomKeysPrepared } from "./keys/ready.js";
export type { EpochStore } from "./keys/epoch-floor.js";
export { RoomKeyNotice, announceEpoch, autoRekey, prepareNextEpoch, rekeyRoom, waitForRoomKey } from "./keys/rekey.js";
export type { AutoRekey, AutoRekeyClient, AutoRekeyOptions, RekeyClient, RekeyResult, RoomKeyWaitClient, WaitForRoomKeyOptions } from "./keys/rekey.js";
export { ShareSetFormat, agreementKeyStatementBytes, epochStatementBytes, merkleProof, merkleRoot, principalsHash, rootFromProof, shareLeaf, shareLeafOfDigest } from "./keys/share-set.js";
export type { EpochStatement } from "./keys/share-set.js";
export { getBlob, putBlob, streamBlob } from "./blobs.js";
export type { BlobInput, BlobProgress, GetBlobOptions, PutBlobOptions, PutBlobResult } from "./blobs.js";
export { BlobFormat, BlobIntegrityError, ciphertextSize, decodeBlobKey, encodeBlobKey } from "./blobs-format.js";
export { ReplicaDialer, replicaHandshake, ReplicaHandshakeRejectedError } from "./replica-handshake.js";
export type { ReplicaDialerOptions, ReplicaHandshakeOptions, ReplicaHandshakeResult, ReplicaSession } from "./replica-handshake.js";
export {
  ClusterHistoryError,
  ClusterHistoryErrorReason,
  effectText,
  HISTORY_ENTRY_CONTEXT,
  HistoryEntrySubject,
  historyEntry,
  historyEntryHash,
  HistoryEntryType,
  NodeState,
  VerifiedClusterHistory,
  verifyClusterHistory,
} from "./replica-history.js";
export type { ClusterHistoryEntry, ClusterLatest, GatewayEffect, GenesisEffect, HistoryEntryInput, HistoryPin, NodeEffect, NodeRecord } from "./replica-history.js";
export { commitNode, joinNode, registerNode } from "./replica-node.js";
export type { CommitResult, NodeStepOptions } from "./replica-node.js";
export {
  initNodeHome,
  loadNodeIdentity,
  NODE_HOME_ENV,
  NodeHomeError,
  NodeHomeFile,
  readNodeClusterInfo,
  readNodeUnlockKey,
  readWrappedCuk,
  writeNodeClusterInfo,
  writeWrappedCuk,
} from "./replica-node-home.js";
export type { NodeClusterInfo } from "./replica-node-home.js";
export { discoverGateways, fetchClusterHistory, initCluster, recoverCluster } from "./replica-admin.js";
export type { GatewayReplica, InitClusterResult } from "./replica-admin.js";
