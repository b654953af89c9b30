import { aeadDecrypt, aeadEncrypt, AeadSize } from "./aead.js";
import { concatBytes } from "./encoding.js";
import { DecryptError } from "./errors.js";
import { blake3 } from "@noble/hashes/blake3.js";
import { utf8 } from "./encoding.js";
import { InvalidKeyError } from "./errors.js";
import { agreementPublicKey, ephemeralAgreement, ephemeralAgreementKey, x25519SharedSecret } from "./x25519.js";

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

// BLAKE3-derive_key(kdfContext, ·) with the context already absorbed: each
// use clones it (byte-identical to blake3DeriveKey, half the cost).
const kdf = blake3.create({ context: utf8(SealedBox.kdfContext), dkLen: AeadSize.key + AeadSize.nonce });

function deriveKeyAndNonce(shared: Uint8Array, epk: Uint8Array, rpk: Uint8Array): { key: Uint8Array; nonce: Uint8Array } {
  // Binding both public keys stops a box re-targeted at another recipient (or
  // with a substituted epk mapping to the same shared secret) from opening.
  const material = concatBytes(shared, epk, rpk);
  const okm = kdf.clone().update(material).digest();
  material.fill(0);
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
 * room-key share set is signed by the distributing member, architecture §5).
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
 * Seals ONE plaintext to many recipients with ONE fresh ephemeral key
 * (multi-recipient sealing, sealed-box.md "Many recipients"): box i is an
 * ordinary v1 sealed box to `recipients[i]`, opened by {@link openSealed};
 * all boxes share `epk`. Per-box key and nonce are still distinct, because
 * the KDF input `X25519(esk, rpk_i) || epk || rpk_i` differs per recipient
 * key. Reusing the ephemeral is sound only because the plaintext is the same
 * for every box, which this signature enforces: the ephemeral secret never
 * leaves this call, so it can never seal a second plaintext. Equal recipient
 * keys get byte-identical boxes (same key, nonce and plaintext: nothing
 * leaks but the equality of two public keys).
 *
 * Returns one box per recipient, in order, or null where the recipient key
 * is malformed or low-order (that recipient gets nothing; the others still
 * get theirs). ~6x cheaper per recipient than {@link sealTo} (no key
 * generation per box).
 */
export function sealToMany(recipientAgreementPublicKeys: readonly Uint8Array[], plaintext: Uint8Array): (Uint8Array | null)[] {
  if (recipientAgreementPublicKeys.length === 0) return [];
  const ephemeral = ephemeralAgreementKey();
  return recipientAgreementPublicKeys.map((rpk) => {
    let shared: Uint8Array;
    try {
      shared = ephemeral.agree(rpk);
    } catch (err) {
      if (err instanceof InvalidKeyError) return null;
      throw err;
    }
    return assemble(ephemeral.publicKey, shared, rpk, plaintext);
  });
}

/**
 * {@link sealToMany} with a caller-chosen ephemeral secret. For test vectors
 * only. Not exported from the package.
 */
export function sealToManyWithEphemeralSecret(recipientAgreementPublicKeys: readonly Uint8Array[], plaintext: Uint8Array, ephemeralSecretKey: Uint8Array): Uint8Array[] {
  return recipientAgreementPublicKeys.map((rpk) => sealWithEphemeralSecret(rpk, plaintext, ephemeralSecretKey));
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
