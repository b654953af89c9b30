import type { NatsConnection } from "@nats-io/transport-node";
import { decodeReply, Subjects } from "@unibus/contracts";
import type { ReplicaChallenge, ReplicaFinish, ReplicaFinishReply, ReplicaHello } from "@unibus/contracts";
import {
  clusterIdFromName,
  constantTimeEqual,
  fromHex,
  macMatches,
  prepareReplicaMacKey,
  randomNonce,
  REPLICA_HANDSHAKE_VERSION,
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

/** The session a successful handshake yields; later steps (join) present `sessionId`. */
export type ReplicaSession = NonNullable<ReplicaFinishReply["session"]>;

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

const encoder = new TextEncoder();
const HEX32 = /^[0-9a-f]{64}$/;

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
  readonly #keyIdHex: string;
  readonly #identity: SigningKey;
  readonly #timeout: number;

  /** @throws ReplicaHandshakeError for a cluster name or PSK that breaks the spec's rules. */
  constructor(opts: ReplicaDialerOptions) {
    this.#clusterId = clusterIdFromName(opts.clusterName);
    this.#clusterIdHex = toHex(this.#clusterId);
    this.#macKey = prepareReplicaMacKey(replicaMacKey(opts.psk));
    this.#keyIdHex = toHex(replicaKeyId(opts.psk));
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
    const nonceD = randomNonce(REPLICA_NONCE_BYTES);
    const hello: ReplicaHello = { version: REPLICA_HANDSHAKE_VERSION, clusterId: this.#clusterIdHex, replicaId, keyId: this.#keyIdHex, nonceD: toHex(nonceD) };
    const challenge = decodeReply<ReplicaChallenge>(await nc.request(Subjects.replicaGateway.handshakeHello, encoder.encode(JSON.stringify(hello)), { timeout }));
    if (challenge.status !== ReplicaHandshakeStatus.Ok) throw new ReplicaHandshakeRejectedError("hello", challenge.status);
    const { acceptorId, nonceA, macA } = challenge;
    if (acceptorId === undefined || nonceA === undefined || macA === undefined || !REPLICA_ID_PATTERN.test(acceptorId) || !HEX32.test(nonceA) || !HEX32.test(macA)) {
      throw new ReplicaHandshakeError("challenge is incomplete");
    }
    const binding = { clusterId: this.#clusterId, dialerId: replicaId, acceptorId, nonceD, nonceA: fromHex(nonceA) };
    // Both MACs and the transcript in one pass; nothing of ours leaves unless the acceptor's MAC checks out.
    const { macA: expectedA, macD, transcript } = replicaProofs(this.#macKey, binding, identity.publicKey);
    if (!macMatches(expectedA, fromHex(macA))) throw new ReplicaHandshakeError("acceptor did not prove the PSK");
    // The finish repeats the hello's fields: the acceptor keeps no state, so whichever replica answers rebuilds the binding from them and the MACs.
    const finish: ReplicaFinish = {
      clusterId: hello.clusterId,
      replicaId,
      acceptorId,
      keyId: hello.keyId,
      nonceD: hello.nonceD,
      nonceA,
      identity: identity.principal,
      macD: toHex(macD),
      signature: toHex(signReplicaTranscript(identity, transcript)),
    };
    const reply = decodeReply<ReplicaFinishReply>(await nc.request(Subjects.replicaGateway.handshakeFinish, encoder.encode(JSON.stringify(finish)), { timeout }));
    if (reply.status !== ReplicaHandshakeStatus.Ok) throw new ReplicaHandshakeRejectedError("finish", reply.status);
    const session = reply.session;
    // The session id is derived from the transcript: one the acceptor made up
    // (or that belongs to another handshake) does not match ours.
    if (session === undefined || !constantTimeEqual(encoder.encode(session.sessionId), encoder.encode(toHex(replicaSessionId(transcript)))) || session.principal !== identity.principal) {
      throw new ReplicaHandshakeError("session does not match this handshake");
    }
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
