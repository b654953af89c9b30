import { createPrivateKey, createPublicKey, sign as nodeSign, verify as nodeVerify } from "node:crypto";
import type { KeyObject } from "node:crypto";
import { poolSize, runOnPool } from "./crypto-pool.js";
import type { PoolJob } from "./crypto-pool.js";
import { fromHex, ownBytes, randomBytes, toHex } from "./encoding.js";
import { InvalidKeyError } from "./errors.js";
import { sha256 } from "./hash.js";
import { asBuffer, nativeSodium } from "./native-sodium.js";
import type { NativeSodium } from "./native-sodium.js";
import { NkeyPrefix, decodeNkeySeed, encodeNkeyPublic, encodeNkeySeed } from "./nkey.js";
import { isSignatureMadeBy } from "./own-signature.js";

// DER wrapper that lets node:crypto import a raw Ed25519 seed (RFC 8410).
// Public keys go through JWK (RFC 8037 "OKP"): the same raw key reaches
// OpenSSL, at ~1–20 µs per import/export instead of ~100–250 µs for DER/SPKI.
const PKCS8_ED25519_PREFIX = fromHex("302e020100300506032b657004220420");

const inspectSymbol = Symbol.for("nodejs.util.inspect.custom");

/**
 * Above this many bytes node:crypto signs faster: Ed25519 hashes the message
 * with SHA-512 (twice), which OpenSSL's vectorised SHA-512 does ~1.5× faster
 * than libsodium's portable one, and past ~16 KiB that outweighs OpenSSL's
 * fixed per-call set-up (~42 µs against libsodium's ~24 µs for a short
 * message). Measured here: 110 KB (the login JWT of a principal in 1,000
 * rooms) 480–560 µs through node:crypto vs 800–1,700 µs; 8 KiB 56–69 µs vs
 * 63–107 µs.
 */
export const LARGE_SIGNATURE_BYTES = 16 * 1024;

/** The libsodium signing calls, when sodium-native loaded with them; tests switch them off. */
type NativeSigning = Required<Pick<NativeSodium, "crypto_sign_seed_keypair" | "crypto_sign_detached">>;
function nativeSigningOf(s: NativeSodium | undefined): NativeSigning | undefined {
  return typeof s?.crypto_sign_seed_keypair === "function" && typeof s.crypto_sign_detached === "function" ? (s as NativeSigning) : undefined;
}
let nativeSigning = nativeSigningOf(nativeSodium);

/** Which library signs messages up to {@link LARGE_SIGNATURE_BYTES} (benches print it). */
export function signingBackend(): "libsodium" | "node:crypto" {
  return nativeSigning === undefined ? "node:crypto" : "libsodium";
}

/** Which path signs: node:crypto when `on` is false or sodium-native did not load. For tests (not exported from the package). */
export function useNativeSigningForTests(on: boolean): boolean {
  nativeSigning = on ? nativeSigningOf(nativeSodium) : undefined;
  return nativeSigning !== undefined;
}

// The secret key sits on the heap like the seed it is made of (the seed is
// its first half), so it adds no exposure; a library that derived another
// public key would sign statements nobody accepts, so that key keeps the
// node:crypto path (null).
function sodiumSecretKey(s: NativeSigning, seed: Uint8Array, publicKey: Uint8Array): Buffer | null {
  const secret = Buffer.alloc(64);
  const pk = Buffer.alloc(32);
  s.crypto_sign_seed_keypair(pk, secret, asBuffer(seed));
  if (pk.equals(asBuffer(publicKey))) return secret;
  secret.fill(0);
  return null;
}

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
  /** libsodium's 64-byte secret key (seed ‖ public key), made on the first native signature; null when the library derived another key. */
  #sodiumSecret: Buffer | null | undefined;
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

  /**
   * Ed25519 signature (64 bytes) over `data`: through libsodium when it
   * loaded and `data` is at most {@link LARGE_SIGNATURE_BYTES}, else
   * node:crypto. Both give the same bytes (Ed25519 is deterministic).
   */
  sign(data: Uint8Array): Uint8Array {
    if (data.byteLength <= LARGE_SIGNATURE_BYTES && nativeSigning !== undefined) {
      const secret = this.#sodiumSecret ??= sodiumSecretKey(nativeSigning, this.#seed, this.publicKey);
      if (secret !== null) {
        const signature = new Uint8Array(64);
        nativeSigning.crypto_sign_detached(asBuffer(signature), asBuffer(data), secret);
        return signature;
      }
    }
    return ownBytes(nodeSign(null, data, this.#privateKey));
  }

  /**
   * True when `signature` is exactly this key's own signature over `data`.
   * Ed25519 signing is deterministic, so signing `data` again and comparing
   * proves the signature verifies, at about a third of a verification's cost
   * (22 µs against 60 µs through libsodium here): a client syncing a log
   * checks the entries it signed itself this way. False says only "not the
   * signature this key makes": another valid signature by this key (a signer
   * with random nonces) is not recognised, so a caller verifies on false.
   * The signature made here is compared in constant time and never leaves
   * this call, so data chosen by someone else (a service's page) learns them
   * nothing but whether the signature they supplied is this one. Never throws.
   */
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

/** One signature to check: `signature` by `publicKey` over `data`. */
export interface SignatureCheck {
  readonly publicKey: Uint8Array;
  readonly data: Uint8Array;
  readonly signature: Uint8Array;
}

/**
 * Signatures this process already verified, by SHA-256(publicKey |
 * signature | data): a cold rekey or log sync checks the same statements a
 * second time (a retried round, the users log and a room log sharing
 * entries' signers, a pool pre-check), and a hit costs one small hash
 * instead of a verify. Only successes are kept and the key commits to all
 * three inputs (collision resistance), so a hit is exactly "this triple
 * verified"; bounded, so distinct statements cannot grow memory. Statements
 * longer than CACHE_DATA_MAX (frames, bulk data) are never cached: they do
 * not repeat, and hashing them would only add work.
 */
const VERIFIED_MAX = 16_384;
const CACHE_DATA_MAX = 4_096;
const verified = new Set<string>();

function checkId(publicKey: Uint8Array, data: Uint8Array, signature: Uint8Array): string {
  // One short input and one call: a cold rekey looks up thousands of these.
  const input = new Uint8Array(96 + data.byteLength);
  input.set(publicKey, 0);
  input.set(signature, 32);
  input.set(data, 96);
  const id = sha256(input);
  return Buffer.from(id.buffer, id.byteOffset, id.byteLength).toString("base64");
}

function remember(id: string): void {
  verified.add(id);
  if (verified.size > VERIFIED_MAX) {
    const oldest = verified.values().next().value;
    if (oldest !== undefined) verified.delete(oldest);
  }
}

/**
 * The encodings of the points of order 1, 2, 4 and 8 (sign bit ignored),
 * as libsodium lists them: a signature "by" such a key proves nothing
 * (anyone can make one that verifies), and one whose R is such a point is
 * the other half of the same trick.
 */
const SMALL_ORDER = [
  "0000000000000000000000000000000000000000000000000000000000000000",
  "0100000000000000000000000000000000000000000000000000000000000000",
  "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
  "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
  "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
].map(fromHex);

/** First bytes of the encodings above, as a table: any other first byte is not of small order, decided by one load. */
const SMALL_ORDER_FIRST = new Uint8Array(256);
for (const s of SMALL_ORDER) SMALL_ORDER_FIRST[s[0]!] = 1;

/** The 32 bytes of `p` from `at` encode a point of small order. Read in place: R is checked inside the signature, with no view made per check. */
function smallOrder(p: Uint8Array, at = 0): boolean {
  // Every request, log entry and binding checks two of these: almost all keys are decided by their first byte.
  if (SMALL_ORDER_FIRST[p[at]!] === 0) return false;
  return SMALL_ORDER.some((s) => {
    for (let i = 0; i < 31; i++) if (p[at + i] !== s[i]) return false;
    return (p[at + 31]! & 0x7f) === s[31];
  });
}

/** y ≥ 2^255 − 19: a second spelling of a key that has a canonical one. */
function nonCanonicalPoint(p: Uint8Array): boolean {
  if ((p[31]! & 0x7f) !== 0x7f || p[0]! < 0xed) return false;
  for (let i = 1; i < 31; i++) if (p[i] !== 0xff) return false;
  return true;
}

/**
 * libsodium's encoding rules beyond RFC 8032's (which OpenSSL applies): the
 * public key is canonical and not of small order, and R is not of small
 * order. Applied on every path, native or not, so the answer never depends
 * on whether sodium-native loaded (a check refused natively is refused
 * everywhere); they only refuse signatures no honest signer makes.
 */
export function strictEd25519Encoding(publicKey: Uint8Array, signature: Uint8Array): boolean {
  return !nonCanonicalPoint(publicKey) && !smallOrder(publicKey) && !smallOrder(signature, 0);
}

function wellFormed(publicKey: unknown, data: unknown, signature: unknown): boolean {
  return publicKey instanceof Uint8Array && publicKey.byteLength === 32 && signature instanceof Uint8Array && signature.byteLength === 64 && data instanceof Uint8Array && strictEd25519Encoding(publicKey, signature);
}

/** libsodium when it loaded (about half of node:crypto's cost per check), else node:crypto; tests switch it off. */
let native = nativeSodium;

/** Which path verifies: the node:crypto one when `on` is false or sodium-native did not load. For tests (not exported from the package). */
export function useNativeEd25519ForTests(on: boolean): boolean {
  native = on ? nativeSodium : undefined;
  return native !== undefined;
}

/** One check on the current path without the verified set (for tests comparing the paths; not exported from the package). */
export function verifyUncachedForTests(publicKey: Uint8Array, data: Uint8Array, signature: Uint8Array): boolean {
  return verifySignatureUncached(publicKey, data, signature);
}

function verifyUncached(publicKey: Uint8Array, data: Uint8Array, signature: Uint8Array): boolean {
  try {
    if (native !== undefined) return native.crypto_sign_verify_detached(asBuffer(signature), asBuffer(data), asBuffer(publicKey));
    return nodeVerify(null, data, publicKeyObject(publicKey), signature);
  } catch {
    return false;
  }
}

/**
 * Verifies an Ed25519 signature with libsodium (sodium-native, when it
 * loads) or node:crypto (OpenSSL): RFC 8032 strict decoding, non-canonical
 * S refused, plus libsodium's rules on both paths (see
 * {@link strictEd25519Encoding}), so both give the same answer.
 * node:crypto KeyObjects are cached per public key
 * (bounded LRU) because importing a key costs about as much as a verify;
 * short statements that already verified in this process are answered from
 * the verified set above.
 * Never throws: any malformed input (wrong lengths, non-bytes, a public key
 * that is not a curve point) is simply `false`, so a hostile header cannot
 * crash a handler.
 */
export function verifySignature(publicKey: Uint8Array, data: Uint8Array, signature: Uint8Array): boolean {
  try {
    if (!wellFormed(publicKey, data, signature)) return false;
    if (data.byteLength > CACHE_DATA_MAX) return verifyUncached(publicKey, data, signature);
    const id = checkId(publicKey, data, signature);
    if (verified.has(id)) return true;
    const ok = verifyUncached(publicKey, data, signature);
    if (ok) remember(id);
    return ok;
  } catch {
    return false;
  }
}

/**
 * {@link verifySignature} for a statement that never repeats (a room frame:
 * each one carries a fresh nonce and counters, and a replayed one is refused
 * by the receiver's replay window anyway). It skips the verified-once cache:
 * there a frame would cost a SHA-256 and a retained id string per message,
 * 16,384 of them kept alive until evicted, which is work and garbage for a
 * hit that never comes. Never throws.
 */
export function verifySignatureUncached(publicKey: Uint8Array, data: Uint8Array, signature: Uint8Array): boolean {
  return wellFormed(publicKey, data, signature) && verifyUncached(publicKey, data, signature);
}

/** Below this many uncached checks a batch is verified inline: a worker round trip costs more. */
const POOL_MIN_BATCH = 64;
/** Checks per pool job: small enough that an urgent job soon finds a worker free. */
const POOL_CHUNK = 128;

/** One packed buffer (key | signature | data per check), transferred: no per-check clone of whatever larger buffer a view happens to sit in. */
function verifyJob(checks: readonly SignatureCheck[]): PoolJob {
  let size = 0;
  for (const c of checks) size += 96 + c.data.byteLength;
  const blob = new Uint8Array(size);
  const ends = new Uint32Array(checks.length);
  let o = 0;
  checks.forEach((c, i) => {
    blob.set(c.publicKey, o);
    blob.set(c.signature, o + 32);
    blob.set(c.data, o + 96);
    o += 96 + c.data.byteLength;
    ends[i] = o;
  });
  return { message: { kind: "verify", blob, ends }, transfer: [blob.buffer, ends.buffer] };
}

/** Remembers a check a worker verified (see the verified set above). */
export function rememberVerified(c: SignatureCheck): void {
  if (c.data.byteLength <= CACHE_DATA_MAX) remember(checkId(c.publicKey, c.data, c.signature));
}

/**
 * The verified set's id of a check already found well formed (as
 * {@link verifySignature} requires), or undefined for a statement too long
 * to keep: a caller holding many checks (sealing to a room's bindings)
 * hashes each once for the lookup, the check and the remembering, instead
 * of once per step. For sealed-box (not exported from the package).
 */
export function verifiedIdOf(c: SignatureCheck): string | undefined {
  return c.data.byteLength <= CACHE_DATA_MAX ? checkId(c.publicKey, c.data, c.signature) : undefined;
}

/** True when `id` (from {@link verifiedIdOf}) is of a check this process verified. */
export function isVerifiedId(id: string | undefined): boolean {
  return id !== undefined && verified.has(id);
}

/** Remembers the check of `id` (from {@link verifiedIdOf}) as verified; a worker's "yes" for it. */
export function rememberVerifiedId(id: string | undefined): void {
  if (id !== undefined) remember(id);
}

/** {@link verifySignature} of a check already found well formed, with its {@link verifiedIdOf} id at hand. Never throws. */
export function verifyWellFormedWithId(c: SignatureCheck, id: string | undefined): boolean {
  if (isVerifiedId(id)) return true;
  const ok = verifyUncached(c.publicKey, c.data, c.signature);
  if (ok) rememberVerifiedId(id);
  return ok;
}

/** True when this process already verified exactly this check (short statements only). */
export function alreadyVerified(c: SignatureCheck): boolean {
  return wellFormed(c.publicKey, c.data, c.signature) && c.data.byteLength <= CACHE_DATA_MAX && verified.has(checkId(c.publicKey, c.data, c.signature));
}

/** Options of {@link verifyMany}. */
export interface VerifyManyOptions {
  /**
   * The caller's own key: checks by its public key are answered by signing
   * again ({@link SigningKey.isOwnSignature}), on this thread, and only a
   * check that is not this key's own signature is verified. A log's entries
   * are mostly its reader's own when the reader is the room's owner.
   */
  readonly own?: SigningKey | undefined;
}

/** Equal 32-byte public keys (public data: no constant time). */
function sameKey(a: Uint8Array, b: Uint8Array): boolean {
  for (let i = 0; i < 32; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Verifies many signatures at once, the same as {@link verifySignature} on
 * each (and, like it, never throws). Checks this process already verified
 * are answered from memory; a large remainder is split across a pool of
 * worker threads (crypto-pool.ts), so a cold rekey's or log sync's
 * thousands of checks use every core; a caller waiting on them can check
 * the slices no worker has taken yet itself (helpCryptoPoolUntil). If a
 * worker fails, its checks are verified inline: a check is true only when a
 * verification said so.
 */
export async function verifyMany(checks: readonly SignatureCheck[], opts: VerifyManyOptions = {}): Promise<boolean[]> {
  const out = new Array<boolean>(checks.length).fill(false);
  const todo: number[] = [];
  const ids: (string | undefined)[] = [];
  const own = opts.own;
  checks.forEach((c, i) => {
    if (!wellFormed(c.publicKey, c.data, c.signature)) return;
    const id = c.data.byteLength > CACHE_DATA_MAX ? undefined : checkId(c.publicKey, c.data, c.signature);
    if (id !== undefined && verified.has(id)) out[i] = true;
    else if (own !== undefined && sameKey(c.publicKey, own.publicKey) && own.isOwnSignature(c.data, c.signature)) {
      out[i] = true;
      if (id !== undefined) remember(id);
    } else {
      todo.push(i);
      ids[i] = id;
    }
  });
  if (todo.length < POOL_MIN_BATCH || poolSize() === 0) {
    for (const i of todo) out[i] = verifySignature(checks[i]!.publicKey, checks[i]!.data, checks[i]!.signature);
    return out;
  }
  const slices: number[][] = [];
  for (let k = 0; k < todo.length; k += POOL_CHUNK) slices.push(todo.slice(k, k + POOL_CHUNK));
  await Promise.all(
    slices.map(async (slice) => {
      let res: Uint8Array | undefined;
      // The same checks on the caller's thread, if it takes the job before a worker does (helpCryptoPoolUntil).
      const here = (): Record<string, unknown> => ({ out: Uint8Array.from(slice, (i) => (verifySignature(checks[i]!.publicKey, checks[i]!.data, checks[i]!.signature) ? 1 : 0)) });
      try {
        // Urgent: a caller waits on these (a log page), while sealing is bulk work that can wait.
        res = (await runOnPool(verifyJob(slice.map((i) => checks[i]!)), true, here)).out as Uint8Array;
      } catch {
        res = undefined;
      }
      slice.forEach((i, j) => {
        if (res === undefined) out[i] = verifySignature(checks[i]!.publicKey, checks[i]!.data, checks[i]!.signature);
        else if (res[j] === 1) {
          out[i] = true;
          const id = ids[i];
          if (id !== undefined) remember(id);
        }
      });
    }),
  );
  return out;
}
