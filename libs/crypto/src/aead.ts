import { hchacha } from "@noble/ciphers/chacha.js";
import { createCipheriv, createDecipheriv } from "node:crypto";
import { endianness } from "node:os";
import { DecryptError } from "./errors.js";
import { asBuffer, nativeSodium } from "./native-sodium.js";
import type { NativeSodium } from "./native-sodium.js";

/** XChaCha20-Poly1305 sizes. */
export const AeadSize = { key: 32, nonce: 24, tag: 16 } as const;

// "expand 32-byte k" as little-endian words (RFC 8439 §2.3).
const SIGMA = new Uint32Array([0x61707865, 0x3320646e, 0x79622d32, 0x6b206574]);
// hchacha works on native-endian words; the byte views below assume LE (x86, arm64).
if (endianness() !== "LE") throw new Error("@unibus/crypto: big-endian hosts are not supported");

// Scratch words of the subkey derivation, reused by every call: derivation
// and the cipher setup that copies the subkey out are synchronous, so no two
// calls overlap. Fresh typed arrays cost four allocations and three
// off-heap buffers per message, which is what a room's idle latency pays
// for in scavenges. The key words and the subkey are secrets: both are
// wiped before a call returns.
const KEY_WORDS = new Uint32Array(8);
const KEY_BYTES = new Uint8Array(KEY_WORDS.buffer);
const NONCE_WORDS = new Uint32Array(4);
const NONCE_BYTES = new Uint8Array(NONCE_WORDS.buffer);
const SUBKEY_WORDS = new Uint32Array(8);
const SUBKEY = new Uint8Array(SUBKEY_WORDS.buffer);
/** 0x00000000 || nonce[16..24]; public, overwritten by each call. */
const NONCE12 = new Uint8Array(12);

/**
 * XChaCha20 = HChaCha20(key, nonce[0..16]) as subkey + ChaCha20-Poly1305 (IETF,
 * 12-byte nonce 0x00000000 || nonce[16..24]); draft-irtf-cfrg-xchacha §2.3.
 * node:crypto has no XChaCha, so the subkey comes from @noble/ciphers' hchacha
 * and the bulk AEAD from node (nats-notes "Crypto"): ~2x noble's speed with
 * byte-identical output. Writes the subkey into SUBKEY and the 12-byte nonce
 * into NONCE12; the caller hands them to createCipheriv/createDecipheriv
 * (which copy both) and calls {@link wipeSubkey} in a `finally`.
 */
function deriveSubkey(key: Uint8Array, nonce: Uint8Array): void {
  assertKeyAndNonce(key, nonce);
  try {
    KEY_BYTES.set(key);
    // Byte loops, not subarray views: a view is an allocation per call.
    for (let i = 0; i < 16; i++) NONCE_BYTES[i] = nonce[i]!;
    hchacha(SIGMA, KEY_WORDS, NONCE_WORDS, SUBKEY_WORDS);
    for (let i = 0; i < 8; i++) NONCE12[4 + i] = nonce[16 + i]!;
  } finally {
    KEY_WORDS.fill(0);
  }
}

/** libsodium's XChaCha20-Poly1305, when sodium-native loaded with both calls. */
type SodiumAead = Required<Pick<NativeSodium, "crypto_aead_xchacha20poly1305_ietf_encrypt" | "crypto_aead_xchacha20poly1305_ietf_decrypt">>;

function sodiumAeadOf(s: NativeSodium | undefined): SodiumAead | undefined {
  return typeof s?.crypto_aead_xchacha20poly1305_ietf_encrypt === "function" && typeof s.crypto_aead_xchacha20poly1305_ietf_decrypt === "function" ? (s as SodiumAead) : undefined;
}

/**
 * Small messages (a room frame, a sealed share) go through libsodium: one
 * native call, where the node path derives the subkey in JavaScript and
 * builds a Cipher object with three output buffers per call. 1 KiB in a
 * loop: sealed in 2.5 µs against 11, opened in 3.3 against 7.8; in the idle
 * room of P8, where nothing is warm, 8 µs each way against 27 and 24 (p50). Large
 * ones (blob chunks) keep node's path: OpenSSL opened 1 MiB in 0.6–0.7 ms
 * against libsodium's 1.1–1.3. Both are the same construction
 * (draft-irtf-cfrg-xchacha), byte for byte; the tests compare both paths
 * with @noble/ciphers.
 */
export const NATIVE_AEAD_MAX_BYTES = 64 * 1024;
let nativeAead = sodiumAeadOf(nativeSodium);

/** Which path small messages take: node's when `on` is false or sodium-native did not load. For tests (not exported from the package). */
export function useNativeAeadForTests(on: boolean): boolean {
  nativeAead = on ? sodiumAeadOf(nativeSodium) : undefined;
  return nativeAead !== undefined;
}

function assertKeyAndNonce(key: Uint8Array, nonce: Uint8Array): void {
  if (!(key instanceof Uint8Array) || key.byteLength !== AeadSize.key) throw new RangeError("AEAD key must be 32 bytes");
  if (!(nonce instanceof Uint8Array) || nonce.byteLength !== AeadSize.nonce) throw new RangeError("AEAD nonce must be 24 bytes");
}

/** True when views `a` and `b` share bytes (libsodium is not promised to encrypt between overlapping buffers). */
function overlaps(a: Uint8Array, b: Uint8Array): boolean {
  return a.buffer === b.buffer && a.byteOffset < b.byteOffset + b.byteLength && b.byteOffset < a.byteOffset + a.byteLength;
}

/** Zeroes the derived subkey (a secret) in the shared scratch. */
function wipeSubkey(): void {
  SUBKEY_WORDS.fill(0);
}

/** Internal, for tests (not exported by the package): true when the shared scratch holds no key or subkey bytes. */
export function aeadScratchWiped(): boolean {
  return KEY_WORDS.every((w) => w === 0) && SUBKEY_WORDS.every((w) => w === 0);
}

/**
 * XChaCha20-Poly1305 encryption; returns ciphertext || 16-byte tag. The
 * 24-byte nonce is large enough to be random per message (never reuse a
 * (key, nonce) pair: that reveals the XOR of plaintexts and the MAC key).
 */
export function aeadEncrypt(key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, associatedData?: Uint8Array): Uint8Array {
  const out = new Uint8Array(plaintext.byteLength + AeadSize.tag);
  aeadEncryptInto(key, nonce, plaintext, associatedData, out, 0);
  return out;
}

/**
 * {@link aeadEncrypt} writing ciphertext || tag into `out` at `offset`
 * (`plaintext.byteLength + 16` bytes), so a caller laying out a larger
 * message (a room frame) copies the ciphertext once instead of allocating
 * a second buffer of its size: at a few hundred KiB, a fresh zeroed buffer
 * costs as much as the cipher itself on a busy host.
 */
export function aeadEncryptInto(key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, associatedData: Uint8Array | undefined, out: Uint8Array, offset: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0 || offset + plaintext.byteLength + AeadSize.tag > out.byteLength) throw new RangeError("AEAD output does not fit");
  const native = nativeAead;
  if (native !== undefined && plaintext.byteLength <= NATIVE_AEAD_MAX_BYTES) {
    assertKeyAndNonce(key, nonce);
    const sealed = out.subarray(offset, offset + plaintext.byteLength + AeadSize.tag);
    if (!overlaps(sealed, plaintext)) {
      native.crypto_aead_xchacha20poly1305_ietf_encrypt(asBuffer(sealed), asBuffer(plaintext), associatedData === undefined ? null : asBuffer(associatedData), null, asBuffer(nonce), asBuffer(key));
      return;
    }
  }
  try {
    deriveSubkey(key, nonce);
    const cipher = createCipheriv("chacha20-poly1305", SUBKEY, NONCE12, { authTagLength: AeadSize.tag });
    if (associatedData !== undefined) cipher.setAAD(associatedData, { plaintextLength: plaintext.byteLength });
    const body = cipher.update(plaintext);
    out.set(body, offset);
    const tail = cipher.final();
    out.set(tail, offset + body.byteLength);
    out.set(cipher.getAuthTag(), offset + plaintext.byteLength);
  } finally {
    wipeSubkey();
  }
}

/**
 * XChaCha20-Poly1305 decryption of ciphertext || tag. Throws
 * {@link DecryptError} on any failure (including wrong sizes) and returns
 * plaintext only after the tag checked out.
 */
export function aeadDecrypt(key: Uint8Array, nonce: Uint8Array, ciphertext: Uint8Array, associatedData?: Uint8Array): Uint8Array {
  if (!(ciphertext instanceof Uint8Array) || ciphertext.byteLength < AeadSize.tag) throw new DecryptError();
  const bodyLen = ciphertext.byteLength - AeadSize.tag;
  const native = nativeAead;
  if (native !== undefined && bodyLen <= NATIVE_AEAD_MAX_BYTES) return sodiumDecrypt(native, key, nonce, ciphertext, associatedData, bodyLen);
  try {
    deriveSubkey(key, nonce);
    const decipher = createDecipheriv("chacha20-poly1305", SUBKEY, NONCE12, { authTagLength: AeadSize.tag });
    decipher.setAuthTag(ciphertext.subarray(bodyLen));
    if (associatedData !== undefined) decipher.setAAD(associatedData, { plaintextLength: bodyLen });
    const body = decipher.update(ciphertext.subarray(0, bodyLen));
    const tail = decipher.final();
    // A stream cipher: final() adds nothing, and the update's own buffer is
    // returned rather than copied into a second one of the same size (only
    // when it owns its whole ArrayBuffer, so `.buffer` exposes nothing else).
    if (tail.byteLength === 0 && body.byteLength === bodyLen && body.byteOffset === 0 && body.buffer.byteLength === bodyLen) return new Uint8Array(body.buffer, 0, bodyLen);
    const out = new Uint8Array(bodyLen);
    out.set(body, 0);
    out.set(tail, body.byteLength);
    return out;
  } catch (cause) {
    throw new DecryptError("decryption failed", { cause });
  } finally {
    wipeSubkey();
  }
}

/** {@link aeadDecrypt} through libsodium, which checks the tag before it writes any plaintext. */
function sodiumDecrypt(native: SodiumAead, key: Uint8Array, nonce: Uint8Array, ciphertext: Uint8Array, associatedData: Uint8Array | undefined, bodyLen: number): Uint8Array {
  const out = new Uint8Array(bodyLen);
  try {
    assertKeyAndNonce(key, nonce);
    native.crypto_aead_xchacha20poly1305_ietf_decrypt(asBuffer(out), null, asBuffer(ciphertext), associatedData === undefined ? null : asBuffer(associatedData), asBuffer(nonce), asBuffer(key));
    return out;
  } catch (cause) {
    out.fill(0);
    throw new DecryptError("decryption failed", { cause });
  }
}
