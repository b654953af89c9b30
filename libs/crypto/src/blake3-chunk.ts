/**
 * BLAKE3 for short inputs with the key prepared once. A message of at most
 * one chunk (1,024 bytes) is one chain of compressions whose last, flagged
 * as the root, gives the first 64 output bytes, so no tree, no hasher
 * object and no per-call key setup are needed: the handshake's MACs and
 * derivations (a few hundred bytes each) cost a fraction of a
 * general-purpose hasher's call, whose setup (and, in derive_key mode, a
 * hash of the context string on every call) outweighs the few compressions
 * these inputs need. Longer inputs and outputs go to @noble/hashes.
 * Byte-identical to it (checked against it and the official vectors in
 * blake3-chunk.test.ts).
 */
import { blake3 as nobleBlake3 } from "@noble/hashes/blake3.js";
import { utf8 } from "./encoding.js";

/** The BLAKE3 IV (the SHA-256 IV words). */
const IV = Uint32Array.of(0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19);

/** Domain flags of the BLAKE3 compression function. */
const Flag = {
  chunkStart: 1,
  chunkEnd: 2,
  root: 8,
  keyedHash: 16,
  deriveKeyContext: 32,
  deriveKeyMaterial: 64,
} as const;

/** Largest input handled here (one chunk) and largest output (one output block). */
export const BLAKE3_CHUNK_BYTES = 1024;
const BLOCK_BYTES = 64;

// Scratch space, reused by every call: hashing is synchronous, so no two
// calls ever share it at once.
const m = new Uint32Array(16);
const v = new Uint32Array(16);
const cv = new Uint32Array(8);

/**
 * One compression of the block in `m` under the chaining value `cv` (chunk
 * counter 0); leaves the 16 state words in `v`. The state lives in locals
 * (no array traffic inside the rounds); G is written out eight times a round.
 */
function compress(blockLen: number, flags: number): void {
  let v0 = cv[0]!, v1 = cv[1]!, v2 = cv[2]!, v3 = cv[3]!, v4 = cv[4]!, v5 = cv[5]!, v6 = cv[6]!, v7 = cv[7]!;
  let v8 = IV[0]!, v9 = IV[1]!, v10 = IV[2]!, v11 = IV[3]!, v12 = 0, v13 = 0, v14 = blockLen, v15 = flags;
  let m0 = m[0]!, m1 = m[1]!, m2 = m[2]!, m3 = m[3]!, m4 = m[4]!, m5 = m[5]!, m6 = m[6]!, m7 = m[7]!;
  let m8 = m[8]!, m9 = m[9]!, m10 = m[10]!, m11 = m[11]!, m12 = m[12]!, m13 = m[13]!, m14 = m[14]!, m15 = m[15]!;
  let t: number;
  for (let round = 0; round < 7; round++) {
    // Columns.
    v0 = (v0 + v4 + m0) | 0; t = v12 ^ v0; v12 = (t >>> 16) | (t << 16);
    v8 = (v8 + v12) | 0; t = v4 ^ v8; v4 = (t >>> 12) | (t << 20);
    v0 = (v0 + v4 + m1) | 0; t = v12 ^ v0; v12 = (t >>> 8) | (t << 24);
    v8 = (v8 + v12) | 0; t = v4 ^ v8; v4 = (t >>> 7) | (t << 25);
    v1 = (v1 + v5 + m2) | 0; t = v13 ^ v1; v13 = (t >>> 16) | (t << 16);
    v9 = (v9 + v13) | 0; t = v5 ^ v9; v5 = (t >>> 12) | (t << 20);
    v1 = (v1 + v5 + m3) | 0; t = v13 ^ v1; v13 = (t >>> 8) | (t << 24);
    v9 = (v9 + v13) | 0; t = v5 ^ v9; v5 = (t >>> 7) | (t << 25);
    v2 = (v2 + v6 + m4) | 0; t = v14 ^ v2; v14 = (t >>> 16) | (t << 16);
    v10 = (v10 + v14) | 0; t = v6 ^ v10; v6 = (t >>> 12) | (t << 20);
    v2 = (v2 + v6 + m5) | 0; t = v14 ^ v2; v14 = (t >>> 8) | (t << 24);
    v10 = (v10 + v14) | 0; t = v6 ^ v10; v6 = (t >>> 7) | (t << 25);
    v3 = (v3 + v7 + m6) | 0; t = v15 ^ v3; v15 = (t >>> 16) | (t << 16);
    v11 = (v11 + v15) | 0; t = v7 ^ v11; v7 = (t >>> 12) | (t << 20);
    v3 = (v3 + v7 + m7) | 0; t = v15 ^ v3; v15 = (t >>> 8) | (t << 24);
    v11 = (v11 + v15) | 0; t = v7 ^ v11; v7 = (t >>> 7) | (t << 25);
    // Diagonals.
    v0 = (v0 + v5 + m8) | 0; t = v15 ^ v0; v15 = (t >>> 16) | (t << 16);
    v10 = (v10 + v15) | 0; t = v5 ^ v10; v5 = (t >>> 12) | (t << 20);
    v0 = (v0 + v5 + m9) | 0; t = v15 ^ v0; v15 = (t >>> 8) | (t << 24);
    v10 = (v10 + v15) | 0; t = v5 ^ v10; v5 = (t >>> 7) | (t << 25);
    v1 = (v1 + v6 + m10) | 0; t = v12 ^ v1; v12 = (t >>> 16) | (t << 16);
    v11 = (v11 + v12) | 0; t = v6 ^ v11; v6 = (t >>> 12) | (t << 20);
    v1 = (v1 + v6 + m11) | 0; t = v12 ^ v1; v12 = (t >>> 8) | (t << 24);
    v11 = (v11 + v12) | 0; t = v6 ^ v11; v6 = (t >>> 7) | (t << 25);
    v2 = (v2 + v7 + m12) | 0; t = v13 ^ v2; v13 = (t >>> 16) | (t << 16);
    v8 = (v8 + v13) | 0; t = v7 ^ v8; v7 = (t >>> 12) | (t << 20);
    v2 = (v2 + v7 + m13) | 0; t = v13 ^ v2; v13 = (t >>> 8) | (t << 24);
    v8 = (v8 + v13) | 0; t = v7 ^ v8; v7 = (t >>> 7) | (t << 25);
    v3 = (v3 + v4 + m14) | 0; t = v14 ^ v3; v14 = (t >>> 16) | (t << 16);
    v9 = (v9 + v14) | 0; t = v4 ^ v9; v4 = (t >>> 12) | (t << 20);
    v3 = (v3 + v4 + m15) | 0; t = v14 ^ v3; v14 = (t >>> 8) | (t << 24);
    v9 = (v9 + v14) | 0; t = v4 ^ v9; v4 = (t >>> 7) | (t << 25);
    // The message permutation between rounds (two cycles of eight words).
    t = m0; m0 = m2; m2 = m3; m3 = m10; m10 = m12; m12 = m9; m9 = m11; m11 = m5; m5 = t;
    t = m1; m1 = m6; m6 = m4; m4 = m7; m7 = m13; m13 = m14; m14 = m15; m15 = m8; m8 = t;
  }
  v[0] = v0; v[1] = v1; v[2] = v2; v[3] = v3; v[4] = v4; v[5] = v5; v[6] = v6; v[7] = v7;
  v[8] = v8; v[9] = v9; v[10] = v10; v[11] = v11; v[12] = v12; v[13] = v13; v[14] = v14; v[15] = v15;
}

/** Loads bytes [off, off + len) of `data` (len <= 64) into `m` as little-endian words, zero-padded. */
function loadBlock(data: Uint8Array, off: number, len: number): void {
  if (len === BLOCK_BYTES) {
    for (let i = 0, o = off; i < 16; i++, o += 4) m[i] = data[o]! | (data[o + 1]! << 8) | (data[o + 2]! << 16) | (data[o + 3]! << 24);
    return;
  }
  m.fill(0);
  for (let i = 0; i < len; i++) m[i >> 2]! |= data[off + i]! << ((i & 3) * 8);
}

/** BLAKE3 of one chunk (`data.length` <= 1,024) under `key` (8 words) with mode `flags`; `outLen` <= 64. */
function hashChunk(key: Uint32Array, flags: number, data: Uint8Array, outLen: number): Uint8Array {
  cv.set(key);
  const blocks = Math.max(1, Math.ceil(data.byteLength / BLOCK_BYTES));
  for (let b = 0; b < blocks; b++) {
    const off = b * BLOCK_BYTES;
    const len = Math.min(BLOCK_BYTES, data.byteLength - off);
    loadBlock(data, off, len);
    const last = b === blocks - 1;
    compress(len, flags | (b === 0 ? Flag.chunkStart : 0) | (last ? Flag.chunkEnd | Flag.root : 0));
    if (!last) for (let i = 0; i < 8; i++) cv[i] = v[i]! ^ v[i + 8]!;
  }
  // The root's output block: the first 32 bytes are the usual output, the
  // next 32 the start of the extendable output.
  for (let i = 0; i < 8; i++) {
    const lo = v[i]!;
    const hi = v[i + 8]!;
    v[i] = lo ^ hi;
    v[i + 8] = hi ^ cv[i]!;
  }
  const out = new Uint8Array(outLen);
  for (let i = 0; i < outLen; i++) out[i] = v[i >> 2]! >>> ((i & 3) * 8);
  m.fill(0);
  v.fill(0);
  cv.fill(0);
  return out;
}

function keyWords(key: Uint8Array): Uint32Array {
  const w = new Uint32Array(8);
  for (let i = 0, o = 0; i < 8; i++, o += 4) w[i] = key[o]! | (key[o + 1]! << 8) | (key[o + 2]! << 16) | (key[o + 3]! << 24);
  return w;
}

function wordBytes(words: Uint32Array): Uint8Array {
  const out = new Uint8Array(words.length * 4);
  for (let i = 0; i < out.length; i++) out[i] = words[i >> 2]! >>> ((i & 3) * 8);
  return out;
}

const inspectSymbol = Symbol.for("nodejs.util.inspect.custom");

/**
 * A BLAKE3 keyed_hash key or derive_key context, prepared once and then
 * used for any number of hashes. Holds key material (a MAC key is a
 * secret), so `toJSON` and `inspect` show only the mode.
 */
export class Blake3Key {
  readonly #words: Uint32Array;
  readonly #flags: number;
  /** derive_key mode: the context, for inputs longer than a chunk. */
  readonly #context: Uint8Array | undefined;

  private constructor(words: Uint32Array, flags: number, context?: Uint8Array) {
    this.#words = words;
    this.#flags = flags;
    this.#context = context;
  }

  /** keyed_hash mode under a 32-byte key (a MAC). */
  static keyed(key: Uint8Array): Blake3Key {
    if (!(key instanceof Uint8Array) || key.byteLength !== 32) throw new RangeError("Blake3Key.keyed: key must be exactly 32 bytes");
    return new Blake3Key(keyWords(key), Flag.keyedHash);
  }

  /**
   * derive_key mode under a hard-coded, globally unique context string; the
   * context key (a hash of the context) is computed here, once.
   */
  static deriveKey(context: string): Blake3Key {
    const ctx = utf8(context);
    if (ctx.byteLength > BLAKE3_CHUNK_BYTES) throw new RangeError("Blake3Key.deriveKey: context longer than a chunk");
    return new Blake3Key(keyWords(hashChunk(IV, Flag.deriveKeyContext, ctx, 32)), Flag.deriveKeyMaterial, ctx);
  }

  /** The first `outLen` bytes (default 32) of the hash of `data` in this key's mode. */
  hash(data: Uint8Array, outLen = 32): Uint8Array {
    if (!Number.isSafeInteger(outLen) || outLen < 1) throw new RangeError("Blake3Key.hash: outLen must be a positive integer");
    if (data.byteLength <= BLAKE3_CHUNK_BYTES && outLen <= BLOCK_BYTES) return hashChunk(this.#words, this.#flags, data, outLen);
    if (this.#context !== undefined) return nobleBlake3(data, { context: this.#context, dkLen: outLen });
    const key = wordBytes(this.#words);
    try {
      return nobleBlake3(data, { key, dkLen: outLen });
    } finally {
      key.fill(0);
    }
  }

  toJSON(): { blake3: "keyed" | "derive" } {
    return { blake3: this.#context === undefined ? "keyed" : "derive" };
  }

  [inspectSymbol](): string {
    return `Blake3Key(${this.#context === undefined ? "keyed" : "derive"})`;
  }
}
