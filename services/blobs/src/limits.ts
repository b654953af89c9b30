/** Protocol constants and defaults of the blobs service (contracts/specs/blobs.md). */

import { StoredObjectStore } from "@unibus/contracts";

/**
 * Ciphertext bytes per chunk: 64 KiB of plaintext plus the 16-byte
 * XChaCha20-Poly1305 tag. Uploads may send any chunk up to this size;
 * downloads return exactly this size except for the final chunk.
 */
export const BLOB_CHUNK_BYTES = 64 * 1024 + 16;

/** Default blob size limit (ciphertext bytes): 64 MiB. */
export const DEFAULT_MAX_BLOB_BYTES = 64 * 1024 * 1024;

/** An upload or download with no request for this long is abandoned; its stream is aborted. */
export const DEFAULT_SESSION_IDLE_MS = 30_000;

/** Sessions one replica holds at once (each keeps a stream open); more get 429. */
export const DEFAULT_MAX_SESSIONS = 128;

/** Object store bucket holding committed blobs. */
export const BLOBS_BUCKET = StoredObjectStore.blobs;

/** Object name of a blob: scoped to its room, so a member of one room cannot read another room's blob by id. */
export function blobObjectName(roomId: string, blobId: string): string {
  return `${roomId}/${blobId}`;
}
