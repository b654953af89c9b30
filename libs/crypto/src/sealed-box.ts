import { aeadDecrypt, aeadEncrypt, AeadSize } from "./aead.js";
import { concatBytes } from "./encoding.js";
import { DecryptError } from "./errors.js";
import { blake3DeriveKey } from "./hash.js";
import { agreementPublicKey, ephemeralAgreement, x25519SharedSecret } from "./x25519.js";

/**
 * Sealed box v1 layout and constants (contracts/specs/sealed-box.md):
 * `version(1) || epk(32) || XChaCha20-Poly1305(key, nonce, plaintext, ad = version || epk)`.
 */
export const SealedBox = {
  version: 1,
  /** BLAKE3 derive_key context: globally unique, never reused for another purpose. */
  kdfContext: "unibus 2026-11-23 sealed-box v1",
  headerLength: 33,
  overhead: 33 + AeadSize.tag,
} as const;

function deriveKeyAndNonce(shared: Uint8Array, epk: Uint8Array, rpk: Uint8Array): { key: Uint8Array; nonce: Uint8Array } {
  // Binding both public keys stops a box re-targeted at another recipient (or
  // with a substituted epk mapping to the same shared secret) from opening.
  const okm = blake3DeriveKey(SealedBox.kdfContext, concatBytes(shared, epk, rpk), AeadSize.key + AeadSize.nonce);
  shared.fill(0);
  return { key: okm.subarray(0, AeadSize.key), nonce: okm.subarray(AeadSize.key) };
}

function assemble(epk: Uint8Array, shared: Uint8Array, rpk: Uint8Array, plaintext: Uint8Array): Uint8Array {
  const header = new Uint8Array(SealedBox.headerLength);
  header[0] = SealedBox.version;
  header.set(epk, 1);
  const { key, nonce } = deriveKeyAndNonce(shared, epk, rpk);
  // The key is unique per box (fresh epk), so the derived nonce is never reused.
  const body = aeadEncrypt(key, nonce, plaintext, header);
  key.fill(0);
  return concatBytes(header, body);
}

/**
 * Encrypts `plaintext` so that only the holder of the X25519 secret for
 * `recipientAgreementPublicKey` can read it (anonymous sender: a fresh
 * ephemeral key per box).
 *
 * A sealed box does NOT authenticate its sender: anyone who knows the
 * recipient's public key can seal to it. Callers sign what they seal (e.g. a
 * room-key share set is signed by the distributing member, DESIGN §5).
 * Throws InvalidKeyError for a malformed or low-order recipient key.
 */
export function sealTo(recipientAgreementPublicKey: Uint8Array, plaintext: Uint8Array): Uint8Array {
  const { publicKey: epk, shared } = ephemeralAgreement(recipientAgreementPublicKey);
  return assemble(epk, shared, recipientAgreementPublicKey, plaintext);
}

/**
 * Deterministic sealing with a caller-chosen ephemeral secret. For test
 * vectors only: reusing an ephemeral secret across plaintexts reuses the
 * key and nonce. Not exported from the package.
 */
export function sealWithEphemeralSecret(recipientAgreementPublicKey: Uint8Array, plaintext: Uint8Array, ephemeralSecretKey: Uint8Array): Uint8Array {
  const epk = agreementPublicKey(ephemeralSecretKey);
  const shared = x25519SharedSecret(ephemeralSecretKey, recipientAgreementPublicKey);
  return assemble(epk, shared, recipientAgreementPublicKey, plaintext);
}

/**
 * Opens a sealed box with the recipient's X25519 secret key. Throws
 * {@link DecryptError} on any failure: unknown version, truncation, low-order
 * epk, wrong recipient, or any tampered byte.
 */
export function openSealed(recipientAgreementSecretKey: Uint8Array, sealed: Uint8Array): Uint8Array {
  if (!(sealed instanceof Uint8Array) || sealed.byteLength < SealedBox.overhead || sealed[0] !== SealedBox.version) {
    throw new DecryptError();
  }
  const header = sealed.subarray(0, SealedBox.headerLength);
  const epk = sealed.subarray(1, SealedBox.headerLength);
  let key: Uint8Array;
  let nonce: Uint8Array;
  try {
    const rpk = agreementPublicKey(recipientAgreementSecretKey);
    const shared = x25519SharedSecret(recipientAgreementSecretKey, epk);
    ({ key, nonce } = deriveKeyAndNonce(shared, epk, rpk));
  } catch (cause) {
    throw new DecryptError("decryption failed", { cause });
  }
  try {
    return aeadDecrypt(key, nonce, sealed.subarray(SealedBox.headerLength), header);
  } finally {
    key.fill(0);
  }
}
