import { aeadDecrypt, aeadEncrypt, AeadSize } from "./aead.js";
import { concatBytes, constantTimeEqual, ownBytes } from "./encoding.js";
import { DecryptError } from "./errors.js";
import { Blake3Key } from "./blake3-key.js";
import { InvalidKeyError } from "./errors.js";
import { agreementPublicKey, ephemeralAgreement, ephemeralAgreementKey, x25519SharedSecret } from "./x25519.js";
import { isVerifiedId, rememberVerifiedId, strictEd25519Encoding, verifiedIdOf, verifyWellFormedWithId } from "./ed25519.js";
import type { SignatureCheck } from "./ed25519.js";
import { poolSize, runOnPool, urgentWorkHere } from "./crypto-pool.js";
import { asBuffer, nativeSodium } from "./native-sodium.js";
import type { NativeSodium } from "./native-sodium.js";
import type { PoolJob } from "./crypto-pool.js";

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

/**
 * BLAKE3-derive_key(kdfContext, ·), prepared once (blake3-key.ts): about a
 * microsecond per box against 10–50 µs for a clone of a @noble hasher with
 * the context absorbed, which a cold rekey's 1,000 boxes paid on the
 * owner's thread. Byte-identical: the sealed-box vectors and the tests
 * open every box with the @noble reference.
 */
const sealKdf = Blake3Key.deriveKey(SealedBox.kdfContext);
const KDF_SCRUB = new Uint8Array(96);

/** `okm = key ‖ nonce` of one box from its 96-byte material; the caller zeroes both. */
function deriveOkm(material: Uint8Array): Uint8Array {
  const okm = sealKdf.hash(material, AeadSize.key + AeadSize.nonce);
  // The prepared hasher keeps its last block and output words until its
  // next use: hashing zeros at once leaves nothing of this box's secret in
  // a long-lived object (threat: a heap dump or a later bug reading it).
  sealKdf.hash(KDF_SCRUB, AeadSize.key + AeadSize.nonce).fill(0);
  return okm;
}

function deriveKeyAndNonce(shared: Uint8Array, epk: Uint8Array, rpk: Uint8Array): { key: Uint8Array; nonce: Uint8Array } {
  // Binding both public keys stops a box re-targeted at another recipient (or
  // with a substituted epk mapping to the same shared secret) from opening.
  const material = concatBytes(shared, epk, rpk);
  const okm = deriveOkm(material);
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
  if (nativeSeal !== undefined) return sealToManyNative(nativeSeal, recipientAgreementPublicKeys, plaintext);
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

/** libsodium's X25519 and XChaCha20-Poly1305, when sodium-native has them. */
type SodiumSeal = Required<Pick<NativeSodium, "crypto_scalarmult" | "crypto_scalarmult_base" | "crypto_aead_xchacha20poly1305_ietf_encrypt" | "randombytes_buf">>;

function sodiumSeal(s: NativeSodium | undefined): SodiumSeal | undefined {
  if (s === undefined) return undefined;
  const ok = typeof s.crypto_scalarmult === "function" && typeof s.crypto_scalarmult_base === "function" && typeof s.crypto_aead_xchacha20poly1305_ietf_encrypt === "function" && typeof s.randombytes_buf === "function";
  return ok ? (s as SodiumSeal) : undefined;
}

/** The libsodium path of {@link sealToMany}; tests switch it off. */
let nativeSeal = sodiumSeal(nativeSodium);

/** Whether {@link sealToMany} seals through libsodium; returns whether it now does. For tests (not exported from the package). */
export function useNativeSealingForTests(on: boolean): boolean {
  nativeSeal = on ? sodiumSeal(nativeSodium) : undefined;
  return nativeSeal !== undefined;
}

/**
 * {@link sealToMany} through libsodium: the same X25519 and
 * XChaCha20-Poly1305 (the pool's workers seal this way too; the tests open
 * every box, also with the @noble reference), without node:crypto's key
 * import per recipient and cipher set-up beside a JavaScript HChaCha20,
 * which made the calling thread's share of a cold rekey's sealing about a
 * third dearer. The ephemeral secret lives in one buffer of this call,
 * zeroed before it returns whatever happens, so it can never seal a second
 * plaintext.
 */
function sealToManyNative(sodium: SodiumSeal, recipientAgreementPublicKeys: readonly Uint8Array[], plaintext: Uint8Array): (Uint8Array | null)[] {
  const esk = Buffer.alloc(32);
  const shared = Buffer.alloc(32);
  const material = new Uint8Array(96);
  try {
    sodium.randombytes_buf(esk);
    const epk = Buffer.alloc(32);
    sodium.crypto_scalarmult_base(epk, esk);
    const header = new Uint8Array(SealedBox.headerLength);
    header[0] = SealedBox.version;
    header.set(epk, 1);
    const pt = asBuffer(plaintext);
    const boxLength = SealedBox.headerLength + plaintext.byteLength + AeadSize.tag;
    return recipientAgreementPublicKeys.map((rpk) => {
      if (!(rpk instanceof Uint8Array) || rpk.byteLength !== 32) return null;
      try {
        // libsodium throws where the result is all zeros (a low-order key); checked here too, as sealTo refuses it.
        sodium.crypto_scalarmult(shared, esk, asBuffer(rpk));
      } catch {
        return null;
      }
      let acc = 0;
      for (const b of shared) acc |= b;
      if (acc === 0) return null;
      // Both public keys bound, as in deriveKeyAndNonce.
      material.set(shared, 0);
      material.set(epk, 32);
      material.set(rpk, 64);
      shared.fill(0);
      const okm = deriveOkm(material);
      material.fill(0);
      const box = new Uint8Array(boxLength);
      box.set(header, 0);
      const body = Buffer.from(box.buffer, box.byteOffset + SealedBox.headerLength, boxLength - SealedBox.headerLength);
      try {
        sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(body, pt, asBuffer(header), null, asBuffer(okm.subarray(AeadSize.key)), asBuffer(okm.subarray(0, AeadSize.key)));
      } finally {
        okm.fill(0);
      }
      return box;
    });
  } finally {
    esk.fill(0);
    shared.fill(0);
    material.fill(0);
  }
}

/**
 * {@link sealToMany} with a caller-chosen ephemeral secret. For test vectors
 * only. Not exported from the package.
 */
export function sealToManyWithEphemeralSecret(recipientAgreementPublicKeys: readonly Uint8Array[], plaintext: Uint8Array, ephemeralSecretKey: Uint8Array): Uint8Array[] {
  return recipientAgreementPublicKeys.map((rpk) => sealWithEphemeralSecret(rpk, plaintext, ephemeralSecretKey));
}

/** One recipient of {@link sealToVerified}: an agreement key and the signed binding that makes it its owner's. */
export interface BoundRecipient {
  readonly agreementKey: Uint8Array;
  /**
   * The owner's signature over a statement that ends with {@link agreementKey}
   * (as the agreement-key statement does): checked before anything is sealed
   * to that key; a statement about any other key gets nothing.
   */
  readonly binding: SignatureCheck;
}

/** What {@link sealToVerified} gives each recipient. */
export interface VerifiedSeal {
  /** The box, or null when the binding did not verify or the key is malformed or low-order. */
  readonly box: Uint8Array | null;
  /** The binding verified (a caller may remember that; false also for a malformed key). */
  readonly verified: boolean;
}

/** Below this many recipients the sealing is done inline: a worker round trip costs more. */
const POOL_MIN_RECIPIENTS = 64;
/** Recipients per pool job (one ephemeral key each, sealed-box.md "Many recipients"). */
const POOL_SEAL_CHUNK = 64;
/** Per recipient in a seal job: verify flag, agreement key, then the binding's key, signature and data. */
const SEAL_RECORD_HEAD = 1 + 32 + 32 + 64;

function sealJob(recipients: readonly { r: BoundRecipient; verify: boolean }[], plaintext: Uint8Array, ephemeralSecretKey: Uint8Array | undefined): PoolJob {
  let size = 0;
  for (const { r } of recipients) size += SEAL_RECORD_HEAD + r.binding.data.byteLength;
  const blob = new Uint8Array(size);
  const ends = new Uint32Array(recipients.length);
  let o = 0;
  recipients.forEach(({ r, verify }, i) => {
    blob[o] = verify ? 1 : 0;
    blob.set(r.agreementKey, o + 1);
    blob.set(r.binding.publicKey, o + 33);
    blob.set(r.binding.signature, o + 65);
    blob.set(r.binding.data, o + SEAL_RECORD_HEAD);
    o += SEAL_RECORD_HEAD + r.binding.data.byteLength;
    ends[i] = o;
  });
  // A copy per job, transferred and zeroed by the worker when done.
  const pt = ownBytes(plaintext);
  const transfer = [blob.buffer, ends.buffer, pt.buffer as ArrayBuffer];
  const message: Record<string, unknown> = { kind: "seal", plaintext: pt, blob, ends, kdfContext: SealedBox.kdfContext };
  if (ephemeralSecretKey !== undefined) {
    const esk = ownBytes(ephemeralSecretKey);
    message.ephemeralSecret = esk;
    transfer.push(esk.buffer as ArrayBuffer);
  }
  return { message, transfer };
}

/** Well-formed, and the binding's statement ends with the very key to seal to (it binds that key, not another). */
function wellFormedRecipient(r: BoundRecipient): boolean {
  const b = r.binding as Partial<SignatureCheck> | undefined;
  if (!(r.agreementKey instanceof Uint8Array) || r.agreementKey.byteLength !== 32) return false;
  if (!(b?.publicKey instanceof Uint8Array) || b.publicKey.byteLength !== 32 || !(b.signature instanceof Uint8Array) || b.signature.byteLength !== 64) return false;
  // The pool's workers check only the equation: the encoding rules every path shares are applied here.
  if (!strictEd25519Encoding(b.publicKey, b.signature)) return false;
  return b.data instanceof Uint8Array && b.data.byteLength >= 32 && constantTimeEqual(b.data.subarray(b.data.byteLength - 32), r.agreementKey);
}

/** A well-formed recipient with its verified-set id, and whether its binding is still to be checked. */
interface SealTodo {
  readonly r: BoundRecipient;
  readonly index: number;
  readonly id: string | undefined;
  readonly verify: boolean;
}

/** Inline: verify each binding not verified yet, then one {@link sealToMany} call for those that verified. */
function sealInline(todo: readonly SealTodo[], plaintext: Uint8Array, ephemeralSecretKey: Uint8Array | undefined): VerifiedSeal[] {
  const recipients = todo.map((t) => t.r);
  const ok = todo.map((t) => !t.verify || verifyWellFormedWithId(t.r.binding, t.id));
  const keys = recipients.filter((_, i) => ok[i]).map((r) => r.agreementKey);
  const boxes = ephemeralSecretKey === undefined ? sealToMany(keys, plaintext) : keys.map((k) => sealOrNull(k, plaintext, ephemeralSecretKey));
  let j = 0;
  return recipients.map((_, i) => (ok[i] ? { box: boxes[j++] ?? null, verified: true } : { box: null, verified: false }));
}

function sealOrNull(rpk: Uint8Array, plaintext: Uint8Array, esk: Uint8Array): Uint8Array | null {
  try {
    return sealWithEphemeralSecret(rpk, plaintext, esk);
  } catch (err) {
    if (err instanceof InvalidKeyError) return null;
    throw err;
  }
}

/**
 * Seals ONE plaintext to every recipient whose binding verifies, as
 * {@link sealToMany} does, and to no other: each binding is checked first,
 * in the same step that seals to its key (threat: a key the server
 * substituted for a member's would let it open that member's share). A
 * binding this process already verified is not checked again. Sets with
 * many bindings still to check run on the crypto pool (one ephemeral key per
 * slice, sealed-box.md "Many recipients"), so a cold rekey's checks and
 * X25519 agreements use every core while the caller's event loop verifies
 * the membership log; if the pool fails, the same work runs inline. Never sends the plaintext anywhere
 * but the pool's threads of this process, which zero their copy.
 */
export function sealToVerified(recipients: readonly BoundRecipient[], plaintext: Uint8Array, opts: SealToVerifiedOptions = {}): Promise<VerifiedSeal[]> {
  return sealToVerifiedWith(recipients, plaintext, opts);
}

/** Options of {@link sealToVerified}. */
export interface SealToVerifiedOptions {
  /**
   * Once this settles, the calling thread seals the slices no worker has
   * taken yet (inline, yielding between slices): a caller whose own work
   * (a log sync) is done should not wait idle on a busy pool.
   */
  helpAfter?: Promise<unknown>;
}

/**
 * {@link sealToVerified} with knobs for tests (not exported from the
 * package): a caller-chosen ephemeral secret (test vectors only: see
 * {@link sealWithEphemeralSecret}) and `inline` to skip the pool.
 */
export async function sealToVerifiedWith(recipients: readonly BoundRecipient[], plaintext: Uint8Array, opts: SealToVerifiedOptions & { ephemeralSecretKey?: Uint8Array; inline?: boolean }): Promise<VerifiedSeal[]> {
  const out: VerifiedSeal[] = recipients.map(() => ({ box: null, verified: false }));
  // One verified-set id per binding, hashed once for the lookup, the check and the remembering.
  const todo: SealTodo[] = [];
  recipients.forEach((r, index) => {
    if (!wellFormedRecipient(r)) return;
    const id = verifiedIdOf(r.binding);
    todo.push({ r, index, id, verify: !isVerifiedId(id) });
  });
  // The pool pays when there are checks to run beside the agreements (a cold
  // rekey); sealing alone to bindings already verified costs about as much
  // inline as the hand-off, and inline it never waits behind a busy pool.
  const checks = todo.reduce((n, t) => n + (t.verify ? 1 : 0), 0);
  const inline = (slice: readonly SealTodo[]): void => {
    sealInline(slice, plaintext, opts.ephemeralSecretKey).forEach((s, j) => (out[slice[j]!.index] = s));
  };
  if (opts.inline === true || todo.length < POOL_MIN_RECIPIENTS || checks < POOL_MIN_RECIPIENTS || poolSize() === 0) {
    inline(todo);
    return out;
  }
  const slices: SealTodo[][] = [];
  for (let k = 0; k < todo.length; k += POOL_SEAL_CHUNK) slices.push(todo.slice(k, k + POOL_SEAL_CHUNK));
  let next = 0;
  // Each worker holds two slices at most, so it never idles between them,
  // and the rest wait here: the caller's thread takes them too.
  const onPool = async (): Promise<void> => {
    for (let slice = slices[next++]; slice !== undefined; slice = slices[next++]) {
      let reply: Record<string, unknown> | undefined;
      try {
        reply = await runOnPool(sealJob(slice, plaintext, opts.ephemeralSecretKey));
      } catch {
        reply = undefined;
      }
      if (reply === undefined) {
        // The pool failed: the same checks and sealing, here.
        inline(slice);
        continue;
      }
      const status = reply.status as Uint8Array;
      const boxes = reply.boxes as Uint8Array;
      const boxLength = reply.boxLength as number;
      slice.forEach((t, j) => {
        if (status[j] === 0) return;
        if (t.verify) rememberVerifiedId(t.id);
        out[t.index] = { box: status[j] === 1 ? boxes.slice(j * boxLength, (j + 1) * boxLength) : null, verified: true };
      });
    }
  };
  const here = async (helpAfter: Promise<unknown>): Promise<void> => {
    let done = false;
    let failed = false;
    void helpAfter.then(
      () => (done = true),
      () => (failed = true),
    );
    for (let slice = slices[next++]; slice !== undefined; slice = slices[next++]) {
      // Before the caller's own work is done (a log sync waiting on its
      // pages and checks), this thread seals only while it has nothing
      // urgent (see urgentWorkHere), in short pieces with a turn of the
      // event loop between them, so an arriving page waits one piece at
      // most; the log's checks stay first, the bindings fill the idle time.
      for (let k = 0; k < slice.length; ) {
        while (!done && !failed && urgentWorkHere()) await new Promise((r) => setTimeout(r, 1));
        // A caller whose own work failed helps no further (the pool takes the slices left): this slice is finished at once.
        const end = done || failed ? slice.length : Math.min(slice.length, k + IDLE_SEAL_PIECE);
        inline(slice.slice(k, end));
        k = end;
        if (failed) return;
        // Between pieces, so the pool's replies and the caller's pages are taken in meanwhile.
        await new Promise((r) => setImmediate(r));
      }
    }
  };
  const runners = Array.from({ length: 2 * poolSize() }, onPool);
  if (opts.helpAfter !== undefined) runners.push(here(Promise.resolve(opts.helpAfter)));
  await Promise.all(runners);
  return out;
}

/** Recipients the caller's thread seals at a time before its own work is done: about 2 ms, so an arriving page is not held up. */
const IDLE_SEAL_PIECE = 16;

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
