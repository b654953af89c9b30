import { JetStreamApiCodes, JetStreamApiError } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import { ErrorCode, ErrorReason, StoredBucket, UnibusError } from "@unibus/contracts";
import type { ReplicaChallenge, ReplicaFinishReply } from "@unibus/contracts";
import {
  acceptorMac,
  dialerMac,
  fromHex,
  macMatches,
  publicKeyFromPrincipal,
  randomBytes,
  REPLICA_HANDSHAKE_TTL_MS,
  REPLICA_HANDSHAKE_VERSION,
  REPLICA_NONCE_BYTES,
  ReplicaHandshakeStatus,
  replicaKeyId,
  replicaSessionId,
  replicaTranscript,
  toHex,
  verifyReplicaTranscript,
} from "@unibus/crypto";
import type { HandshakeBinding } from "@unibus/crypto";
import { handles } from "@unibus/kit";
import type { BucketSpec } from "@unibus/kit";
import type { PskSet } from "../config.js";

/**
 * The gateway's KV buckets, shared by every gateway replica so a hello and its
 * finish may reach different replicas and a nonce is single-use across all.
 * Handshakes: `d.<nonceD>` markers and `a.<nonceA>` states; the TTL outlives
 * the 10 s state expiry so used nonces and consumed states stay visible; the
 * size cap bounds what unauthenticated hellos can store (full = 503, never accept).
 */
export const ReplicaBucket = {
  handshakes: { name: StoredBucket.replica.handshakes, ttl: 120_000, history: 1, maxBytes: 16 * 1024 * 1024 },
  /** Completed handshakes, for the join step that follows. */
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
  readonly handshakes: KV;
  readonly sessions: KV;
}

/** The state a hello leaves for its finish, under `a.<nonceA>`. */
interface HandshakeState {
  readonly replicaId: string;
  readonly nonceD: string;
  readonly keyId: string;
  readonly acceptorId: string;
  readonly clusterId: string;
  readonly expiresAt: number;
  readonly consumed?: true;
}

type Status = (typeof ReplicaHandshakeStatus)[keyof typeof ReplicaHandshakeStatus];
const statusName = (s: Status): string => Object.entries(ReplicaHandshakeStatus).find(([, v]) => v === s)?.[0] ?? String(s);

function isWrongLastSequence(err: unknown): boolean {
  return err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamWrongLastSequence;
}

function unavailable(err: unknown): UnibusError {
  return new UnibusError(ErrorCode.Unavailable, ErrorReason.Unavailable, "service unavailable", { cause: err });
}

/** The hello and finish handlers of the replica gateway. */
export function handshakeHandlers(deps: HandshakeDeps) {
  // Key ids are public and fixed for the process: computed once, never logged with the PSK.
  const slots = new Map<string, Uint8Array>();
  if (deps.psk !== undefined) {
    slots.set(toHex(replicaKeyId(deps.psk.current)), deps.psk.current);
    if (deps.psk.previous !== undefined) slots.set(toHex(replicaKeyId(deps.psk.previous)), deps.psk.previous);
  }
  const clusterIdHex = deps.clusterId === undefined ? undefined : toHex(deps.clusterId);
  const ready = slots.size > 0 && clusterIdHex !== undefined;

  const hello = handles("replica", "handshake.hello", {
    maxPayloadBytes: HANDSHAKE_MAX_PAYLOAD_BYTES,
    async handler(req, _caller, ctx): Promise<ReplicaChallenge> {
      const reject = (status: Status): ReplicaChallenge => {
        ctx.logger.info({ replicaId: req.replicaId, status: statusName(status) }, "replica hello rejected");
        return { status };
      };
      if (!ready) return reject(ReplicaHandshakeStatus.AuthRequired);
      if (req.version !== REPLICA_HANDSHAKE_VERSION) return reject(ReplicaHandshakeStatus.UnknownCommand);
      if (req.clusterId !== clusterIdHex) return reject(ReplicaHandshakeStatus.ClusterMismatch);
      // An acceptor never accepts itself: stops a hello reflected back from a peer gateway.
      if (req.replicaId === deps.acceptorId) return reject(ReplicaHandshakeStatus.DirectionalRule);
      const psk = slots.get(req.keyId);
      if (psk === undefined) return reject(ReplicaHandshakeStatus.MacMismatch);
      const nonceA = randomBytes(REPLICA_NONCE_BYTES);
      const stateKey = `a.${toHex(nonceA)}`;
      const state: HandshakeState = {
        replicaId: req.replicaId,
        nonceD: req.nonceD,
        keyId: req.keyId,
        acceptorId: deps.acceptorId,
        clusterId: req.clusterId,
        expiresAt: ctx.now() + REPLICA_HANDSHAKE_TTL_MS,
      };
      // Both writes at once (one KV round trip of latency, not two). The
      // nonce marker decides: single use across gateway replicas, since the
      // create fails if any replica saw this nonce. On a replay the state
      // written beside it is never revealed (its nonceA is not sent) and is
      // removed, or expires with the bucket's TTL.
      const [marker, written] = await Promise.allSettled([deps.handshakes.create(`d.${req.nonceD}`, ""), deps.handshakes.create(stateKey, JSON.stringify(state))]);
      if (marker.status === "rejected" || written.status === "rejected") {
        if (written.status === "fulfilled") await deps.handshakes.delete(stateKey).catch(() => undefined);
        if (marker.status === "rejected" && isWrongLastSequence(marker.reason)) return reject(ReplicaHandshakeStatus.Expired);
        throw unavailable(marker.status === "rejected" ? marker.reason : (written as PromiseRejectedResult).reason);
      }
      const macA = acceptorMac(psk, { clusterId: fromHex(req.clusterId), dialerId: req.replicaId, acceptorId: deps.acceptorId, nonceD: fromHex(req.nonceD), nonceA });
      ctx.logger.debug({ replicaId: req.replicaId }, "replica hello challenged");
      return { status: ReplicaHandshakeStatus.Ok, acceptorId: deps.acceptorId, nonceA: toHex(nonceA), macA: toHex(macA) };
    },
  });

  const finish = handles("replica", "handshake.finish", {
    maxPayloadBytes: HANDSHAKE_MAX_PAYLOAD_BYTES,
    async handler(req, _caller, ctx): Promise<ReplicaFinishReply> {
      // Filled once the state is read, so a reject names the replica when it can.
      const who: { replicaId?: string } = {};
      const reject = (status: Status): ReplicaFinishReply => {
        ctx.logger.info({ replicaId: who.replicaId, identity: req.identity, status: statusName(status) }, "replica finish rejected");
        return { status };
      };
      if (!ready) return reject(ReplicaHandshakeStatus.AuthRequired);
      const key = `a.${req.nonceA}`;
      let entry;
      try {
        entry = await deps.handshakes.get(key);
      } catch (err) {
        throw unavailable(err);
      }
      if (entry === null || entry.operation !== "PUT") return reject(ReplicaHandshakeStatus.Expired);
      let state: HandshakeState;
      try {
        state = entry.json<HandshakeState>();
      } catch (err) {
        throw new UnibusError(ErrorCode.Internal, ErrorReason.Internal, "internal error", { cause: err });
      }
      who.replicaId = state.replicaId;
      if (state.consumed === true || ctx.now() > state.expiresAt) return reject(ReplicaHandshakeStatus.Expired);
      // A state written by another cluster's or acceptor's config is not ours to finish.
      if (state.clusterId !== clusterIdHex) return reject(ReplicaHandshakeStatus.ClusterMismatch);
      // The previous PSK may have been removed since the hello: rotation finished.
      const psk = slots.get(state.keyId);
      if (psk === undefined) return reject(ReplicaHandshakeStatus.MacMismatch);
      let identity: Uint8Array;
      try {
        identity = publicKeyFromPrincipal(req.identity);
      } catch {
        return reject(ReplicaHandshakeStatus.AuthRequired);
      }
      const binding: HandshakeBinding = {
        clusterId: fromHex(state.clusterId),
        dialerId: state.replicaId,
        acceptorId: state.acceptorId,
        nonceD: fromHex(state.nonceD),
        nonceA: fromHex(req.nonceA),
      };
      const macD = fromHex(req.macD);
      if (!macMatches(dialerMac(psk, binding, identity), macD)) return reject(ReplicaHandshakeStatus.MacMismatch);
      const transcript = replicaTranscript(binding, acceptorMac(psk, binding), macD, identity);
      if (!verifyReplicaTranscript(identity, transcript, fromHex(req.signature))) return reject(ReplicaHandshakeStatus.AuthRequired);
      const now = ctx.now();
      const session = {
        sessionId: toHex(replicaSessionId(transcript)),
        clusterId: state.clusterId,
        replicaId: state.replicaId,
        acceptorId: state.acceptorId,
        principal: req.identity,
        createdAt: new Date(now).toISOString(),
        expiresAt: new Date(now + SESSION_TTL_MS).toISOString(),
      };
      // Consume and record at once (one round trip of latency). The
      // compare-and-set on the revision read above decides: of two finishes
      // for one state (a replay, on this or another gateway replica) only one
      // wins. The session id is derived from the transcript, so a session
      // that already exists under it came from this very handshake: the
      // create only refuses to refresh it on a replay.
      const [consumed, recorded] = await Promise.allSettled([
        deps.handshakes.update(key, JSON.stringify({ ...state, consumed: true }), entry.revision),
        deps.sessions.create(session.sessionId, JSON.stringify(session)),
      ]);
      if (consumed.status === "rejected") {
        if (isWrongLastSequence(consumed.reason)) return reject(ReplicaHandshakeStatus.Expired);
        throw unavailable(consumed.reason);
      }
      if (recorded.status === "rejected" && !isWrongLastSequence(recorded.reason)) throw unavailable(recorded.reason);
      ctx.logger.info({ replicaId: state.replicaId, identity: req.identity, acceptorId: state.acceptorId, sessionId: session.sessionId }, "replica handshake accepted");
      return { status: ReplicaHandshakeStatus.Ok, session };
    },
  });

  return { hello, finish };
}
