import { createRequire } from "node:module";

/** The libsodium calls this package uses, as the optional sodium-native package exposes them. */
export interface NativeSodium {
  crypto_sign_verify_detached(signature: Buffer, message: Buffer, publicKey: Buffer): boolean;
  /** Signing (checked where used). */
  crypto_sign_seed_keypair?(publicKey: Buffer, secretKey: Buffer, seed: Buffer): void;
  crypto_sign_detached?(signature: Buffer, message: Buffer, secretKey: Buffer): void;
  crypto_hash_sha256(out: Buffer, message: Buffer): void;
  /** X25519 and XChaCha20-Poly1305 (sealing a room key to many members); checked where used, as a build may lack them. */
  crypto_scalarmult?(out: Buffer, secretKey: Buffer, publicKey: Buffer): void;
  crypto_scalarmult_base?(out: Buffer, secretKey: Buffer): void;
  crypto_aead_xchacha20poly1305_ietf_encrypt?(ciphertext: Buffer, message: Buffer, additionalData: Buffer | null, nsec: null, nonce: Buffer, key: Buffer): number;
  /** Throws when the tag does not check out. */
  crypto_aead_xchacha20poly1305_ietf_decrypt?(message: Buffer, nsec: null, ciphertext: Buffer, additionalData: Buffer | null, nonce: Buffer, key: Buffer): number;
  randombytes_buf?(out: Buffer): void;
}

function load(): { sodium: NativeSodium; path: string } | undefined {
  try {
    const require = createRequire(import.meta.url);
    const path = require.resolve("sodium-native");
    const s = require(path) as Partial<NativeSodium>;
    return typeof s.crypto_sign_verify_detached === "function" && typeof s.crypto_hash_sha256 === "function" ? { sodium: s as NativeSodium, path } : undefined;
  } catch {
    return undefined;
  }
}

const loaded = load();

/**
 * libsodium through the optional sodium-native package (prebuilt for
 * linux/darwin/win on x64 and arm64), or undefined where it does not load.
 * Only speed depends on it: every caller keeps the node:crypto path, which
 * gives the same answers (ed25519.ts applies libsodium's extra encoding
 * rules to both).
 */
export const nativeSodium: NativeSodium | undefined = loaded?.sodium;

/** Where sodium-native was loaded from, so the crypto pool's workers load the same build; undefined without it. */
export const nativeSodiumPath: string | undefined = loaded?.path;

/** A view of `b` as a Buffer without copying (sodium-native takes Buffers). */
export function asBuffer(b: Uint8Array): Buffer {
  return Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}
