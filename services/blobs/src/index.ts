/**
 * @unibus/blobs: content-addressed, client-encrypted blobs in the JetStream
 * object store, scoped to rooms (architecture §5, contracts/specs/blobs.md).
 */
export { BlobsErrorReason, blobsDefinition, createBlobsService } from "./service.js";
export type { BlobsDeps } from "./service.js";
export { BLOBS_BUCKET, BLOB_CHUNK_BYTES, DEFAULT_MAX_BLOB_BYTES, blobObjectName, wireChunkBytes } from "./limits.js";
export { MEMBERS_BUCKET } from "./store/room-access.js";
