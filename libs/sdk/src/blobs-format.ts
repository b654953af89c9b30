import { createHash } from "node:crypto";
import { AeadSize, DecryptError, aeadDecrypt, aeadEncrypt, fromBase64Url, randomBytes, toBase64Url } from "@unibus/crypto";

/**
 * Blob encryption format v1 (contracts/specs/blobs.md): the plaintext is cut
 * into 64 KiB chunks (at least one; the last may be shorter or empty), each
 * sealed with XChaCha20-Poly1305 under a random per-blob key. Chunk i's nonce
 * and associated data both bind i and a final flag, so chunks cannot be
 * reordered, dropped, duplicated, or the blob truncated at a chunk boundary
 * (the STREAM construction). Nonces are derived, not random: the key is used
 * for this one blob only, so (key, nonce) never repeats. The blob id is the
 * lowercase hex SHA-256 of the concatenated ciphertext chunks.
 */
export const BlobFormat = {
  /** Plaintext bytes per chunk. */
  plainChunkBytes: 64 * 1024,
  /** Ciphertext bytes per chunk (plaintext + tag); the service's `chunkBytes`. */
  cipherChunkBytes: 64 * 1024 + AeadSize.tag,
  /** Per-blob key bytes. */
  keyBytes: AeadSize.key,
} as const;

const AD_LABEL = new TextEncoder().encode("unibus.blob.v1");

/** A blob failed its integrity check: wrong key, tampered or truncated ciphertext, or a hash that does not match its id. */
export class BlobIntegrityError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "BlobIntegrityError";
  }
}

function chunkNonce(index: number, final: boolean): Uint8Array {
  const nonce = new Uint8Array(AeadSize.nonce);
  nonce[15] = final ? 1 : 0;
  new DataView(nonce.buffer).setBigUint64(16, BigInt(index), false);
  return nonce;
}

function chunkAd(index: number, final: boolean): Uint8Array {
  const ad = new Uint8Array(AD_LABEL.byteLength + 9);
  ad.set(AD_LABEL, 0);
  const view = new DataView(ad.buffer);
  view.setBigUint64(AD_LABEL.byteLength, BigInt(index), false);
  ad[AD_LABEL.byteLength + 8] = final ? 1 : 0;
  return ad;
}

/** A fresh random per-blob key. */
export function generateBlobKey(): Uint8Array {
  return randomBytes(BlobFormat.keyBytes);
}

/** The key as it travels inside a room message (base64url, no padding). */
export function encodeBlobKey(key: Uint8Array): string {
  return toBase64Url(key);
}

/** Parses a key from {@link encodeBlobKey}; throws a TypeError on anything but 32 bytes. */
export function decodeBlobKey(key: string | Uint8Array): Uint8Array {
  let bytes: Uint8Array;
  try {
    bytes = typeof key === "string" ? fromBase64Url(key) : key;
  } catch (err) {
    throw new TypeError("blob key must be 32 bytes, base64url", { cause: err });
  }
  if (bytes.byteLength !== BlobFormat.keyBytes) throw new TypeError("blob key must be 32 bytes, base64url");
  return bytes;
}

/** Ciphertext size of a plaintext of `plainBytes` bytes. */
export function ciphertextSize(plainBytes: number): number {
  const chunks = Math.max(1, Math.ceil(plainBytes / BlobFormat.plainChunkBytes));
  return plainBytes + chunks * AeadSize.tag;
}

/** Seals one chunk. */
export function sealChunk(key: Uint8Array, index: number, final: boolean, plain: Uint8Array): Uint8Array {
  return aeadEncrypt(key, chunkNonce(index, final), plain, chunkAd(index, final));
}

/** Opens one chunk; a {@link BlobIntegrityError} if it was altered, moved, or its final flag is wrong. */
export function openChunk(key: Uint8Array, index: number, final: boolean, sealed: Uint8Array): Uint8Array {
  try {
    return aeadDecrypt(key, chunkNonce(index, final), sealed, chunkAd(index, final));
  } catch (err) {
    if (err instanceof DecryptError) throw new BlobIntegrityError(`blob chunk ${index} failed authentication`, { cause: err });
    throw err;
  }
}

/**
 * Encrypts a plaintext stream into ciphertext chunks, holding one chunk back
 * so the last one can be marked final. Input pieces of any size are re-cut
 * into 64 KiB chunks.
 */
export async function* encryptBlobChunks(key: Uint8Array, plain: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  let index = 0;
  let buf = new Uint8Array(BlobFormat.plainChunkBytes);
  let fill = 0;
  let held: Uint8Array | undefined;
  for await (const piece of plain) {
    let at = 0;
    while (at < piece.byteLength) {
      const n = Math.min(piece.byteLength - at, buf.byteLength - fill);
      buf.set(piece.subarray(at, at + n), fill);
      fill += n;
      at += n;
      if (fill === buf.byteLength) {
        if (held !== undefined) yield sealChunk(key, index++, false, held);
        held = buf;
        buf = new Uint8Array(BlobFormat.plainChunkBytes);
        fill = 0;
      }
    }
  }
  if (held !== undefined && fill === 0) {
    yield sealChunk(key, index, true, held);
    return;
  }
  if (held !== undefined) yield sealChunk(key, index++, false, held);
  yield sealChunk(key, index, true, buf.subarray(0, fill));
}

/**
 * Decrypts ciphertext arriving in pieces of any size, given the total
 * ciphertext size, and checks the SHA-256 of the whole against `blobId` at
 * the end. Plaintext is yielded only for authenticated chunks; the hash check
 * completes when the generator returns, so treat output as unverified until
 * then (the CLI writes to a temp file and renames on success).
 */
export async function* decryptBlobChunks(key: Uint8Array, blobId: string, size: number, sealed: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  const hash = createHash("sha256");
  let buf: Uint8Array = new Uint8Array(0);
  let consumed = 0;
  let index = 0;
  for await (const piece of sealed) {
    hash.update(piece);
    // Pieces usually are whole chunks: join only when a chunk spans two.
    if (buf.byteLength === 0) buf = piece;
    else {
      const joined = new Uint8Array(buf.byteLength + piece.byteLength);
      joined.set(buf, 0);
      joined.set(piece, buf.byteLength);
      buf = joined;
    }
    while (buf.byteLength >= BlobFormat.cipherChunkBytes && consumed + BlobFormat.cipherChunkBytes <= size) {
      const chunk = buf.subarray(0, BlobFormat.cipherChunkBytes);
      consumed += chunk.byteLength;
      yield openChunk(key, index++, consumed === size, chunk);
      buf = buf.subarray(BlobFormat.cipherChunkBytes);
    }
  }
  if (buf.byteLength > 0) {
    consumed += buf.byteLength;
    yield openChunk(key, index++, true, buf);
  }
  if (consumed !== size || index === 0) throw new BlobIntegrityError(`blob is ${consumed} bytes, expected ${size}`);
  if (hash.digest("hex") !== blobId) throw new BlobIntegrityError("blob ciphertext does not hash to its id");
}
