import type { NkeyPrefix } from "@unibus/crypto";
import { verifySignatureUncached } from "@unibus/crypto";

/**
 * What signs the callout's JWTs: a `SigningKey` of @unibus/crypto, which signs through
 * libsodium when sodium-native loads (every login costs two signatures and
 * every refusal one: ~24 µs each there against ~42 µs through node:crypto)
 * and through node:crypto for large JWTs (a principal in many rooms).
 */
export interface JwtSigner {
  sign(data: Uint8Array): Uint8Array;
  nkeyPublic(prefix?: NkeyPrefix): string;
}

/**
 * Ed25519 verification of a statement that never repeats (a login's nonce
 * signature, the server's request): libsodium when it loads (~70 µs where
 * node:crypto's one-shot `verify` took ~150 µs on the same loaded box), else
 * node:crypto, with libsodium's stricter encoding rules on both paths (which
 * can only deny) and without the verified-once cache. Never throws.
 */
export function verifyEd25519(publicKey: Uint8Array, data: Uint8Array, signature: Uint8Array): boolean {
  return verifySignatureUncached(publicKey, data, signature);
}
