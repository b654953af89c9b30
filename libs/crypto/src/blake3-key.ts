/**
 * BLAKE3 with the key prepared once, for the replica handshake's MACs and
 * derivations (a few hundred bytes each, where setting a hasher up used to
 * outweigh the hashing). Backed by `blake3-jit`, a plain-JS BLAKE3 with
 * every mode (keyed_hash, derive_key, XOF) and a `reset()` that restarts
 * from the prepared key: 0.5-1.1 µs per handshake-sized input against
 * 4-10 µs for @noble/hashes, whose one-shot and cloned hashers both build
 * a fresh state each call. Its answers are pinned to the BLAKE3 team's
 * published vectors and to @noble's for every length (blake3-key.test.ts),
 * and the handshake's vectors are generated from @noble alone, so a fault
 * in this backend fails a test rather than the wire.
 */
import { createDeriveKey, createKeyed } from "blake3-jit";
import type { Hasher } from "blake3-jit";

const inspectSymbol = Symbol.for("nodejs.util.inspect.custom");

/**
 * A BLAKE3 keyed_hash key or derive_key context, prepared once and then
 * used for any number of hashes. Holds key material (a MAC key is a
 * secret), so `toJSON` and `inspect` show only the mode. Not re-entrant,
 * and need not be: each hash runs to its end synchronously.
 */
export class Blake3Key {
  readonly #hasher: Hasher;
  readonly #mode: "keyed" | "derive";

  private constructor(hasher: Hasher, mode: "keyed" | "derive") {
    this.#hasher = hasher;
    this.#mode = mode;
  }

  /** keyed_hash mode under a 32-byte key (a MAC). The key is copied. */
  static keyed(key: Uint8Array): Blake3Key {
    if (!(key instanceof Uint8Array) || key.byteLength !== 32) throw new RangeError("Blake3Key.keyed: key must be exactly 32 bytes");
    // A fresh, aligned copy: the backend reads the key as 32-bit words, and a caller's later change must not move it.
    const copy = Uint8Array.from(key);
    const hasher = createKeyed(copy);
    copy.fill(0);
    return new Blake3Key(hasher, "keyed");
  }

  /** derive_key mode under a hard-coded, globally unique context string, hashed here once. */
  static deriveKey(context: string): Blake3Key {
    return new Blake3Key(createDeriveKey(context), "derive");
  }

  /** The first `outLen` bytes (default 32) of the hash of `data` in this key's mode. */
  hash(data: Uint8Array, outLen = 32): Uint8Array {
    if (!Number.isSafeInteger(outLen) || outLen < 1) throw new RangeError("Blake3Key.hash: outLen must be a positive integer");
    const h = this.#hasher.reset().update(data);
    // Past one output block, blake3-jit 1.1.0's finalize() walks a
    // multi-chunk input's tree twice and answers wrongly (pinned in
    // blake3-key.test.ts); its XOF reader walks it once.
    return outLen <= 64 ? h.finalize(outLen) : h.finalizeXof().read(outLen);
  }

  toJSON(): { blake3: "keyed" | "derive" } {
    return { blake3: this.#mode };
  }

  [inspectSymbol](): string {
    return `Blake3Key(${this.#mode})`;
  }
}
