/**
 * The room message frame (contracts/specs/frames.md): one AEAD operation and
 * one Ed25519 signature over a batch of messages from one sender.
 *
 * Layout (big-endian integers):
 *
 *   header  = u8 version | u8 roomLen | room | u32 epoch | 32 sender key
 *             | u64 counter | u16 count | 24 nonce
 *   body    = XChaCha20-Poly1305(roomKey[epoch], nonce, plaintext, AD = header)
 *   trailer = v2: Ed25519(sender, 0xFF | "unibus-room-frame-v2" | header | SHA-256(body))
 *             v1: Ed25519(sender, 0xFF | "unibus-room-frame-v1" | header | body)
 *   plaintext = count × (u32 length | message bytes)
 *
 * Message i of the frame has counter `counter + i`. Senders write v2 (the
 * signature hashes the body once with SHA-256 instead of twice with SHA-512
 * inside Ed25519); receivers read both, so stored v1 frames stay readable.
 */
import { aeadDecrypt, aeadEncryptInto, AeadSize, markStatement, principalFromPublicKey, randomBytes, sha256, verifySignatureUncached } from "@unibus/crypto";
import type { SigningKey } from "@unibus/crypto";

/** Frame format constants (contracts/specs/frames.md §Layout). */
export const FrameFormat = {
  /** The version senders write: the signature covers SHA-256 of the body. */
  version: 2,
  /** The first version: the signature covers the body itself. Read (stored history), written only when asked. */
  legacyVersion: 1,
  /** Signature domain of v2: a frame signature can never be mistaken for an envelope or share signature, nor for a v1 frame's. */
  domain: "unibus-room-frame-v2",
  legacyDomain: "unibus-room-frame-v1",
  bodyDigestBytes: 32,
  senderKeyBytes: 32,
  signatureBytes: 64,
  nonceBytes: AeadSize.nonce,
  tagBytes: AeadSize.tag,
  maxRoomIdBytes: 128,
  /** A frame carries 1..maxMessages messages (u16 on the wire; the SDK caps lower). */
  maxMessages: 0xffff,
  /** Counters stay within JavaScript's exact integer range. */
  maxCounter: Number.MAX_SAFE_INTEGER,
} as const;

/** 0xFF marker then the label: no connect nonce (always a string) can equal signed frame bytes. */
const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder();
const DOMAIN_BYTES = markStatement(utf8Encoder.encode(FrameFormat.domain));
const LEGACY_DOMAIN_BYTES = markStatement(utf8Encoder.encode(FrameFormat.legacyDomain));
const FIXED_HEADER_BYTES = 1 + 1 + 4 + FrameFormat.senderKeyBytes + 8 + 2 + FrameFormat.nonceBytes;
const ROOM_ID_RE = /^[A-Za-z0-9_-]{1,128}$/;

/**
 * Bytes a frame of room `roomId` adds around its messages (header, AEAD tag,
 * signature); each message adds 4 more for its length prefix.
 */
export function frameOverheadBytes(roomId: string): number {
  assertRoomId(roomId);
  // The id is ASCII (assertRoomId), one byte per character.
  return FIXED_HEADER_BYTES + roomId.length + FrameFormat.tagBytes + FrameFormat.signatureBytes;
}

/** Why a received frame was not delivered. Every reject surfaces as an event, never silently. */
export const RejectReason = {
  malformed: "malformed",
  wrongRoom: "wrong_room",
  badSignature: "bad_signature",
  unknownEpoch: "unknown_epoch",
  replay: "replay",
  /** A live frame whose counter (the sender's clock) is outside the receiver's freshness bound. */
  stale: "stale",
  decryptFailed: "decrypt_failed",
  /** The signer is not in the epoch's verified membership (e.g. a removed member). */
  senderNotMember: "sender_not_member",
} as const;
/** One of the {@link RejectReason} values. */
export type RejectReason = (typeof RejectReason)[keyof typeof RejectReason];

/** A frame that failed a check; `reason` is the reject event's reason. */
export class FrameError extends Error {
  override readonly name = "FrameError";
  constructor(
    readonly reason: RejectReason,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Inputs of {@link sealFrame}. `nonce` is for test vectors only; leave it out otherwise. */
export interface SealFrameInput {
  roomId: string;
  epoch: number;
  key: Uint8Array;
  signer: SigningKey;
  /** Counter of the first message. */
  counter: number;
  messages: readonly Uint8Array[];
  nonce?: Uint8Array;
  /** Format to write; default {@link FrameFormat.version}. `1` is for vectors and compatibility tests. */
  version?: 1 | 2;
}

/** A parsed, not yet authenticated frame (fields are the sender's claims until verified). */
export interface ParsedFrame {
  version: number;
  roomId: string;
  epoch: number;
  senderKey: Uint8Array;
  counter: number;
  count: number;
  nonce: Uint8Array;
  /** The associated data: every header byte. */
  header: Uint8Array;
  ciphertext: Uint8Array;
  /** Over v2 domain | header | SHA-256(ciphertext), or v1 domain | header | ciphertext (see {@link frameSignatureValid}). */
  signature: Uint8Array;
}

// Big-endian integers read and written in place: a DataView per frame, per
// plaintext and per opened batch was an allocation on every message.
function putU32(b: Uint8Array, o: number, v: number): void {
  b[o] = v >>> 24;
  b[o + 1] = v >>> 16;
  b[o + 2] = v >>> 8;
  b[o + 3] = v;
}

function getU32(b: Uint8Array, o: number): number {
  return b[o]! * 0x100_0000 + ((b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!);
}

function assertRoomId(roomId: string): void {
  if (!ROOM_ID_RE.test(roomId)) throw new RangeError("room id must match [A-Za-z0-9_-]{1,128}");
}

function assertEpoch(epoch: number): void {
  if (!Number.isInteger(epoch) || epoch < 0 || epoch > 0xffffffff) throw new RangeError("epoch must be a u32");
}

/** v2's signed statement: 0xFF | label | header | SHA-256(body), about 150 bytes whatever the body's size. */
function signedV2(header: Uint8Array, body: Uint8Array, into?: Uint8Array): Uint8Array {
  const len = DOMAIN_BYTES.byteLength + header.byteLength + FrameFormat.bodyDigestBytes;
  const out = into !== undefined && into.byteLength >= len ? into.subarray(0, len) : new Uint8Array(len);
  out.set(DOMAIN_BYTES, 0);
  out.set(header, DOMAIN_BYTES.byteLength);
  out.set(sha256(body), DOMAIN_BYTES.byteLength + header.byteLength);
  return out;
}

/**
 * The v2 statement of the frame being sealed or verified, reused: it is
 * public (header and body digest) and `sign`/verify read it synchronously,
 * so nothing holds it once the call returns, and a fresh buffer per frame
 * (over 64 bytes, so off-heap: one more array buffer for every scavenge to
 * sweep) would be garbage only.
 */
const statementScratch = new Uint8Array(DOMAIN_BYTES.byteLength + FIXED_HEADER_BYTES + FrameFormat.maxRoomIdBytes + FrameFormat.bodyDigestBytes);

/** Nonces drawn per CSPRNG call (about 4 KiB). */
const NONCES_PER_DRAW = 170;
let noncePool: Uint8Array = new Uint8Array(0);
let nonceAt = 0;

/**
 * A fresh random 24-byte nonce. One CSPRNG call per frame cost 16–25 µs
 * here (against ~1 µs for the rest of a small frame's bookkeeping), so
 * nonces are cut from a pool of CSPRNG bytes drawn 170 at a time; each
 * slot is handed out once and wiped from the pool, so no two frames share
 * a nonce (a reused (key, nonce) pair would reveal plaintext XORs).
 */
function freshNonce(): Uint8Array {
  if (nonceAt + FrameFormat.nonceBytes > noncePool.byteLength) {
    noncePool = randomBytes(FrameFormat.nonceBytes * NONCES_PER_DRAW);
    nonceAt = 0;
  }
  const nonce = noncePool.slice(nonceAt, nonceAt + FrameFormat.nonceBytes);
  noncePool.fill(0, nonceAt, nonceAt + FrameFormat.nonceBytes);
  nonceAt += FrameFormat.nonceBytes;
  return nonce;
}

/** Above this size a frame's buffer is taken uninitialised and unpooled (every byte is written before it leaves). */
const UNINITIALISED_FRAME_MIN = 16 * 1024;
/** The reused plaintext scratch grows up to NATS's largest payload; a larger batch gets a buffer of its own. */
const SCRATCH_MAX = 1024 * 1024;
let scratch = new Uint8Array(0);

/** The sealer's plaintext scratch, grown to the largest batch seen (one per process: sealing is synchronous). */
function plaintextScratch(bytes: number): Uint8Array {
  if (bytes > SCRATCH_MAX) return new Uint8Array(bytes);
  if (scratch.byteLength < bytes) scratch = new Uint8Array(Math.min(SCRATCH_MAX, Math.max(bytes, 2 * scratch.byteLength)));
  return scratch;
}

/** Internal, for tests (not exported by the package): true when the plaintext scratch holds no message bytes. */
export function sealScratchWiped(): boolean {
  return scratch.every((b) => b === 0);
}

/**
 * A buffer for a whole frame. Large ones skip the zero fill (a fresh zeroed
 * 256 KiB buffer costs about as much as its AEAD here); sealFrame writes
 * every byte of it, header, ciphertext and signature, so nothing of the old
 * memory can leave. Small ones come zeroed and never from Node's shared pool.
 */
function frameBuffer(bytes: number): Uint8Array {
  if (bytes < UNINITIALISED_FRAME_MIN) return new Uint8Array(bytes);
  const b = Buffer.allocUnsafeSlow(bytes);
  return new Uint8Array(b.buffer, b.byteOffset, bytes);
}

/**
 * Encrypts and signs a batch of messages into one frame. v2 signs the
 * header and a SHA-256 digest of the body; v1 signs the body itself (the
 * buffer is then laid out as domain | frame so the signature is computed
 * over a subarray, with no copy of the ciphertext).
 */
export function sealFrame(input: SealFrameInput): Uint8Array {
  const { roomId, epoch, key, signer, counter, messages } = input;
  const version = input.version ?? FrameFormat.version;
  if (version !== FrameFormat.version && version !== FrameFormat.legacyVersion) throw new RangeError("frame version must be 1 or 2");
  assertRoomId(roomId);
  assertEpoch(epoch);
  const count = messages.length;
  if (count < 1 || count > FrameFormat.maxMessages) throw new RangeError("a frame carries 1..65535 messages");
  // Compared as counter > max - (count - 1): the sum can round past 2^53 and compare equal to the bound.
  if (!Number.isSafeInteger(counter) || counter < 0 || counter > FrameFormat.maxCounter - (count - 1)) throw new RangeError("counter out of range");
  const nonce = input.nonce ?? freshNonce();
  if (nonce.byteLength !== FrameFormat.nonceBytes) throw new RangeError("nonce must be 24 bytes");

  let plainLen = 0;
  for (const m of messages) plainLen += 4 + m.byteLength;
  // The plaintext is laid out in one reused scratch buffer and wiped after
  // use: a fresh zeroed buffer of a 256 KiB batch costs as much as its AEAD.
  const plaintext = plaintextScratch(plainLen);
  let p = 0;
  for (const m of messages) {
    putU32(plaintext, p, m.byteLength);
    plaintext.set(m, p + 4);
    p += 4 + m.byteLength;
  }

  const headerLen = FIXED_HEADER_BYTES + roomId.length;
  const d = version === FrameFormat.legacyVersion ? LEGACY_DOMAIN_BYTES.byteLength : 0;
  const bodyLen = plainLen + FrameFormat.tagBytes;
  const buf = frameBuffer(d + headerLen + bodyLen + FrameFormat.signatureBytes);
  if (d > 0) buf.set(LEGACY_DOMAIN_BYTES, 0);
  let o = d;
  buf[o++] = version;
  buf[o++] = roomId.length;
  // ASCII (assertRoomId): written in place rather than encoded into a buffer of its own per frame.
  for (let i = 0; i < roomId.length; i++) buf[o + i] = roomId.charCodeAt(i);
  o += roomId.length;
  putU32(buf, o, epoch);
  o += 4;
  buf.set(signer.publicKey, o);
  o += FrameFormat.senderKeyBytes;
  putU32(buf, o, Math.floor(counter / 0x1_0000_0000));
  putU32(buf, o + 4, counter % 0x1_0000_0000);
  o += 8;
  buf[o] = count >>> 8;
  buf[o + 1] = count;
  o += 2;
  buf.set(nonce, o);
  o += FrameFormat.nonceBytes;
  const header = buf.subarray(d, o);
  try {
    aeadEncryptInto(key, nonce, plaintext.subarray(0, plainLen), header, buf, o);
  } finally {
    plaintext.fill(0, 0, plainLen);
  }
  const body = buf.subarray(o, o + bodyLen);
  o += bodyLen;
  buf.set(signer.sign(d > 0 ? buf.subarray(0, o) : signedV2(header, body, statementScratch)), o);
  return buf.subarray(d);
}

/** Parses a frame's structure; throws {@link FrameError} `malformed` on any inconsistency. */
export function parseFrame(frame: Uint8Array): ParsedFrame {
  const bad = (why: string): FrameError => new FrameError(RejectReason.malformed, `malformed frame: ${why}`);
  if (frame.byteLength < FIXED_HEADER_BYTES + 1 + FrameFormat.tagBytes + FrameFormat.signatureBytes) throw bad("too short");
  const version = frame[0]!;
  if (version !== FrameFormat.version && version !== FrameFormat.legacyVersion) throw bad(`unsupported version ${version}`);
  const roomLen = frame[1]!;
  if (roomLen < 1 || roomLen > FrameFormat.maxRoomIdBytes) throw bad("room id length");
  const headerLen = FIXED_HEADER_BYTES + roomLen;
  if (frame.byteLength < headerLen + FrameFormat.tagBytes + 4 + FrameFormat.signatureBytes) throw bad("too short");
  let o = 2;
  const roomId = utf8Decoder.decode(frame.subarray(o, o + roomLen));
  if (!ROOM_ID_RE.test(roomId)) throw bad("room id charset");
  o += roomLen;
  const epoch = getU32(frame, o);
  o += 4;
  const senderKey = frame.subarray(o, o + FrameFormat.senderKeyBytes);
  o += FrameFormat.senderKeyBytes;
  const hi = getU32(frame, o);
  const lo = getU32(frame, o + 4);
  o += 8;
  if (hi > 0x1fffff) throw bad("counter beyond 2^53");
  const counter = hi * 0x1_0000_0000 + lo;
  const count = (frame[o]! << 8) | frame[o + 1]!;
  o += 2;
  if (count < 1) throw bad("empty frame");
  if (counter > FrameFormat.maxCounter - (count - 1)) throw bad("counter beyond 2^53");
  const nonce = frame.subarray(o, o + FrameFormat.nonceBytes);
  o += FrameFormat.nonceBytes;
  const sigStart = frame.byteLength - FrameFormat.signatureBytes;
  // Each message costs at least its 4-byte length prefix.
  if (sigStart - o < FrameFormat.tagBytes + 4 * count) throw bad("ciphertext shorter than count");
  return {
    version,
    roomId,
    epoch,
    senderKey,
    counter,
    count,
    nonce,
    header: frame.subarray(0, o),
    ciphertext: frame.subarray(o, sigStart),
    signature: frame.subarray(sigStart),
  };
}

/**
 * True iff the frame's signature is the claimed sender's over its version's
 * statement: v2 domain | header | SHA-256(ciphertext), built in the reused
 * statement buffer (public bytes, read synchronously by the verify); v1
 * domain | header | ciphertext. Uncached: every frame's statement is new
 * (fresh nonce), so the verified-once cache would only add a hash and a
 * retained entry per frame.
 */
export function frameSignatureValid(f: ParsedFrame): boolean {
  if (f.version === FrameFormat.version) return verifySignatureUncached(f.senderKey, signedV2(f.header, f.ciphertext, statementScratch), f.signature);
  const signed = new Uint8Array(LEGACY_DOMAIN_BYTES.byteLength + f.header.byteLength + f.ciphertext.byteLength);
  signed.set(LEGACY_DOMAIN_BYTES, 0);
  signed.set(f.header, LEGACY_DOMAIN_BYTES.byteLength);
  signed.set(f.ciphertext, LEGACY_DOMAIN_BYTES.byteLength + f.header.byteLength);
  return verifySignatureUncached(f.senderKey, signed, f.signature);
}

/**
 * Decrypts an already signature-checked frame and splits its messages.
 * Throws {@link FrameError} `decrypt_failed` (wrong key, tampered bytes) or
 * `malformed` (the plaintext does not hold exactly `count` messages).
 */
export function openFrame(f: ParsedFrame, key: Uint8Array): Uint8Array[] {
  let plaintext: Uint8Array;
  try {
    plaintext = aeadDecrypt(key, f.nonce, f.ciphertext, f.header);
  } catch (cause) {
    throw new FrameError(RejectReason.decryptFailed, "frame did not decrypt", { cause });
  }
  const out: Uint8Array[] = [];
  let o = 0;
  for (let i = 0; i < f.count; i++) {
    if (o + 4 > plaintext.byteLength) throw new FrameError(RejectReason.malformed, "malformed frame: message length");
    const len = getU32(plaintext, o);
    o += 4;
    if (o + len > plaintext.byteLength) throw new FrameError(RejectReason.malformed, "malformed frame: message length");
    out.push(plaintext.subarray(o, o + len));
    o += len;
  }
  if (o !== plaintext.byteLength) throw new FrameError(RejectReason.malformed, "malformed frame: trailing bytes");
  return out;
}

/** The `U…` principal of a frame's sender key. */
export function senderPrincipal(f: ParsedFrame): string {
  return principalFromPublicKey(f.senderKey);
}
