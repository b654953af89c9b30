import { randomFillSync, timingSafeEqual } from "node:crypto";
import { EncodingError } from "./errors.js";

const HEX_RE = /^(?:[0-9a-fA-F]{2})*$/;
const BASE64URL_RE = /^[A-Za-z0-9_-]*$/;

const utf8Encoder = new TextEncoder();

/** UTF-8 bytes of a string. */
export function utf8(s: string): Uint8Array {
  return utf8Encoder.encode(s);
}

/** Copies a Buffer (or any view) into a fresh, exactly-sized Uint8Array, so callers never see pooled memory. */
export function ownBytes(b: Uint8Array): Uint8Array {
  return new Uint8Array(b);
}

/** Lowercase hex. */
export function toHex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");
}

/**
 * Strict hex decoder (either case, even length). Throws {@link EncodingError}
 * rather than silently truncating at the first bad character as `Buffer.from`
 * does, because a truncated key would fail far from the typo that caused it.
 */
export function fromHex(s: string): Uint8Array {
  if (typeof s !== "string" || !HEX_RE.test(s)) throw new EncodingError("invalid hex");
  return ownBytes(Buffer.from(s, "hex"));
}

/** base64url (RFC 4648 §5) without padding. */
export function toBase64Url(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("base64url");
}

/**
 * Strict base64url decoder: no padding, no `+`/`/`, no whitespace. Throws
 * {@link EncodingError}. Non-canonical trailing bits are accepted here; callers
 * that need one encoding per value (signatures) compare the re-encoding.
 */
export function fromBase64Url(s: string): Uint8Array {
  if (typeof s !== "string" || !BASE64URL_RE.test(s) || s.length % 4 === 1) {
    throw new EncodingError("invalid base64url");
  }
  return ownBytes(Buffer.from(s, "base64url"));
}

/** Cryptographically secure random bytes (node:crypto CSPRNG). */
export function randomBytes(n: number): Uint8Array {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError("randomBytes: n must be a non-negative integer");
  return randomFillSync(new Uint8Array(n));
}

/** How many bytes {@link randomNonce} draws from the CSPRNG at a time: 128 handshake nonces. */
export const NONCE_POOL_BYTES = 4096;

let noncePool = new Uint8Array(0);
let noncePoolOffset = 0;

/**
 * `n` CSPRNG bytes for a value sent in the clear (a handshake nonce). One
 * call into node:crypto costs about 3 µs whatever its size, as much as the
 * kit's JSON work on a handshake message, so the bytes come from a pool
 * filled {@link NONCE_POOL_BYTES} at a time. Each byte is handed out once
 * and wiped from the pool as it is. Keys never come from here (use
 * {@link randomBytes}): the pool holds the next values before anyone asks,
 * which is harmless for a public nonce but would put a future secret in
 * memory early.
 */
export function randomNonce(n: number): Uint8Array {
  if (!Number.isSafeInteger(n) || n < 0 || n > NONCE_POOL_BYTES) throw new RangeError(`randomNonce: n must be an integer from 0 to ${NONCE_POOL_BYTES}`);
  if (noncePoolOffset + n > noncePool.length) {
    noncePool = randomFillSync(new Uint8Array(NONCE_POOL_BYTES));
    noncePoolOffset = 0;
  }
  const out = noncePool.slice(noncePoolOffset, noncePoolOffset + n);
  noncePool.fill(0, noncePoolOffset, noncePoolOffset + n);
  noncePoolOffset += n;
  return out;
}

/**
 * Constant-time comparison of two byte strings. Lengths are compared first
 * (that leaks only the length, which is public for every value compared here)
 * because `timingSafeEqual` throws on unequal lengths.
 */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  return timingSafeEqual(a, b);
}

/** Concatenates byte strings. */
export function concatBytes(...parts: Uint8Array[]): Uint8Array {
  let len = 0;
  for (const p of parts) len += p.byteLength;
  const out = new Uint8Array(len);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.byteLength;
  }
  return out;
}
