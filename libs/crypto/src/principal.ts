import { fromHex } from "./encoding.js";
import { InvalidPrincipalError } from "./errors.js";
import { NkeyPrefix, decodeNkeyPublic, encodeNkeyPublic } from "./nkey.js";

const HEX64_RE = /^[0-9a-fA-F]{64}$/;

/** The principal id (`U…` user nkey, architecture §3) of a 32-byte Ed25519 public key. */
export function principalFromPublicKey(publicKey: Uint8Array): string {
  if (!(publicKey instanceof Uint8Array) || publicKey.byteLength !== 32) {
    throw new InvalidPrincipalError("an Ed25519 public key is 32 bytes");
  }
  return encodeNkeyPublic(NkeyPrefix.user, publicKey);
}

/**
 * The Ed25519 public key of a principal given as a `U…` user nkey or as 64
 * hex characters. Strict (no trimming, checksum checked) so that two spellings
 * of one key cannot become two allowlist entries; throws
 * {@link InvalidPrincipalError}.
 */
export function publicKeyFromPrincipal(principal: string): Uint8Array {
  if (typeof principal !== "string") throw new InvalidPrincipalError();
  if (HEX64_RE.test(principal)) return fromHex(principal);
  const key = decodeNkeyPublic(NkeyPrefix.user, principal);
  if (key === undefined) throw new InvalidPrincipalError("expected a U… user nkey or 64 hex characters");
  return key;
}

/**
 * Canonical `U…` form of user input (surrounding whitespace ignored; `U…` or
 * 64-hex accepted). Every KV key, subject and allowlist entry uses this form.
 */
export function normalisePrincipal(input: string): string {
  if (typeof input !== "string") throw new InvalidPrincipalError();
  return principalFromPublicKey(publicKeyFromPrincipal(input.trim()));
}

/** True iff `s` is already a canonical principal: a valid `U…` user nkey (hex is not canonical). */
export function isPrincipal(s: string): boolean {
  return decodeNkeyPublic(NkeyPrefix.user, s) !== undefined;
}
