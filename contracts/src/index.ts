/**
 * @unibus/contracts: the JSON Schemas of every request, reply and event (as
 * data and as generated types), subject names, and the error wire format.
 */
export { schemas } from "./generated/schemas.js";
export type * from "./generated/types.js";
export { SchemaRegistry, createSchemaAjv } from "./validation.js";
export type { JsonSchema, SchemaValidationResult, ValidateFn } from "./validation.js";
export { BINARY_FRAME_PREFIX_BYTES, decodeBinaryFrame, encodeBinaryFrame } from "./binary-frame.js";
export type { BinaryFrame } from "./binary-frame.js";
export {
  AuditDenialStream,
  ReadOnlySubjects,
  ReplicaHandshakeSubjects,
  RoomSubjectPrefix,
  ServiceName,
  SubjectPrefix,
  Subjects,
  auditDenialSubject,
  roomKeysNoticeSubject,
  roomMembershipSubject,
} from "./subjects.js";
export { EndpointAccess, EndpointCatalogue, camelEndpointName, endpointSchemaIds, endpointSubject, microEndpointName, serviceSubjects } from "./endpoints.js";
export type { CamelEndpointName, CatalogueEntry, CatalogueService, EndpointName, ServiceSubjects } from "./endpoints.js";
export { CalloutSubject, DirectoryBucket, UnibusSubject } from "./bus-subjects.js";
export {
  BusStreams,
  CalloutLease,
  RoomStreamPrefix,
  ServiceStorage,
  StoredBucket,
  StoredConsumer,
  StoredObjectStore,
  kvStreamName,
  leaseBarrierSubject,
  memberKey,
  objectStoreStreamName,
  roomStreamName,
} from "./stored.js";
export type { DurableConsumer, RequiredStream, ServiceStorageDeclaration } from "./stored.js";
export { CalloutEnv, HealthzEnv, MembershipEnv } from "./service-env.js";
export {
  ErrorCode,
  ErrorReason,
  ServiceErrorCodeHeader,
  ServiceErrorHeader,
  UnibusError,
  decodeReply,
  encodeErrorReply,
  isErrorCode,
  replyError,
} from "./errors.js";
export type { EncodedErrorReply, ErrorDetails, ReplyMessage, UnibusErrorOptions } from "./errors.js";
