// Browser build of ./encoding.ts (same exports, same results): no Buffer or
// node:crypto there, so bytes go through plain loops and Web Crypto's CSPRNG.
// Selected by the panel's bundler in place of encoding.ts; the equivalence
// test runs both on the same inputs.
import { EncodingError } from "./errors.js";

const HEX_RE = /^(?:[0-9a-fA-F]{2})*$/;
const BASE64URL_RE = /^[A-Za-z0-9_-]*$/;
const B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

const utf8Encoder = new TextEncoder();

/** UTF-8 bytes of a string. */
export function utf8(s: string): Uint8Array {
  return utf8Encoder.encode(s);
}

/** A fresh, exactly-sized copy of any view. */
export function ownBytes(b: Uint8Array): Uint8Array {
  return new Uint8Array(b);
}

/** Lowercase hex. */
export function toHex(b: Uint8Array): string {
  let out = "";
  for (const x of b) out += x.toString(16).padStart(2, "0");
  return out;
}

/** Strict hex decoder (either case, even length); throws {@link EncodingError}. */
export function fromHex(s: string): Uint8Array {
  if (typeof s !== "string" || !HEX_RE.test(s)) throw new EncodingError("invalid hex");
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** base64url (RFC 4648 §5) without padding. */
export function toBase64Url(b: Uint8Array): string {
  let out = "";
  for (let i = 0; i < b.length; i += 3) {
    const n = ((b[i] ?? 0) << 16) | ((b[i + 1] ?? 0) << 8) | (b[i + 2] ?? 0);
    const chars = Math.min(4, Math.ceil(((b.length - i) * 8) / 6));
    for (let j = 0; j < chars; j++) out += B64URL[(n >> (18 - 6 * j)) & 63];
  }
  return out;
}

/** Strict base64url decoder: no padding, no `+`/`/`, no whitespace; throws {@link EncodingError}. */
export function fromBase64Url(s: string): Uint8Array {
  if (typeof s !== "string" || !BASE64URL_RE.test(s) || s.length % 4 === 1) {
    throw new EncodingError("invalid base64url");
  }
  const out = new Uint8Array(Math.floor((s.length * 6) / 8));
  let acc = 0;
  let bits = 0;
  let o = 0;
  for (const c of s) {
    acc = (acc << 6) | B64URL.indexOf(c);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 0xff;
    }
  }
  return out;
}

/** Cryptographically secure random bytes (Web Crypto). */
export function randomBytes(n: number): Uint8Array {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError("randomBytes: n must be a non-negative integer");
  const out = new Uint8Array(n);
  // getRandomValues fills at most 65,536 bytes per call.
  for (let off = 0; off < n; off += 65_536) globalThis.crypto.getRandomValues(out.subarray(off, Math.min(n, off + 65_536)));
  return out;
}

/** The largest {@link randomNonce}, as in the Node version. */
export const NONCE_POOL_BYTES = 4096;

/** Random bytes for a value sent in the clear; the Node version pools them, Web Crypto's call is cheap enough here. */
export function randomNonce(n: number): Uint8Array {
  if (!Number.isSafeInteger(n) || n < 0 || n > NONCE_POOL_BYTES) throw new RangeError(`randomNonce: n must be an integer from 0 to ${NONCE_POOL_BYTES}`);
  return randomBytes(n);
}

/** Constant-time comparison of two byte strings (lengths are public). */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  let diff = 0;
  for (let i = 0; i < a.byteLength; i++) diff |= (a[i] ?? 0) ^ (b[i] ?? 0);
  return diff === 0;
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
