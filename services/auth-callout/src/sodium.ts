import { createRequire } from "node:module";

/** The libsodium calls the callout's xkey boxes use, as sodium-native exposes them (signing and verification go through @unibus/crypto). */
export interface Sodium {
  crypto_secretbox_easy(c: Buffer, m: Buffer, n: Buffer, k: Buffer): void;
  crypto_secretbox_open_easy(m: Buffer, c: Buffer, n: Buffer, k: Buffer): boolean;
  randombytes_buf(b: Buffer): void;
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
    const needed = ["crypto_secretbox_easy", "crypto_secretbox_open_easy", "randombytes_buf"] as const;
    return needed.every((f) => typeof s[f] === "function") ? (s as Sodium) : undefined;
  } catch {
    return undefined;
  }
})();

/** A view of `b` as a Buffer without copying (sodium-native takes Buffers). */
export function asBuffer(b: Uint8Array): Buffer {
  return Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}
