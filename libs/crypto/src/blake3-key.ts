/**
 * BLAKE3 with the key prepared once. @noble/hashes sets a hasher up on every
 * one-shot call (and in derive_key mode hashes the context string again each
 * time); the handshake's MACs and derivations are a few hundred bytes each,
 * so that setup outweighed the hashing. Here the keyed or context-keyed
 * hasher is built once and each hash starts from a clone of it.
 */
import { blake3 } from "@noble/hashes/blake3.js";
import { utf8 } from "./encoding.js";

type Blake3Hasher = ReturnType<typeof blake3.create>;

const inspectSymbol = Symbol.for("nodejs.util.inspect.custom");

/**
 * A BLAKE3 keyed_hash key or derive_key context, prepared once and then
 * used for any number of hashes. Holds key material (a MAC key is a
 * secret), so `toJSON` and `inspect` show only the mode.
 */
export class Blake3Key {
  readonly #prepared: Blake3Hasher;
  readonly #mode: "keyed" | "derive";

  private constructor(prepared: Blake3Hasher, mode: "keyed" | "derive") {
    this.#prepared = prepared;
    this.#mode = mode;
  }

  /** keyed_hash mode under a 32-byte key (a MAC). The key is copied. */
  static keyed(key: Uint8Array): Blake3Key {
    if (!(key instanceof Uint8Array) || key.byteLength !== 32) throw new RangeError("Blake3Key.keyed: key must be exactly 32 bytes");
    return new Blake3Key(blake3.create({ key: Uint8Array.from(key) }), "keyed");
  }

  /** derive_key mode under a hard-coded, globally unique context string, hashed here once. */
  static deriveKey(context: string): Blake3Key {
    return new Blake3Key(blake3.create({ context: utf8(context) }), "derive");
  }

  /** The first `outLen` bytes (default 32) of the hash of `data` in this key's mode. */
  hash(data: Uint8Array, outLen = 32): Uint8Array {
    if (!Number.isSafeInteger(outLen) || outLen < 1) throw new RangeError("Blake3Key.hash: outLen must be a positive integer");
    const h = this.#prepared.clone().update(data);
    return outLen === 32 ? h.digest() : h.xof(outLen);
  }

  toJSON(): { blake3: "keyed" | "derive" } {
    return { blake3: this.#mode };
  }

  [inspectSymbol](): string {
    return `Blake3Key(${this.#mode})`;
  }
}
