import { createRequire } from "node:module";

/** The few libsodium calls the callout uses, as sodium-native exposes them. */
export interface Sodium {
  crypto_secretbox_easy(c: Buffer, m: Buffer, n: Buffer, k: Buffer): void;
  crypto_secretbox_open_easy(m: Buffer, c: Buffer, n: Buffer, k: Buffer): boolean;
  crypto_sign_seed_keypair(pk: Buffer, sk: Buffer, seed: Buffer): void;
  crypto_sign_detached(sig: Buffer, m: Buffer, sk: Buffer): void;
  crypto_sign_verify_detached(sig: Buffer, m: Buffer, pk: Buffer): boolean;
  randombytes_buf(b: Buffer): void;
  sodium_malloc(size: number): Buffer;
}

/**
 * libsodium through the optional sodium-native package, or undefined where
 * it does not load. It ships prebuilt for linux/darwin/win on x64 and arm64
 * (no compiler at install) and links only what node itself links, so the
 * FROM-scratch service image, which copies node_modules and node's shared
 * libraries, runs it. Every caller keeps a pure-JS or node:crypto path
 * giving the same bytes: only speed depends on it.
 */
export const sodium: Sodium | undefined = (() => {
  try {
    const s = createRequire(import.meta.url)("sodium-native") as Partial<Sodium>;
    const needed = ["crypto_secretbox_easy", "crypto_secretbox_open_easy", "crypto_sign_seed_keypair", "crypto_sign_detached", "crypto_sign_verify_detached", "randombytes_buf", "sodium_malloc"] as const;
    return needed.every((f) => typeof s[f] === "function") ? (s as Sodium) : undefined;
  } catch {
    return undefined;
  }
})();

/** A view of `b` as a Buffer without copying (sodium-native takes Buffers). */
export function asBuffer(b: Uint8Array): Buffer {
  return Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}
