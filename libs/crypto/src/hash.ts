import { blake3 as nobleBlake3 } from "@noble/hashes/blake3.js";
import { hash } from "node:crypto";
import { ownBytes, utf8 } from "./encoding.js";
import { asBuffer, nativeSodium } from "./native-sodium.js";

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

/** The libsodium path of {@link sha256}; tests switch it off. */
let sodium = nativeSodium;

/**
 * Longest input hashed through libsodium. Its SHA-256 is portable C (about
 * 260 MB/s here) where OpenSSL uses the CPU's SHA extensions (about
 * 1.5 GB/s): libsodium wins only while node:crypto's fixed cost per call
 * dominates (0.7 vs 2.2 µs at 32 bytes, even near 512, 4.4 vs 2.7 µs at
 * 1 KiB). Room frames hash every message body, so above this OpenSSL runs.
 */
const SODIUM_SHA256_MAX_BYTES = 256;

/**
 * SHA-256: libsodium for short inputs when sodium-native loads (a cold
 * rekey hashes about ten thousand of them: envelopes, log entries, share
 * leaves and the Merkle tree), else node:crypto's one-shot `hash`. The same
 * function, so the same bytes.
 */
export function sha256(data: Uint8Array): Uint8Array {
  if (sodium !== undefined && data instanceof Uint8Array && data.byteLength <= SODIUM_SHA256_MAX_BYTES) {
    const out = new Uint8Array(32);
    sodium.crypto_hash_sha256(asBuffer(out), asBuffer(data));
    return out;
  }
  // One-shot `hash`, not a `createHash` stream object: every room frame
  // hashes its body on both sides, and the stream object was garbage per call.
  return ownBytes(hash("sha256", data, "buffer"));
}

/** Whether {@link sha256} goes through libsodium; returns whether it now does. For tests (not exported from the package). */
export function useNativeSha256ForTests(on: boolean): boolean {
  sodium = on ? nativeSodium : undefined;
  return sodium !== undefined;
}
