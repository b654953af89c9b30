// Browser build of ./hash.ts: SHA-256 from @noble/hashes instead of
// node:crypto (byte-identical; the equivalence test checks it).
import { blake3 as nobleBlake3 } from "@noble/hashes/blake3.js";
import { sha256 as nobleSha256 } from "@noble/hashes/sha2.js";
import { utf8 } from "./encoding.js";

/** BLAKE3 hash (default 32 bytes; `dkLen` selects the XOF output length). */
export function blake3(data: Uint8Array, opts?: { dkLen?: number }): Uint8Array {
  return nobleBlake3(data, opts?.dkLen === undefined ? undefined : { dkLen: opts.dkLen });
}

/** BLAKE3 keyed hash (32-byte MAC); the key must be exactly 32 bytes. */
export function blake3Mac(key: Uint8Array, data: Uint8Array): Uint8Array {
  if (key.byteLength !== 32) throw new RangeError("blake3Mac: key must be exactly 32 bytes");
  return nobleBlake3(data, { key });
}

/** BLAKE3 `derive_key` mode with a hard-coded, application-specific context. */
export function blake3DeriveKey(context: string, material: Uint8Array, dkLen = 32): Uint8Array {
  return nobleBlake3(material, { context: utf8(context), dkLen });
}

/** SHA-256. */
export function sha256(data: Uint8Array): Uint8Array {
  return nobleSha256(data);
}
