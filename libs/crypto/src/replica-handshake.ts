/**
 * Pure logic of the replica PSK handshake (contracts/specs/replica-handshake.md):
 * key derivation, the byte-exact MAC input, the identity transcript and the
 * session id. Shared by the replica gateway (acceptor) and the node-side
 * client (dialer) so the two can never encode a field differently. No I/O.
 */
import { verifySignature } from "./ed25519.js";
import type { SigningKey } from "./ed25519.js";
import { concatBytes, constantTimeEqual, randomBytes, utf8 } from "./encoding.js";
import { blake3DeriveKey, blake3Mac } from "./hash.js";
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

function checkId(what: string, id: string): Uint8Array {
  if (!REPLICA_ID_PATTERN.test(id)) throw new ReplicaHandshakeError(`${what} must match ${REPLICA_ID_PATTERN.source}`);
  return utf8(id);
}

function checkLength(what: string, b: Uint8Array, n: number): Uint8Array {
  if (!(b instanceof Uint8Array) || b.byteLength !== n) throw new ReplicaHandshakeError(`${what} must be ${n} bytes`);
  return b;
}

/** A one-byte length prefix, then the bytes (every variable field is at most 63 bytes). */
function lp(b: Uint8Array): Uint8Array {
  return concatBytes(Uint8Array.of(b.byteLength), b);
}

/** The 16-byte cluster id of a cluster name (BLAKE3 derive_key of its UTF-8 bytes). */
export function clusterIdFromName(clusterName: string): Uint8Array {
  if (typeof clusterName !== "string" || clusterName.length === 0 || clusterName.length > 128) {
    throw new ReplicaHandshakeError("cluster name must be 1-128 characters");
  }
  return blake3DeriveKey(ReplicaHandshakeContext.clusterId, utf8(clusterName), CLUSTER_ID_BYTES);
}

/** The MAC key derived from a PSK; the PSK itself never keys anything directly. */
export function replicaMacKey(psk: Uint8Array): Uint8Array {
  if (!(psk instanceof Uint8Array) || psk.byteLength < MIN_PSK_BYTES) throw new ReplicaHandshakeError(`PSK must be at least ${MIN_PSK_BYTES} bytes`);
  return blake3DeriveKey(ReplicaHandshakeContext.macKey, psk);
}

/**
 * The PSK's public 8-byte id: tells the acceptor which of its keys (current or
 * previous) the dialer holds, without revealing anything usable about a
 * 256-bit random PSK.
 */
export function replicaKeyId(psk: Uint8Array): Uint8Array {
  if (!(psk instanceof Uint8Array) || psk.byteLength < MIN_PSK_BYTES) throw new ReplicaHandshakeError(`PSK must be at least ${MIN_PSK_BYTES} bytes`);
  return blake3DeriveKey(ReplicaHandshakeContext.keyId, psk, 8);
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
 * The byte-exact MAC input: lp(label) ‖ cluster_id(16) ‖ lp(dialer) ‖
 * lp(acceptor) ‖ nonce_d(32) ‖ nonce_a(32) ‖ direction(1) [‖ identity(32) for
 * the dialer's MAC, so the finish cannot be re-bound to another identity].
 */
export function replicaMacInput(b: HandshakeBinding, direction: ReplicaDirection, identity?: Uint8Array): Uint8Array {
  if (direction !== ReplicaDirection.acceptorToDialer && direction !== ReplicaDirection.dialerToAcceptor) throw new ReplicaHandshakeError("unknown direction");
  const withIdentity = direction === ReplicaDirection.dialerToAcceptor;
  if (withIdentity !== (identity !== undefined)) throw new ReplicaHandshakeError("the identity key is part of the dialer's MAC and only of it");
  return concatBytes(
    lp(utf8(ReplicaHandshakeLabel.mac)),
    checkLength("cluster id", b.clusterId, CLUSTER_ID_BYTES),
    lp(checkId("dialer id", b.dialerId)),
    lp(checkId("acceptor id", b.acceptorId)),
    checkLength("nonce_d", b.nonceD, REPLICA_NONCE_BYTES),
    checkLength("nonce_a", b.nonceA, REPLICA_NONCE_BYTES),
    Uint8Array.of(direction),
    ...(identity === undefined ? [] : [checkLength("identity key", identity, 32)]),
  );
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
 * A MAC under an already derived key ({@link replicaMacKey}): the gateway
 * derives it once per PSK at start and the dialer once per handshake, instead
 * of a derivation (one more BLAKE3 pass) for every MAC.
 */
export function replicaMac(macKey: Uint8Array, b: HandshakeBinding, direction: ReplicaDirection, identity?: Uint8Array): Uint8Array {
  return blake3Mac(macKey, replicaMacInput(b, direction, identity));
}

/**
 * A fresh acceptor nonce that carries its own expiry: `expires_at` (u64
 * big-endian Unix ms) ‖ 24 random bytes. Both MACs and the transcript cover
 * the whole nonce, so the expiry cannot be changed without the PSK, and any
 * gateway replica can check it without shared state.
 */
export function acceptorNonce(expiresAtMs: number): Uint8Array {
  if (!Number.isSafeInteger(expiresAtMs) || expiresAtMs < 0) throw new ReplicaHandshakeError("expiry must be a non-negative integer of ms");
  const nonce = randomBytes(REPLICA_NONCE_BYTES);
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
  return concatBytes(
    lp(utf8(ReplicaHandshakeLabel.transcript)),
    checkLength("cluster id", b.clusterId, CLUSTER_ID_BYTES),
    lp(checkId("dialer id", b.dialerId)),
    lp(checkId("acceptor id", b.acceptorId)),
    checkLength("nonce_d", b.nonceD, REPLICA_NONCE_BYTES),
    checkLength("nonce_a", b.nonceA, REPLICA_NONCE_BYTES),
    checkLength("mac_a", macA, 32),
    checkLength("mac_d", macD, 32),
    checkLength("identity key", identity, 32),
  );
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
  return blake3DeriveKey(ReplicaHandshakeContext.sessionId, transcript, 16);
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
