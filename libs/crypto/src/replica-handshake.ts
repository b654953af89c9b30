/**
 * Pure logic of the replica PSK handshake (contracts/specs/replica-handshake.md):
 * key derivation, the byte-exact MAC input, the identity transcript and the
 * session id. Shared by the replica gateway (acceptor) and the node-side
 * client (dialer) so the two can never encode a field differently. No I/O.
 */
import { Blake3Key } from "./blake3-key.js";
import { verifySignature } from "./ed25519.js";
import type { SigningKey } from "./ed25519.js";
import { constantTimeEqual, randomNonce, utf8 } from "./encoding.js";
import { markStatement } from "./statement-marker.js";

/** Handshake protocol version carried in `ReplicaHello.version`. */
export const REPLICA_HANDSHAKE_VERSION = 1;

/** BLAKE3 derive_key context strings; each one names exactly one purpose. */
export const ReplicaHandshakeContext = {
  /** PSK → 32-byte MAC key. */
  macKey: "unibus 2026 replica-handshake psk-mac v1",
  /** PSK → 8-byte public key id (selects current or previous PSK). */
  keyId: "unibus 2026 replica-handshake psk-id v1",
  /** Cluster name → 16-byte cluster id. */
  clusterId: "unibus 2026 replica-handshake cluster-id v1",
  /** Transcript → 16-byte session id. */
  sessionId: "unibus 2026 replica-handshake session-id v1",
} as const;

/** Labels that open the MAC input and the signed transcript (domain separation). */
export const ReplicaHandshakeLabel = {
  mac: "unibus replica-handshake mac v1",
  transcript: "unibus replica-handshake transcript v1",
} as const;

/**
 * The derive_key contexts prepared once per process: each derivation is then
 * one or two compressions of its input, with no per-call hash of the context.
 */
const kdf = {
  macKey: Blake3Key.deriveKey(ReplicaHandshakeContext.macKey),
  keyId: Blake3Key.deriveKey(ReplicaHandshakeContext.keyId),
  clusterId: Blake3Key.deriveKey(ReplicaHandshakeContext.clusterId),
  sessionId: Blake3Key.deriveKey(ReplicaHandshakeContext.sessionId),
} as const;

/** lp(label) of the MAC input and of the transcript, encoded once. */
const labelBytes = {
  mac: lp(utf8(ReplicaHandshakeLabel.mac)),
  transcript: lp(utf8(ReplicaHandshakeLabel.transcript)),
} as const;

/**
 * Direction byte at the end of the MAC input: a MAC made by one side can never
 * verify as the other side's, so a reflected `mac_a` fails as `mac_d`.
 */
export const ReplicaDirection = {
  /** Acceptor → dialer (`mac_a`, in the challenge). */
  acceptorToDialer: 0x01,
  /** Dialer → acceptor (`mac_d`, in the finish). */
  dialerToAcceptor: 0x02,
} as const;
/** One of the {@link ReplicaDirection} values. */
export type ReplicaDirection = (typeof ReplicaDirection)[keyof typeof ReplicaDirection];

/** Challenge / finish statuses; 0 is success, anything else is a reject. */
export const ReplicaHandshakeStatus = {
  Ok: 0,
  UnknownCommand: 1,
  ClusterMismatch: 2,
  DirectionalRule: 3,
  AuthRequired: 4,
  MacMismatch: 5,
  Expired: 6,
  /** A message that is not exactly its binary layout (truncated, trailing bytes, a bad id, oversize). */
  Malformed: 7,
} as const;
/** One of the {@link ReplicaHandshakeStatus} values. */
export type ReplicaHandshakeStatus = (typeof ReplicaHandshakeStatus)[keyof typeof ReplicaHandshakeStatus];

/** Smallest PSK accepted: 32 bytes, i.e. 256 bits from a CSPRNG. */
export const MIN_PSK_BYTES = 32;
/** Nonce length of both sides. */
export const REPLICA_NONCE_BYTES = 32;
/** Cluster id length (raw bytes; 32 hex characters on the wire). */
export const CLUSTER_ID_BYTES = 16;
/** Handshake state lifetime: a finish later than this after its challenge is Expired. */
export const REPLICA_HANDSHAKE_TTL_MS = 10_000;
/**
 * How far a finishing replica's clock may lag the replica that issued the
 * challenge: a challenge claiming to live longer than TTL + this is refused,
 * so no PSK holder can mint a long-lived one whose finish could be replayed
 * once its single-use record is gone.
 */
export const REPLICA_CLOCK_SKEW_MS = 5_000;

/** Replica and acceptor ids: 1-63 bytes of `[a-z0-9._-]`, starting alphanumeric. */
export const REPLICA_ID_PATTERN = /^[a-z0-9][a-z0-9._-]{0,62}$/;

/** Raised for an argument that breaks the encoding rules (a caller bug or bad config). */
export class ReplicaHandshakeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ReplicaHandshakeError";
  }
}

/** Ids already checked and encoded: a node dials as one id and a gateway answers as one, so each is checked once, not in every message and MAC. */
const idCache = new Map<string, Uint8Array>();
const ID_CACHE_MAX = 1024;

/**
 * A replica id checked against {@link REPLICA_ID_PATTERN} and encoded.
 * The bytes are shared between callers: read them or copy them, never
 * write to them (every caller copies them into a message or MAC input).
 *
 * @throws ReplicaHandshakeError naming `what` for an id that breaks the pattern.
 */
export function replicaIdBytes(what: string, id: string): Uint8Array {
  const cached = idCache.get(id);
  if (cached !== undefined) return cached;
  if (!REPLICA_ID_PATTERN.test(id)) throw new ReplicaHandshakeError(`${what} must match ${REPLICA_ID_PATTERN.source}`);
  if (idCache.size >= ID_CACHE_MAX) idCache.clear();
  const bytes = utf8(id);
  idCache.set(id, bytes);
  return bytes;
}

function checkLength(what: string, b: Uint8Array, n: number): Uint8Array {
  if (!(b instanceof Uint8Array) || b.byteLength !== n) throw new ReplicaHandshakeError(`${what} must be ${n} bytes`);
  return b;
}

/** A one-byte length prefix, then the bytes (every variable field is at most 63 bytes). */
function lp(b: Uint8Array): Uint8Array {
  const out = new Uint8Array(1 + b.byteLength);
  out[0] = b.byteLength;
  out.set(b, 1);
  return out;
}

/** The 16-byte cluster id of a cluster name (BLAKE3 derive_key of its UTF-8 bytes). */
export function clusterIdFromName(clusterName: string): Uint8Array {
  if (typeof clusterName !== "string" || clusterName.length === 0 || clusterName.length > 128) {
    throw new ReplicaHandshakeError("cluster name must be 1-128 characters");
  }
  return kdf.clusterId.hash(utf8(clusterName), CLUSTER_ID_BYTES);
}

/** The MAC key derived from a PSK; the PSK itself never keys anything directly. */
export function replicaMacKey(psk: Uint8Array): Uint8Array {
  if (!(psk instanceof Uint8Array) || psk.byteLength < MIN_PSK_BYTES) throw new ReplicaHandshakeError(`PSK must be at least ${MIN_PSK_BYTES} bytes`);
  return kdf.macKey.hash(psk);
}

/**
 * The PSK's public 8-byte id: tells the acceptor which of its keys (current or
 * previous) the dialer holds, without revealing anything usable about a
 * 256-bit random PSK.
 */
export function replicaKeyId(psk: Uint8Array): Uint8Array {
  if (!(psk instanceof Uint8Array) || psk.byteLength < MIN_PSK_BYTES) throw new ReplicaHandshakeError(`PSK must be at least ${MIN_PSK_BYTES} bytes`);
  return kdf.keyId.hash(psk, 8);
}

/** The values both MACs and the transcript cover. */
export interface HandshakeBinding {
  /** 16-byte cluster id. */
  readonly clusterId: Uint8Array;
  /** The dialer's (joining node's) replica id. */
  readonly dialerId: string;
  /** The acceptor's (gateway's) id. */
  readonly acceptorId: string;
  /** The dialer's 32-byte nonce (from the hello). */
  readonly nonceD: Uint8Array;
  /** The acceptor's 32-byte nonce (from the challenge). */
  readonly nonceA: Uint8Array;
}

/**
 * The binding's bytes as both MAC inputs and the transcript carry them:
 * cluster_id(16) ‖ lp(dialer) ‖ lp(acceptor) ‖ nonce_d(32) ‖ nonce_a(32).
 */
function bindingBytes(b: HandshakeBinding): Uint8Array {
  const clusterId = checkLength("cluster id", b.clusterId, CLUSTER_ID_BYTES);
  const dialer = replicaIdBytes("dialer id", b.dialerId);
  const acceptor = replicaIdBytes("acceptor id", b.acceptorId);
  const nonceD = checkLength("nonce_d", b.nonceD, REPLICA_NONCE_BYTES);
  const nonceA = checkLength("nonce_a", b.nonceA, REPLICA_NONCE_BYTES);
  const out = new Uint8Array(CLUSTER_ID_BYTES + 2 + dialer.byteLength + acceptor.byteLength + 2 * REPLICA_NONCE_BYTES);
  let o = 0;
  out.set(clusterId, o);
  o += CLUSTER_ID_BYTES;
  out[o++] = dialer.byteLength;
  out.set(dialer, o);
  o += dialer.byteLength;
  out[o++] = acceptor.byteLength;
  out.set(acceptor, o);
  o += acceptor.byteLength;
  out.set(nonceD, o);
  out.set(nonceA, o + REPLICA_NONCE_BYTES);
  return out;
}

/** lp(label) ‖ binding ‖ the tail parts, in one allocation. */
function framed(label: Uint8Array, binding: Uint8Array, ...tail: Uint8Array[]): Uint8Array {
  let len = label.byteLength + binding.byteLength;
  for (const t of tail) len += t.byteLength;
  const out = new Uint8Array(len);
  out.set(label, 0);
  out.set(binding, label.byteLength);
  let o = label.byteLength + binding.byteLength;
  for (const t of tail) {
    out.set(t, o);
    o += t.byteLength;
  }
  return out;
}

function checkDirection(direction: ReplicaDirection, identity: Uint8Array | undefined): Uint8Array | undefined {
  if (direction !== ReplicaDirection.acceptorToDialer && direction !== ReplicaDirection.dialerToAcceptor) throw new ReplicaHandshakeError("unknown direction");
  const withIdentity = direction === ReplicaDirection.dialerToAcceptor;
  if (withIdentity !== (identity !== undefined)) throw new ReplicaHandshakeError("the identity key is part of the dialer's MAC and only of it");
  return identity === undefined ? undefined : checkLength("identity key", identity, 32);
}

/**
 * The byte-exact MAC input: lp(label) ‖ cluster_id(16) ‖ lp(dialer) ‖
 * lp(acceptor) ‖ nonce_d(32) ‖ nonce_a(32) ‖ direction(1) [‖ identity(32) for
 * the dialer's MAC, so the finish cannot be re-bound to another identity].
 */
export function replicaMacInput(b: HandshakeBinding, direction: ReplicaDirection, identity?: Uint8Array): Uint8Array {
  const id = checkDirection(direction, identity);
  const binding = bindingBytes(b);
  return id === undefined ? framed(labelBytes.mac, binding, Uint8Array.of(direction)) : framed(labelBytes.mac, binding, Uint8Array.of(direction), id);
}

/** `mac_a`: the acceptor's proof of the PSK over the binding. */
export function acceptorMac(psk: Uint8Array, b: HandshakeBinding): Uint8Array {
  return replicaMac(replicaMacKey(psk), b, ReplicaDirection.acceptorToDialer);
}

/** `mac_d`: the dialer's proof of the PSK over the binding and its identity key. */
export function dialerMac(psk: Uint8Array, b: HandshakeBinding, identity: Uint8Array): Uint8Array {
  return replicaMac(replicaMacKey(psk), b, ReplicaDirection.dialerToAcceptor, identity);
}

/**
 * A MAC key ready for hashing: the gateway prepares each PSK's once at start,
 * the dialer once per handshake, so no MAC pays for a key derivation or a
 * key setup.
 */
export function prepareReplicaMacKey(macKey: Uint8Array): Blake3Key {
  return Blake3Key.keyed(macKey);
}

/** A MAC under an already derived key ({@link replicaMacKey}), raw or prepared ({@link prepareReplicaMacKey}). */
export function replicaMac(macKey: Uint8Array | Blake3Key, b: HandshakeBinding, direction: ReplicaDirection, identity?: Uint8Array): Uint8Array {
  const key = macKey instanceof Blake3Key ? macKey : Blake3Key.keyed(macKey);
  return key.hash(replicaMacInput(b, direction, identity));
}

/** Both MACs and the transcript of one handshake. */
export interface ReplicaProofs {
  /** `mac_a`, the acceptor's MAC. */
  readonly macA: Uint8Array;
  /** `mac_d`, the dialer's MAC (over the identity key too). */
  readonly macD: Uint8Array;
  /** The transcript the identity signs, holding both MACs. */
  readonly transcript: Uint8Array;
}

/**
 * `mac_a`, `mac_d` and the transcript from one encoding of the binding: what
 * the acceptor recomputes to check a finish and the dialer computes to
 * check a challenge and build its finish. Byte-identical to
 * {@link replicaMac} for each direction and {@link replicaTranscript}.
 */
export function replicaProofs(macKey: Blake3Key, b: HandshakeBinding, identity: Uint8Array): ReplicaProofs {
  const id = checkLength("identity key", identity, 32);
  const binding = bindingBytes(b);
  const macA = macKey.hash(framed(labelBytes.mac, binding, Uint8Array.of(ReplicaDirection.acceptorToDialer)));
  const macD = macKey.hash(framed(labelBytes.mac, binding, Uint8Array.of(ReplicaDirection.dialerToAcceptor), id));
  return { macA, macD, transcript: framed(labelBytes.transcript, binding, macA, macD, id) };
}

/**
 * A fresh acceptor nonce that carries its own expiry: `expires_at` (u64
 * big-endian Unix ms) ‖ 24 random bytes. Both MACs and the transcript cover
 * the whole nonce, so the expiry cannot be changed without the PSK, and any
 * gateway replica can check it without shared state.
 */
export function acceptorNonce(expiresAtMs: number): Uint8Array {
  if (!Number.isSafeInteger(expiresAtMs) || expiresAtMs < 0) throw new ReplicaHandshakeError("expiry must be a non-negative integer of ms");
  const nonce = randomNonce(REPLICA_NONCE_BYTES);
  const view = new DataView(nonce.buffer, nonce.byteOffset, nonce.byteLength);
  view.setUint32(0, Math.floor(expiresAtMs / 2 ** 32));
  view.setUint32(4, expiresAtMs >>> 0);
  return nonce;
}

/** The expiry (Unix ms) an acceptor nonce carries; beyond 2^53 it is `Infinity`, which every check treats as never valid. */
export function acceptorNonceExpiry(nonceA: Uint8Array): number {
  checkLength("nonce_a", nonceA, REPLICA_NONCE_BYTES);
  const view = new DataView(nonceA.buffer, nonceA.byteOffset, nonceA.byteLength);
  const ms = view.getUint32(0) * 2 ** 32 + view.getUint32(4);
  return Number.isSafeInteger(ms) ? ms : Number.POSITIVE_INFINITY;
}

/**
 * Whether a challenge with this expiry may still be finished at `now`: not
 * past its expiry, and not claiming a life longer than any acceptor gives
 * ({@link REPLICA_HANDSHAKE_TTL_MS} + {@link REPLICA_CLOCK_SKEW_MS}).
 */
export function acceptorNonceLive(expiresAtMs: number, now: number): boolean {
  return now <= expiresAtMs && expiresAtMs - now <= REPLICA_HANDSHAKE_TTL_MS + REPLICA_CLOCK_SKEW_MS;
}

/** Constant-time check of a received MAC against the expected one. */
export function macMatches(expected: Uint8Array, received: Uint8Array): boolean {
  return constantTimeEqual(expected, received);
}

/**
 * The transcript the node's identity signs: lp(label) ‖ cluster_id ‖
 * lp(dialer) ‖ lp(acceptor) ‖ nonce_d ‖ nonce_a ‖ mac_a(32) ‖ mac_d(32) ‖
 * identity(32). It holds both PSK proofs, so a signature made for one
 * handshake is worthless in any other.
 */
export function replicaTranscript(b: HandshakeBinding, macA: Uint8Array, macD: Uint8Array, identity: Uint8Array): Uint8Array {
  const binding = bindingBytes(b);
  return framed(labelBytes.transcript, binding, checkLength("mac_a", macA, 32), checkLength("mac_d", macD, 32), checkLength("identity key", identity, 32));
}

/** The node's Ed25519 signature over `0xFF ‖ transcript` (the statement marker: never a connect nonce). */
export function signReplicaTranscript(key: SigningKey, transcript: Uint8Array): Uint8Array {
  return key.sign(markStatement(transcript));
}

/** True when `signature` is `identity`'s valid Ed25519 signature over `0xFF ‖ transcript`. */
export function verifyReplicaTranscript(identity: Uint8Array, transcript: Uint8Array, signature: Uint8Array): boolean {
  return verifySignature(identity, markStatement(transcript), signature);
}

/** The 16-byte session id both sides compute from the transcript. */
export function replicaSessionId(transcript: Uint8Array): Uint8Array {
  return kdf.sessionId.hash(transcript, 16);
}

const HEX_PSK = /^(?:[0-9a-fA-F]{2})+$/;
const BASE64_PSK = /^[A-Za-z0-9+/_-]+={0,2}$/;

/**
 * Decodes a PSK written as hex or base64/base64url (surrounding whitespace
 * ignored) and checks it is at least {@link MIN_PSK_BYTES}. Error messages
 * never quote the input: it is a secret, and errors end up in logs.
 */
export function parseReplicaPsk(text: string): Uint8Array {
  const s = typeof text === "string" ? text.trim() : "";
  let bytes: Uint8Array;
  if (HEX_PSK.test(s)) bytes = new Uint8Array(Buffer.from(s, "hex"));
  else if (BASE64_PSK.test(s)) bytes = new Uint8Array(Buffer.from(s, s.includes("-") || s.includes("_") ? "base64url" : "base64"));
  else throw new ReplicaHandshakeError("PSK must be hex or base64");
  if (bytes.byteLength < MIN_PSK_BYTES) throw new ReplicaHandshakeError(`PSK must be at least ${MIN_PSK_BYTES} bytes`);
  return bytes;
}
