import type { Msg, NatsConnection } from "@nats-io/transport-node";
import { decodeReply, ServiceErrorCodeHeader, Subjects } from "@unibus/contracts";
import {
  clusterIdFromName,
  constantTimeEqual,
  decodeReplicaChallenge,
  decodeReplicaFinishReply,
  encodeReplicaFinish,
  encodeReplicaHello,
  macMatches,
  prepareReplicaMacKey,
  randomNonce,
  REPLICA_ID_PATTERN,
  REPLICA_NONCE_BYTES,
  ReplicaHandshakeError,
  ReplicaHandshakeStatus,
  replicaKeyId,
  replicaMacKey,
  replicaProofs,
  replicaSessionId,
  signReplicaTranscript,
  toHex,
} from "@unibus/crypto";
import type { Blake3Key, SigningKey } from "@unibus/crypto";

/** What {@link replicaHandshake} needs; `psk` is a secret the caller read from its 0600 file or env. */
export interface ReplicaHandshakeOptions {
  readonly clusterName: string;
  /** This node's replica id. */
  readonly replicaId: string;
  readonly psk: Uint8Array;
  /** The node's Ed25519 identity; its signature over the transcript tells the cluster who joined. */
  readonly identity: SigningKey;
  /** Per-request timeout; default 5 s (the acceptor's state lives 10 s). */
  readonly timeoutMs?: number;
}

/**
 * The session a successful handshake yields, as the gateway recorded it;
 * later steps (register, commit, join) present `sessionId`. Ids are
 * lowercase hex, times ISO 8601.
 */
export interface ReplicaSession {
  readonly sessionId: string;
  readonly clusterId: string;
  readonly replicaId: string;
  readonly acceptorId: string;
  /** The node identity's `U…` principal. */
  readonly principal: string;
  readonly createdAt: string;
  readonly expiresAt: string;
}

/** A completed handshake. */
export interface ReplicaHandshakeResult {
  readonly acceptorId: string;
  readonly session: ReplicaSession;
}

/** The acceptor refused the handshake with a non-zero status. */
export class ReplicaHandshakeRejectedError extends Error {
  constructor(
    readonly stage: "hello" | "finish",
    readonly status: number,
  ) {
    const name = Object.entries(ReplicaHandshakeStatus).find(([, v]) => v === status)?.[0] ?? `status ${status}`;
    super(`replica handshake ${stage} rejected: ${name}`);
    this.name = "ReplicaHandshakeRejectedError";
  }
}

/** The reply's bytes; a micro error reply (a 503 when the session store is down) throws its coded error. */
function replyBytes(msg: Msg): Uint8Array {
  if ((msg.headers?.get(ServiceErrorCodeHeader) ?? "") !== "") decodeReply(msg);
  return msg.data;
}

/** What {@link ReplicaDialer} prepares once; the replica id is given per handshake. */
export type ReplicaDialerOptions = Omit<ReplicaHandshakeOptions, "replicaId">;

/**
 * The dialer side of the PSK handshake (contracts/specs/replica-handshake.md)
 * with its per-cluster work done once: the cluster id, the PSK's MAC key
 * (prepared for hashing) and its public key id. A node that retries a
 * refused or timed-out handshake, or a process that runs many, pays for
 * those derivations once instead of once per handshake. The MAC key is a
 * secret: it lives in a private field and never shows in logs or JSON.
 */
export class ReplicaDialer {
  readonly #clusterId: Uint8Array;
  readonly #clusterIdHex: string;
  readonly #macKey: Blake3Key;
  readonly #keyId: Uint8Array;
  readonly #identity: SigningKey;
  readonly #timeout: number;

  /** @throws ReplicaHandshakeError for a cluster name or PSK that breaks the spec's rules. */
  constructor(opts: ReplicaDialerOptions) {
    this.#clusterId = clusterIdFromName(opts.clusterName);
    this.#clusterIdHex = toHex(this.#clusterId);
    this.#macKey = prepareReplicaMacKey(replicaMacKey(opts.psk));
    this.#keyId = replicaKeyId(opts.psk);
    this.#identity = opts.identity;
    this.#timeout = opts.timeoutMs ?? 5_000;
  }

  /**
   * Runs one handshake as `replicaId` on `nc`: hello, verify the acceptor's
   * MAC (an acceptor that does not hold the PSK is refused before anything
   * is revealed), then finish with the identity's signature over the
   * transcript.
   *
   * @throws ReplicaHandshakeRejectedError when the acceptor rejects,
   *   ReplicaHandshakeError when the acceptor's answer does not prove the PSK,
   *   UnibusError for a coded error reply.
   */
  async handshake(nc: NatsConnection, replicaId: string): Promise<ReplicaHandshakeResult> {
    if (!REPLICA_ID_PATTERN.test(replicaId)) throw new ReplicaHandshakeError(`replica id must match ${REPLICA_ID_PATTERN.source}`);
    const timeout = this.#timeout;
    const identity = this.#identity;
    const clusterId = this.#clusterId;
    const keyId = this.#keyId;
    const nonceD = randomNonce(REPLICA_NONCE_BYTES);
    const hello = encodeReplicaHello({ clusterId, keyId, nonceD, replicaId });
    const challenge = decodeReplicaChallenge(replyBytes(await nc.request(Subjects.replicaGateway.handshakeHello, hello, { timeout })));
    if (challenge === undefined) throw new ReplicaHandshakeError("challenge is malformed");
    if (challenge.status !== ReplicaHandshakeStatus.Ok) throw new ReplicaHandshakeRejectedError("hello", challenge.status);
    const { acceptorId, nonceA, macA } = challenge;
    const binding = { clusterId, dialerId: replicaId, acceptorId, nonceD, nonceA };
    // Both MACs and the transcript in one pass; nothing of ours leaves unless the acceptor's MAC checks out.
    const { macA: expectedA, macD, transcript } = replicaProofs(this.#macKey, binding, identity.publicKey);
    if (!macMatches(expectedA, macA)) throw new ReplicaHandshakeError("acceptor did not prove the PSK");
    // The finish repeats the hello's fields: the acceptor keeps no state, so whichever replica answers rebuilds the binding from them and the MACs.
    const finish = encodeReplicaFinish({
      clusterId,
      keyId,
      nonceD,
      nonceA,
      identity: identity.publicKey,
      macD,
      signature: signReplicaTranscript(identity, transcript),
      replicaId,
      acceptorId,
    });
    const reply = decodeReplicaFinishReply(replyBytes(await nc.request(Subjects.replicaGateway.handshakeFinish, finish, { timeout })));
    if (reply === undefined) throw new ReplicaHandshakeError("finish reply is malformed");
    if (reply.status !== ReplicaHandshakeStatus.Ok) throw new ReplicaHandshakeRejectedError("finish", reply.status);
    // The session id is derived from the transcript: one the acceptor made up
    // (or that belongs to another handshake) does not match ours.
    const sessionId = replicaSessionId(transcript);
    if (!constantTimeEqual(reply.sessionId, sessionId)) throw new ReplicaHandshakeError("session does not match this handshake");
    const session: ReplicaSession = {
      sessionId: toHex(sessionId),
      clusterId: this.#clusterIdHex,
      replicaId,
      acceptorId,
      principal: identity.principal,
      createdAt: new Date(reply.createdAt).toISOString(),
      expiresAt: new Date(reply.expiresAt).toISOString(),
    };
    return { acceptorId, session };
  }

  toJSON(): { replicaDialer: string } {
    return { replicaDialer: this.#clusterIdHex };
  }

  [Symbol.for("nodejs.util.inspect.custom")](): string {
    return `ReplicaDialer(${this.#clusterIdHex})`;
  }
}

/**
 * Runs the dialer side of the PSK handshake once (see
 * {@link ReplicaDialer.handshake}); a caller that runs several prepares a
 * {@link ReplicaDialer} and reuses it.
 *
 * @throws ReplicaHandshakeRejectedError when the acceptor rejects,
 *   ReplicaHandshakeError when the acceptor's answer does not prove the PSK,
 *   UnibusError for a coded error reply.
 */
export async function replicaHandshake(nc: NatsConnection, opts: ReplicaHandshakeOptions): Promise<ReplicaHandshakeResult> {
  if (!REPLICA_ID_PATTERN.test(opts.replicaId)) throw new ReplicaHandshakeError(`replica id must match ${REPLICA_ID_PATTERN.source}`);
  return new ReplicaDialer(opts).handshake(nc, opts.replicaId);
}
