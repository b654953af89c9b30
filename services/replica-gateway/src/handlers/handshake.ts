import { JetStreamApiCodes, JetStreamApiError } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import { ErrorCode, ErrorReason, StoredBucket, UnibusError } from "@unibus/contracts";
import type { ReplicaChallenge, ReplicaFinish, ReplicaFinishReply, ReplicaHello } from "@unibus/contracts";
import {
  acceptorNonce,
  acceptorNonceExpiry,
  acceptorNonceLive,
  fromHex,
  macMatches,
  prepareReplicaMacKey,
  publicKeyFromPrincipal,
  REPLICA_HANDSHAKE_TTL_MS,
  REPLICA_HANDSHAKE_VERSION,
  ReplicaDirection,
  ReplicaHandshakeStatus,
  replicaKeyId,
  replicaMac,
  replicaMacKey,
  replicaProofs,
  replicaSessionId,
  toHex,
  verifyReplicaTranscript,
} from "@unibus/crypto";
import type { Blake3Key, HandshakeBinding } from "@unibus/crypto";
import { handles } from "@unibus/kit";
import type { BucketSpec, HandlerContext } from "@unibus/kit";
import type { PskSet } from "../config.js";

/**
 * The handshake's one KV bucket, shared by every gateway replica. A hello
 * stores nothing (its state travels in the challenge nonce, under both MACs),
 * so unauthenticated hellos cannot fill a bucket.
 */
export const ReplicaBucket = {
  /**
   * Completed handshakes, for the join step that follows. The create of a
   * session is also the handshake's single-use check, so this TTL must
   * outlive the longest challenge (10 s + the clock-skew allowance): a
   * replayed finish meets either the record or an expired nonce.
   */
  sessions: { name: StoredBucket.replica.sessions, ttl: 600_000, history: 1 },
} as const satisfies Record<string, BucketSpec>;

/** How long a session record lives (the `replica_sessions` TTL). */
export const SESSION_TTL_MS = ReplicaBucket.sessions.ttl;

/** Largest handshake request; both messages are a few hundred bytes. */
export const HANDSHAKE_MAX_PAYLOAD_BYTES = 4096;

/** What the handshake endpoints need. */
export interface HandshakeDeps {
  /** Undefined: no PSK configured, every handshake answers AuthRequired (fail closed). */
  readonly psk?: PskSet | undefined;
  /** This cluster's 16-byte id; undefined (no cluster name) also answers AuthRequired. */
  readonly clusterId?: Uint8Array | undefined;
  /** This acceptor's id, covered by both MACs. */
  readonly acceptorId: string;
  readonly sessions: KV;
}

type Status = (typeof ReplicaHandshakeStatus)[keyof typeof ReplicaHandshakeStatus];
const statusName = (s: Status): string => Object.entries(ReplicaHandshakeStatus).find(([, v]) => v === s)?.[0] ?? String(s);

function isWrongLastSequence(err: unknown): boolean {
  return err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamWrongLastSequence;
}

function unavailable(err: unknown): UnibusError {
  return new UnibusError(ErrorCode.Unavailable, ErrorReason.Unavailable, "service unavailable", { cause: err });
}

// Rejects are logged (who was refused, and why) and answered with the bare
// status. Module-level, not a closure per request: the accepted path is the
// hot one and should allocate nothing it does not use.
function rejectHello(ctx: HandlerContext, req: ReplicaHello, status: Status): Promise<ReplicaChallenge> {
  ctx.logger.info({ replicaId: req.replicaId, status: statusName(status) }, "replica hello rejected");
  return Promise.resolve({ status });
}

function rejectFinish(ctx: HandlerContext, req: ReplicaFinish, status: Status): ReplicaFinishReply {
  ctx.logger.info({ replicaId: req.replicaId, identity: req.identity, status: statusName(status) }, "replica finish rejected");
  return { status };
}

/**
 * The hello and finish handlers of the replica gateway. The hello keeps no
 * state: the challenge nonce carries its expiry and both MACs cover it, so
 * any replica can check a finish; the finish's one create-only write of the
 * session (keyed by the transcript, which holds both nonces) is the
 * single-use check across replicas (contracts/specs/replica-handshake.md).
 */
export function handshakeHandlers(deps: HandshakeDeps) {
  // MAC keys are derived and prepared once per PSK for the process, never
  // per handshake; key ids are public. Neither is ever logged.
  const slots = new Map<string, Blake3Key>();
  if (deps.psk !== undefined) {
    slots.set(toHex(replicaKeyId(deps.psk.current)), prepareReplicaMacKey(replicaMacKey(deps.psk.current)));
    if (deps.psk.previous !== undefined) slots.set(toHex(replicaKeyId(deps.psk.previous)), prepareReplicaMacKey(replicaMacKey(deps.psk.previous)));
  }
  const clusterIdHex = deps.clusterId === undefined ? undefined : toHex(deps.clusterId);
  const ready = slots.size > 0 && clusterIdHex !== undefined;

  const hello = handles("replica", "handshake.hello", {
    maxPayloadBytes: HANDSHAKE_MAX_PAYLOAD_BYTES,
    handler(req, _caller, ctx): Promise<ReplicaChallenge> {
      if (!ready || deps.clusterId === undefined) return rejectHello(ctx, req, ReplicaHandshakeStatus.AuthRequired);
      if (req.version !== REPLICA_HANDSHAKE_VERSION) return rejectHello(ctx, req, ReplicaHandshakeStatus.UnknownCommand);
      if (req.clusterId !== clusterIdHex) return rejectHello(ctx, req, ReplicaHandshakeStatus.ClusterMismatch);
      // An acceptor never accepts itself: stops a hello reflected back from a peer gateway.
      if (req.replicaId === deps.acceptorId) return rejectHello(ctx, req, ReplicaHandshakeStatus.DirectionalRule);
      const macKey = slots.get(req.keyId);
      if (macKey === undefined) return rejectHello(ctx, req, ReplicaHandshakeStatus.MacMismatch);
      // Nothing is stored: a replayed hello only earns another challenge,
      // which nobody without the PSK can finish, and a hello flood cannot
      // fill a bucket.
      const nonceA = acceptorNonce(Math.floor(ctx.now()) + REPLICA_HANDSHAKE_TTL_MS);
      const macA = replicaMac(macKey, { clusterId: deps.clusterId, dialerId: req.replicaId, acceptorId: deps.acceptorId, nonceD: fromHex(req.nonceD), nonceA }, ReplicaDirection.acceptorToDialer);
      return Promise.resolve({ status: ReplicaHandshakeStatus.Ok, acceptorId: deps.acceptorId, nonceA: toHex(nonceA), macA: toHex(macA) });
    },
  });

  const finish = handles("replica", "handshake.finish", {
    maxPayloadBytes: HANDSHAKE_MAX_PAYLOAD_BYTES,
    async handler(req, _caller, ctx): Promise<ReplicaFinishReply> {
      if (!ready || deps.clusterId === undefined) return rejectFinish(ctx, req, ReplicaHandshakeStatus.AuthRequired);
      if (req.clusterId !== clusterIdHex) return rejectFinish(ctx, req, ReplicaHandshakeStatus.ClusterMismatch);
      // The hello at that acceptor refused a dialer bearing its own id; so does its finish, at any replica.
      if (req.replicaId === req.acceptorId) return rejectFinish(ctx, req, ReplicaHandshakeStatus.DirectionalRule);
      const nonceA = fromHex(req.nonceA);
      // The expiry is the challenge's own (covered by both MACs); a forged one fails the MAC below if it is not already dead here.
      if (!acceptorNonceLive(acceptorNonceExpiry(nonceA), ctx.now())) return rejectFinish(ctx, req, ReplicaHandshakeStatus.Expired);
      // The previous PSK may have been removed since the hello: rotation finished.
      const macKey = slots.get(req.keyId);
      if (macKey === undefined) return rejectFinish(ctx, req, ReplicaHandshakeStatus.MacMismatch);
      let identity: Uint8Array;
      try {
        identity = publicKeyFromPrincipal(req.identity);
      } catch {
        return rejectFinish(ctx, req, ReplicaHandshakeStatus.AuthRequired);
      }
      const binding: HandshakeBinding = { clusterId: deps.clusterId, dialerId: req.replicaId, acceptorId: req.acceptorId, nonceD: fromHex(req.nonceD), nonceA };
      // Both MACs and the transcript from one encoding of the binding.
      const { macD, transcript } = replicaProofs(macKey, binding, identity);
      if (!macMatches(macD, fromHex(req.macD))) return rejectFinish(ctx, req, ReplicaHandshakeStatus.MacMismatch);
      if (!verifyReplicaTranscript(identity, transcript, fromHex(req.signature))) return rejectFinish(ctx, req, ReplicaHandshakeStatus.AuthRequired);
      const now = ctx.now();
      const session = {
        sessionId: toHex(replicaSessionId(transcript)),
        clusterId: req.clusterId,
        replicaId: req.replicaId,
        acceptorId: req.acceptorId,
        principal: req.identity,
        createdAt: new Date(now).toISOString(),
        expiresAt: new Date(now + SESSION_TTL_MS).toISOString(),
      };
      // One create-only write is both the single-use check and the record:
      // the session id is derived from the transcript (both nonces, both
      // MACs, the identity), so a replayed finish, here or at any other
      // replica, names the same key and loses; of concurrent copies exactly
      // one wins. The record outlives the challenge, so once it is gone the
      // nonce's expiry refuses the replay instead.
      try {
        await deps.sessions.create(session.sessionId, JSON.stringify(session));
      } catch (err) {
        if (isWrongLastSequence(err)) return rejectFinish(ctx, req, ReplicaHandshakeStatus.Expired);
        throw unavailable(err);
      }
      ctx.logger.info({ replicaId: req.replicaId, identity: req.identity, acceptorId: req.acceptorId, sessionId: session.sessionId }, "replica handshake accepted");
      return { status: ReplicaHandshakeStatus.Ok, session };
    },
  });

  return { hello, finish };
}
