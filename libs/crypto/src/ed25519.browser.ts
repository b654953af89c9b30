// Browser build of ./ed25519.ts: the same SigningKey API on @noble/ed25519
// (no node:crypto in a browser). Ed25519 is deterministic (RFC 8032), so the
// signatures are byte-identical; the equivalence test checks it.
import * as ed from "@noble/ed25519";
import { sha512 } from "@noble/hashes/sha2.js";
import { ownBytes, randomBytes } from "./encoding.js";
import { InvalidKeyError } from "./errors.js";
import { NkeyPrefix, decodeNkeySeed, encodeNkeyPublic, encodeNkeySeed } from "./nkey.js";
import { isSignatureMadeBy } from "./own-signature.js";

ed.hashes.sha512 = sha512;

/**
 * An Ed25519 signing key. The seed lives in a private field and `toJSON`
 * shows only the public key, so logging a key object cannot leak it.
 */
export class SigningKey {
  readonly #seed: Uint8Array;
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
    this.publicKey = ed.getPublicKey(this.#seed);
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

  /** A key from an nkey seed string, keeping its kind; `SX…` is rejected. */
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

  /** The nkey seed string. A secret: never log it. */
  nkeySeed(): string {
    return encodeNkeySeed(this.#prefix, this.#seed);
  }

  /** Ed25519 signature (64 bytes) over `data`. */
  sign(data: Uint8Array): Uint8Array {
    return ed.sign(data, this.#seed);
  }

  /** True when `signature` is exactly this key's own (deterministic) signature over `data`: see the Node build. Never throws. */
  isOwnSignature(data: Uint8Array, signature: Uint8Array): boolean {
    return isSignatureMadeBy((d) => this.sign(d), data, signature);
  }

  /** A copy of the 32-byte seed (a secret). */
  seedBytes(): Uint8Array {
    return ownBytes(this.#seed);
  }

  /** Public-only view, so `JSON.stringify` of a structure holding a key never prints the seed. */
  toJSON(): { principal: string } {
    return { principal: this.principal };
  }
}

/**
 * Verifies an Ed25519 signature (RFC 8032 strict: noble's default rejects
 * non-canonical encodings, as OpenSSL does). Never throws: malformed input is `false`.
 */
export function verifySignature(publicKey: Uint8Array, data: Uint8Array, signature: Uint8Array): boolean {
  try {
    if (!(publicKey instanceof Uint8Array) || publicKey.byteLength !== 32) return false;
    if (!(signature instanceof Uint8Array) || signature.byteLength !== 64) return false;
    if (!(data instanceof Uint8Array)) return false;
    return ed.verify(signature, data, publicKey);
  } catch {
    return false;
  }
}

/** One signature to check: `signature` by `publicKey` over `data`. */
export interface SignatureCheck {
  readonly publicKey: Uint8Array;
  readonly data: Uint8Array;
  readonly signature: Uint8Array;
}

/** Options of {@link verifyMany}: checks by `own`'s public key are answered by signing again. */
export interface VerifyManyOptions {
  readonly own?: SigningKey | undefined;
}

/** {@link verifySignature} on each check (the browser has no worker pool here); `own`'s checks as in the Node build. */
export function verifyMany(checks: readonly SignatureCheck[], opts: VerifyManyOptions = {}): Promise<boolean[]> {
  const own = opts.own;
  const ownKey = (k: Uint8Array): boolean => own !== undefined && k.byteLength === 32 && k.every((b, i) => b === own.publicKey[i]);
  return Promise.resolve(checks.map((c) => (ownKey(c.publicKey) && own!.isOwnSignature(c.data, c.signature)) || verifySignature(c.publicKey, c.data, c.signature)));
}
