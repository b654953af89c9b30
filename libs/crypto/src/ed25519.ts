import { createPrivateKey, createPublicKey, sign as nodeSign, verify as nodeVerify } from "node:crypto";
import type { KeyObject } from "node:crypto";
import { fromHex, ownBytes, randomBytes, toHex } from "./encoding.js";
import { InvalidKeyError } from "./errors.js";
import { NkeyPrefix, decodeNkeySeed, encodeNkeyPublic, encodeNkeySeed } from "./nkey.js";

// DER wrapper that lets node:crypto import a raw Ed25519 seed (RFC 8410).
// Public keys go through JWK (RFC 8037 "OKP"): the same raw key reaches
// OpenSSL, at ~1–20 µs per import/export instead of ~100–250 µs for DER/SPKI.
const PKCS8_ED25519_PREFIX = fromHex("302e020100300506032b657004220420");

const inspectSymbol = Symbol.for("nodejs.util.inspect.custom");

function privateKeyFromSeed(seed: Uint8Array): KeyObject {
  const der = new Uint8Array(48);
  der.set(PKCS8_ED25519_PREFIX);
  der.set(seed, 16);
  try {
    return createPrivateKey({ key: Buffer.from(der.buffer), format: "der", type: "pkcs8" });
  } finally {
    der.fill(0);
  }
}

function rawPublicKey(key: KeyObject): Uint8Array {
  const x = key.export({ format: "jwk" }).x;
  const raw = x === undefined ? undefined : Buffer.from(x, "base64url");
  if (raw?.byteLength !== 32) throw new InvalidKeyError("Ed25519 public key export failed");
  return ownBytes(raw);
}

/**
 * An Ed25519 signing key backed by a cached node:crypto `KeyObject`.
 *
 * Rebuilding the key per signature (as nats.js and @nats-io/jwt do with
 * tweetnacl) costs milliseconds and capped logins at ~50/s (docs/nats-notes.md
 * "Auth callout"); the cached key signs at ~40k/s. Signatures are
 * byte-identical to @noble/ed25519 (Ed25519 is deterministic, RFC 8032).
 *
 * The seed lives in a private field and `toJSON`/`inspect` show only the
 * public key, so logging a key object cannot leak it.
 */
export class SigningKey {
  readonly #seed: Uint8Array;
  readonly #privateKey: KeyObject;
  readonly #prefix: NkeyPrefix;
  /** Raw 32-byte Ed25519 public key. */
  readonly publicKey: Uint8Array;
  /** The nkey of {@link publicKey} under this key's prefix kind (`U…` for user keys). */
  readonly principal: string;

  private constructor(seed: Uint8Array, prefix: NkeyPrefix) {
    if (!(seed instanceof Uint8Array) || seed.byteLength !== 32) {
      throw new InvalidKeyError("Ed25519 seed must be 32 bytes");
    }
    if (prefix === NkeyPrefix.curve) throw new InvalidKeyError("an X (curve) nkey is not an Ed25519 key");
    this.#seed = ownBytes(seed);
    this.#prefix = prefix;
    this.#privateKey = privateKeyFromSeed(this.#seed);
    this.publicKey = rawPublicKey(createPublicKey(this.#privateKey));
    this.principal = encodeNkeyPublic(prefix, this.publicKey);
  }

  /** A fresh random user (`U…`) key. */
  static generate(): SigningKey {
    return new SigningKey(randomBytes(32), NkeyPrefix.user);
  }

  /** A user (`U…`) key from a 32-byte Ed25519 seed (RFC 8032 secret key). */
  static fromSeed(seed: Uint8Array): SigningKey {
    return new SigningKey(seed, NkeyPrefix.user);
  }

  /**
   * A key from an nkey seed string (`SU…`, `SA…`, `SN…`, `SO…`), keeping its
   * kind: `fromNkeySeed("SA…").principal` starts with `A`. `SX…` (an X25519
   * curve seed) is rejected with {@link InvalidKeyError}.
   */
  static fromNkeySeed(seed: string): SigningKey {
    const decoded = decodeNkeySeed(seed);
    try {
      return new SigningKey(decoded.seed, decoded.prefix);
    } finally {
      decoded.seed.fill(0);
    }
  }

  /** The public key as an nkey with the given prefix (default: this key's own kind). */
  nkeyPublic(prefix: NkeyPrefix = this.#prefix): string {
    return prefix === this.#prefix ? this.principal : encodeNkeyPublic(prefix, this.publicKey);
  }

  /** The nkey seed string (`SU…` etc.). A secret: write it only to 0600 files, never log it. */
  nkeySeed(): string {
    return encodeNkeySeed(this.#prefix, this.#seed);
  }

  /** Ed25519 signature (64 bytes) over `data`. */
  sign(data: Uint8Array): Uint8Array {
    return ownBytes(nodeSign(null, data, this.#privateKey));
  }

  /** A copy of the 32-byte seed (a secret). */
  seedBytes(): Uint8Array {
    return ownBytes(this.#seed);
  }

  /** Public-only view, so `JSON.stringify` of a structure holding a key never prints the seed. */
  toJSON(): { principal: string } {
    return { principal: this.principal };
  }

  [inspectSymbol](): string {
    return `SigningKey(${this.principal})`;
  }
}

/** Bounded so that an attacker presenting many distinct keys cannot grow memory without limit. */
const VERIFY_CACHE_MAX = 4096;
const verifyKeyCache = new Map<string, KeyObject>();

function publicKeyObject(publicKey: Uint8Array): KeyObject {
  const id = toHex(publicKey);
  const hit = verifyKeyCache.get(id);
  if (hit !== undefined) {
    verifyKeyCache.delete(id);
    verifyKeyCache.set(id, hit);
    return hit;
  }
  const key = createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: Buffer.from(publicKey.buffer, publicKey.byteOffset, 32).toString("base64url") }, format: "jwk" });
  verifyKeyCache.set(id, key);
  if (verifyKeyCache.size > VERIFY_CACHE_MAX) {
    const oldest = verifyKeyCache.keys().next().value;
    if (oldest !== undefined) verifyKeyCache.delete(oldest);
  }
  return key;
}

/**
 * Verifies an Ed25519 signature with node:crypto (OpenSSL: RFC 8032 strict
 * decoding, rejects non-canonical S). KeyObjects are cached per public key
 * (bounded LRU) because importing a key costs about as much as a verify.
 * Never throws: any malformed input (wrong lengths, non-bytes, a public key
 * that is not a curve point) is simply `false`, so a hostile header cannot
 * crash a handler.
 */
export function verifySignature(publicKey: Uint8Array, data: Uint8Array, signature: Uint8Array): boolean {
  try {
    if (!(publicKey instanceof Uint8Array) || publicKey.byteLength !== 32) return false;
    if (!(signature instanceof Uint8Array) || signature.byteLength !== 64) return false;
    if (!(data instanceof Uint8Array)) return false;
    return nodeVerify(null, data, publicKeyObject(publicKey), signature);
  } catch {
    return false;
  }
}

