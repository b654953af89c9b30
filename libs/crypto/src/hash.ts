import { blake3 as nobleBlake3 } from "@noble/hashes/blake3.js";
import { hash } from "node:crypto";
import { ownBytes, utf8 } from "./encoding.js";

/** BLAKE3 hash (default 32 bytes; `dkLen` selects the XOF output length). */
export function blake3(data: Uint8Array, opts?: { dkLen?: number }): Uint8Array {
  return nobleBlake3(data, opts?.dkLen === undefined ? undefined : { dkLen: opts.dkLen });
}

/**
 * BLAKE3 keyed hash (32-byte MAC). The key must be exactly 32 bytes: BLAKE3's
 * keyed mode has no key schedule, so a short key is a caller bug, not
 * something to pad.
 */
export function blake3Mac(key: Uint8Array, data: Uint8Array): Uint8Array {
  if (key.byteLength !== 32) throw new RangeError("blake3Mac: key must be exactly 32 bytes");
  return nobleBlake3(data, { key });
}

/**
 * BLAKE3 `derive_key` mode. `context` must be a hard-coded, globally unique,
 * application-specific string (e.g. `"unibus 2026-11-23 sealed-box v1"`) so that
 * keys derived for one purpose can never collide with another's.
 */
export function blake3DeriveKey(context: string, material: Uint8Array, dkLen = 32): Uint8Array {
  return nobleBlake3(material, { context: utf8(context), dkLen });
}

/**
 * SHA-256 (node:crypto). One-shot `hash`, not a `createHash` stream object:
 * every room frame hashes its body on both sides, and the stream object was
 * garbage of its own per call (and about 1.5 µs more here).
 */
export function sha256(data: Uint8Array): Uint8Array {
  return ownBytes(hash("sha256", data, "buffer"));
}
