/** Protocol constants and defaults of the blobs service (contracts/specs/blobs.md). */

import { StoredObjectStore } from "@unibus/contracts";

/**
 * Ciphertext bytes per sealed chunk of the blob format: 64 KiB of plaintext
 * plus the 16-byte XChaCha20-Poly1305 tag. Every possible ciphertext size is
 * a whole number of these plus a shorter last one.
 */
export const BLOB_CHUNK_BYTES = 64 * 1024 + 16;

/** Sealed chunks carried by one wire chunk at most (15 × 65,552 = 983,280 bytes). */
export const MAX_SEALED_CHUNKS_PER_WIRE_CHUNK = 15;

/** Room left under the server's max_payload for the frame's JSON part and the signed envelope's headers. */
const WIRE_CHUNK_HEADROOM = 32 * 1024;

/**
 * Ciphertext bytes per request on the wire (`chunkBytes` in the begin
 * replies): as many whole sealed chunks as fit under the server's
 * max_payload with headroom, at most 15, at least one. Larger requests mean
 * fewer signatures, verifications and round trips per byte; whole sealed
 * chunks let the client authenticate each reply without joining pieces.
 */
export function wireChunkBytes(maxPayload: number | undefined): number {
  const fit = Math.floor(((maxPayload ?? 1024 * 1024) - WIRE_CHUNK_HEADROOM) / BLOB_CHUNK_BYTES);
  return Math.max(1, Math.min(MAX_SEALED_CHUNKS_PER_WIRE_CHUNK, fit)) * BLOB_CHUNK_BYTES;
}

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
