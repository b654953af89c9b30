import type { NkeyPrefix, SigningKey } from "@unibus/crypto";
import { verifySignature } from "@unibus/crypto";
import { asBuffer, sodium } from "./sodium.js";

/** What signs the callout's JWTs: a {@link SigningKey}, or {@link nativeSigner}'s faster view of one. */
export interface JwtSigner {
  sign(data: Uint8Array): Uint8Array;
  nkeyPublic(prefix?: NkeyPrefix): string;
}

/**
 * Above this many bytes the key's own node:crypto signature is the faster
 * one: Ed25519 hashes the whole message with SHA-512 (twice), which
 * OpenSSL's vectorised SHA-512 does ~1.5× faster than libsodium's portable
 * one, and past ~16 KiB that outweighs OpenSSL's fixed per-call set-up.
 * Measured on this machine: 110 KB (the user JWT of a principal in 1,000
 * rooms) 480–560 µs vs 800–1,700 µs; 8 KiB 56–69 µs vs 63–107 µs.
 */
export const LARGE_SIGNATURE_BYTES = 16 * 1024;

/**
 * The issuer key signing through libsodium when sodium-native loads, else the
 * key itself. Every login costs two signatures (user JWT and response) and
 * every refusal one: libsodium signs a small JWT in ~24 µs where
 * node:crypto's one-shot `sign` spends ~42 µs (OpenSSL's per-call EVP
 * set-up). Large JWTs (a principal in many rooms) go to node:crypto
 * instead ({@link LARGE_SIGNATURE_BYTES}). Ed25519 is deterministic, so
 * both give the same bytes. The 64-byte libsodium secret key sits in
 * sodium's guarded memory, never on the JS heap.
 */
export function nativeSigner(key: SigningKey): JwtSigner {
  if (sodium === undefined) return key;
  const s = sodium;
  const seed = Buffer.from(key.seedBytes());
  const secret = s.sodium_malloc(64);
  const pk = Buffer.alloc(32);
  try {
    s.crypto_sign_seed_keypair(pk, secret, seed);
  } finally {
    seed.fill(0);
  }
  // A library that derived another key would sign logins the server refuses: keep the known-good path.
  if (!pk.equals(asBuffer(key.publicKey))) return key;
  return {
    sign(data) {
      if (data.byteLength > LARGE_SIGNATURE_BYTES) return key.sign(data);
      const sig = Buffer.allocUnsafe(64);
      s.crypto_sign_detached(sig, asBuffer(data), secret);
      return sig;
    },
    nkeyPublic: (prefix) => key.nkeyPublic(prefix),
  };
}

/**
 * Ed25519 verification through libsodium when it loads (~70 µs where
 * node:crypto's one-shot `verify` took ~150 µs on the same loaded box),
 * else node:crypto. libsodium is the stricter of the two (it also refuses
 * small-order keys and non-canonical signatures), which can only deny.
 */
export function verifyEd25519(publicKey: Uint8Array, data: Uint8Array, signature: Uint8Array): boolean {
  if (sodium === undefined) return verifySignature(publicKey, data, signature);
  if (publicKey.byteLength !== 32 || signature.byteLength !== 64) return false;
  try {
    return sodium.crypto_sign_verify_detached(asBuffer(signature), asBuffer(data), asBuffer(publicKey));
  } catch {
    return false;
  }
}
