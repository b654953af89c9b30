/**
 * The fixed binary layout of the replica handshake's four messages
 * (contracts/specs/replica-handshake.md § Messages): hello, challenge,
 * finish and the finish's reply. Shared by the gateway (acceptor) and the
 * SDK (dialer) so both parse exactly the same bytes. Parsing is strict: the
 * version byte first, then fixed fields, then length-prefixed ids, and the
 * message must end exactly there (no truncation, no trailing bytes); ids are
 * checked against {@link REPLICA_ID_PATTERN}. Decoded byte fields are views
 * into the input (no copy): use them before the input is reused. No I/O.
 */
import { CLUSTER_ID_BYTES, REPLICA_HANDSHAKE_VERSION, REPLICA_NONCE_BYTES, ReplicaHandshakeError, ReplicaHandshakeStatus, replicaIdBytes } from "./replica-handshake.js";

/** Byte sizes of the fixed fields. */
const KEY_ID_BYTES = 8;
const MAC_BYTES = 32;
const IDENTITY_BYTES = 32;
const SIGNATURE_BYTES = 64;
const SESSION_ID_BYTES = 16;
const MAX_ID_BYTES = 63;
const MAX_DATE_MS = 8.64e15;

/** Where each message's fixed part ends (the length-prefixed ids follow it). */
export const ReplicaWire = {
  /** version ‖ cluster_id ‖ key_id ‖ nonce_d, then lp(replica_id). */
  helloFixed: 1 + CLUSTER_ID_BYTES + KEY_ID_BYTES + REPLICA_NONCE_BYTES,
  /** version ‖ status; an Ok challenge then has nonce_a ‖ mac_a ‖ lp(acceptor_id). */
  challengeHead: 2,
  /** version ‖ cluster_id ‖ key_id ‖ nonce_d ‖ nonce_a ‖ identity ‖ mac_d ‖ signature, then lp(replica_id) ‖ lp(acceptor_id). */
  finishFixed: 1 + CLUSTER_ID_BYTES + KEY_ID_BYTES + 2 * REPLICA_NONCE_BYTES + IDENTITY_BYTES + MAC_BYTES + SIGNATURE_BYTES,
  /** version ‖ status ‖ session_id ‖ created_at (u64 ms) ‖ expires_at (u64 ms), the Ok reply. */
  finishReplyOk: 2 + SESSION_ID_BYTES + 8 + 8,
} as const;

/** Largest valid hello (the longest id). */
export const REPLICA_HELLO_MAX_BYTES = ReplicaWire.helloFixed + 1 + MAX_ID_BYTES;
/** Largest valid finish (both ids at their longest). */
export const REPLICA_FINISH_MAX_BYTES = ReplicaWire.finishFixed + 2 * (1 + MAX_ID_BYTES);

/** A decoded hello. */
export interface ReplicaHelloMessage {
  readonly clusterId: Uint8Array;
  readonly keyId: Uint8Array;
  readonly nonceD: Uint8Array;
  readonly replicaId: string;
}

/** An acceptor's answer: Ok with its fields, or a reject that is the bare status. */
type StatusReply<Ok extends object> = ({ readonly status: typeof ReplicaHandshakeStatus.Ok } & Readonly<Ok>) | { readonly status: Exclude<ReplicaHandshakeStatus, typeof ReplicaHandshakeStatus.Ok> };

/** A decoded challenge: an Ok one carries the acceptor's nonce, MAC and id. */
export type ReplicaChallengeMessage = StatusReply<{ nonceA: Uint8Array; macA: Uint8Array; acceptorId: string }>;

/** A decoded finish: the hello's fields and the challenge's, repeated, then the dialer's proofs. */
export interface ReplicaFinishMessage extends ReplicaHelloMessage {
  readonly nonceA: Uint8Array;
  /** The node's Ed25519 public key (32 bytes). */
  readonly identity: Uint8Array;
  readonly macD: Uint8Array;
  readonly signature: Uint8Array;
  readonly acceptorId: string;
}

/** A decoded finish reply: an Ok one carries the session id and the record's times (Unix ms). */
export type ReplicaFinishReplyMessage = StatusReply<{ sessionId: Uint8Array; createdAt: number; expiresAt: number }>;

/** Per byte: 1 for a character an id may start with ([a-z0-9]), 2 for one it may only continue with ([._-]), 0 otherwise. */
const ID_CHAR = (() => {
  const t = new Uint8Array(256);
  for (const c of "abcdefghijklmnopqrstuvwxyz0123456789") t[c.charCodeAt(0)] = 1;
  for (const c of "._-") t[c.charCodeAt(0)] = 2;
  return t;
})();
const STATUSES: ReadonlySet<number> = new Set(Object.values(ReplicaHandshakeStatus));

function put(out: Uint8Array, at: number, what: string, b: Uint8Array, n: number): number {
  if (!(b instanceof Uint8Array) || b.byteLength !== n) throw new ReplicaHandshakeError(`${what} must be ${n} bytes`);
  out.set(b, at);
  return at + n;
}

function putId(out: Uint8Array, at: number, id: Uint8Array): number {
  out[at] = id.byteLength;
  out.set(id, at + 1);
  return at + 1 + id.byteLength;
}

/** The length-prefixed id at `at`, or undefined when its length or charset breaks the rules or it runs past the end. */
function idAt(d: Uint8Array, at: number): { readonly id: string; readonly end: number } | undefined {
  const n = d[at];
  if (n === undefined || n < 1 || n > MAX_ID_BYTES || at + 1 + n > d.byteLength) return undefined;
  // REPLICA_ID_PATTERN byte by byte: [a-z0-9] first, then [a-z0-9._-]; the id is ASCII, so each byte is its character.
  let id = "";
  for (let i = at + 1; i <= at + n; i++) {
    const c = d[i]!;
    if (ID_CHAR[c] !== 1 && !(i > at + 1 && ID_CHAR[c] === 2)) return undefined;
    id += String.fromCharCode(c);
  }
  return { id, end: at + 1 + n };
}

function u64At(d: Uint8Array, at: number): number {
  const view = new DataView(d.buffer, d.byteOffset + at, 8);
  const ms = view.getUint32(0) * 2 ** 32 + view.getUint32(4);
  return Number.isSafeInteger(ms) ? ms : Number.POSITIVE_INFINITY;
}

function putU64(out: Uint8Array, at: number, ms: number): void {
  if (!Number.isSafeInteger(ms) || ms < 0) throw new ReplicaHandshakeError("a time must be a non-negative integer of ms");
  const view = new DataView(out.buffer, out.byteOffset + at, 8);
  view.setUint32(0, Math.floor(ms / 2 ** 32));
  view.setUint32(4, ms >>> 0);
}

/**
 * What a dialer's message is refused as before its fields are read: empty or
 * longer than the largest valid one is Malformed; a first byte other than
 * this version is UnknownCommand (a later version may lay the rest out
 * differently). Undefined: read on.
 */
function refusedByHead(d: Uint8Array, maxBytes: number): ReplicaHandshakeStatus | undefined {
  if (d.byteLength === 0) return ReplicaHandshakeStatus.Malformed;
  if (d[0] !== REPLICA_HANDSHAKE_VERSION) return ReplicaHandshakeStatus.UnknownCommand;
  if (d.byteLength > maxBytes) return ReplicaHandshakeStatus.Malformed;
  return undefined;
}

/** The hello's bytes. @throws ReplicaHandshakeError for a field of the wrong size or an id that breaks the rules. */
export function encodeReplicaHello(h: ReplicaHelloMessage): Uint8Array {
  const id = replicaIdBytes("replica id", h.replicaId);
  const out = new Uint8Array(ReplicaWire.helloFixed + 1 + id.byteLength);
  out[0] = REPLICA_HANDSHAKE_VERSION;
  let o = put(out, 1, "cluster id", h.clusterId, CLUSTER_ID_BYTES);
  o = put(out, o, "key id", h.keyId, KEY_ID_BYTES);
  o = put(out, o, "nonce_d", h.nonceD, REPLICA_NONCE_BYTES);
  putId(out, o, id);
  return out;
}

/**
 * Parses a hello. A first byte other than this version is UnknownCommand (a
 * later version may lay the rest out differently); anything else that is not
 * exactly this layout is Malformed.
 */
export function decodeReplicaHello(d: Uint8Array): ReplicaHelloMessage | ReplicaHandshakeStatus {
  const refused = refusedByHead(d, REPLICA_HELLO_MAX_BYTES);
  if (refused !== undefined) return refused;
  const replica = idAt(d, ReplicaWire.helloFixed);
  if (replica === undefined || replica.end !== d.byteLength) return ReplicaHandshakeStatus.Malformed;
  return {
    clusterId: d.subarray(1, 17),
    keyId: d.subarray(17, 25),
    nonceD: d.subarray(25, 57),
    replicaId: replica.id,
  };
}

/** A reject (or any non-Ok status): version ‖ status. */
export function encodeReplicaStatus(status: ReplicaHandshakeStatus): Uint8Array {
  if (status === ReplicaHandshakeStatus.Ok || !STATUSES.has(status)) throw new ReplicaHandshakeError("a bare status is a reject");
  return Uint8Array.of(REPLICA_HANDSHAKE_VERSION, status);
}

/** An Ok challenge's bytes. */
export function encodeReplicaChallenge(c: { readonly nonceA: Uint8Array; readonly macA: Uint8Array; readonly acceptorId: string }): Uint8Array {
  const id = replicaIdBytes("acceptor id", c.acceptorId);
  const out = new Uint8Array(ReplicaWire.challengeHead + REPLICA_NONCE_BYTES + MAC_BYTES + 1 + id.byteLength);
  out[0] = REPLICA_HANDSHAKE_VERSION;
  out[1] = ReplicaHandshakeStatus.Ok;
  let o = put(out, 2, "nonce_a", c.nonceA, REPLICA_NONCE_BYTES);
  o = put(out, o, "mac_a", c.macA, MAC_BYTES);
  putId(out, o, id);
  return out;
}

/** Reads version ‖ status; undefined unless both are known. */
function statusOf(d: Uint8Array): ReplicaHandshakeStatus | undefined {
  if (d.byteLength < 2 || d[0] !== REPLICA_HANDSHAKE_VERSION) return undefined;
  const s = d[1]!;
  return STATUSES.has(s) ? (s as ReplicaHandshakeStatus) : undefined;
}

/** Parses a challenge; undefined when it is not exactly this layout (the dialer aborts). */
export function decodeReplicaChallenge(d: Uint8Array): ReplicaChallengeMessage | undefined {
  const status = statusOf(d);
  if (status === undefined) return undefined;
  if (status !== ReplicaHandshakeStatus.Ok) return d.byteLength === ReplicaWire.challengeHead ? { status } : undefined;
  const at = ReplicaWire.challengeHead + REPLICA_NONCE_BYTES + MAC_BYTES;
  const acceptor = idAt(d, at);
  if (acceptor === undefined || acceptor.end !== d.byteLength) return undefined;
  return { status, nonceA: d.subarray(2, 34), macA: d.subarray(34, 66), acceptorId: acceptor.id };
}

/** The finish's bytes. @throws ReplicaHandshakeError for a field of the wrong size or an id that breaks the rules. */
export function encodeReplicaFinish(f: ReplicaFinishMessage): Uint8Array {
  const replica = replicaIdBytes("replica id", f.replicaId);
  const acceptor = replicaIdBytes("acceptor id", f.acceptorId);
  const out = new Uint8Array(ReplicaWire.finishFixed + 2 + replica.byteLength + acceptor.byteLength);
  out[0] = REPLICA_HANDSHAKE_VERSION;
  let o = put(out, 1, "cluster id", f.clusterId, CLUSTER_ID_BYTES);
  o = put(out, o, "key id", f.keyId, KEY_ID_BYTES);
  o = put(out, o, "nonce_d", f.nonceD, REPLICA_NONCE_BYTES);
  o = put(out, o, "nonce_a", f.nonceA, REPLICA_NONCE_BYTES);
  o = put(out, o, "identity key", f.identity, IDENTITY_BYTES);
  o = put(out, o, "mac_d", f.macD, MAC_BYTES);
  o = put(out, o, "signature", f.signature, SIGNATURE_BYTES);
  putId(out, putId(out, o, replica), acceptor);
  return out;
}

/** Parses a finish, with the same version and Malformed rules as {@link decodeReplicaHello}. */
export function decodeReplicaFinish(d: Uint8Array): ReplicaFinishMessage | ReplicaHandshakeStatus {
  const refused = refusedByHead(d, REPLICA_FINISH_MAX_BYTES);
  if (refused !== undefined) return refused;
  const replica = idAt(d, ReplicaWire.finishFixed);
  const acceptor = replica === undefined ? undefined : idAt(d, replica.end);
  if (replica === undefined || acceptor === undefined || acceptor.end !== d.byteLength) return ReplicaHandshakeStatus.Malformed;
  return {
    clusterId: d.subarray(1, 17),
    keyId: d.subarray(17, 25),
    nonceD: d.subarray(25, 57),
    nonceA: d.subarray(57, 89),
    identity: d.subarray(89, 121),
    macD: d.subarray(121, 153),
    signature: d.subarray(153, 217),
    replicaId: replica.id,
    acceptorId: acceptor.id,
  };
}

/** An Ok finish reply's bytes. */
export function encodeReplicaFinishReply(r: { readonly sessionId: Uint8Array; readonly createdAt: number; readonly expiresAt: number }): Uint8Array {
  const out = new Uint8Array(ReplicaWire.finishReplyOk);
  out[0] = REPLICA_HANDSHAKE_VERSION;
  out[1] = ReplicaHandshakeStatus.Ok;
  put(out, 2, "session id", r.sessionId, SESSION_ID_BYTES);
  putU64(out, 18, r.createdAt);
  putU64(out, 26, r.expiresAt);
  return out;
}

/** Parses a finish reply; undefined when it is not exactly this layout (the dialer aborts). */
export function decodeReplicaFinishReply(d: Uint8Array): ReplicaFinishReplyMessage | undefined {
  const status = statusOf(d);
  if (status === undefined) return undefined;
  if (status !== ReplicaHandshakeStatus.Ok) return d.byteLength === ReplicaWire.challengeHead ? { status } : undefined;
  if (d.byteLength !== ReplicaWire.finishReplyOk) return undefined;
  const createdAt = u64At(d, 18);
  const expiresAt = u64At(d, 26);
  // Beyond what a Date can hold (±8.64e15 ms) no acceptor wrote it.
  if (!(createdAt <= MAX_DATE_MS && expiresAt <= MAX_DATE_MS)) return undefined;
  return { status, sessionId: d.subarray(2, 18), createdAt, expiresAt };
}
