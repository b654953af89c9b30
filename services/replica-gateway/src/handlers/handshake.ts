import { JetStreamApiCodes, JetStreamApiError } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import type { ServiceMsg } from "@nats-io/services";
import { ErrorReason, StoredBucket, Subjects } from "@unibus/contracts";
import {
  acceptorNonce,
  acceptorNonceExpiry,
  acceptorNonceLive,
  constantTimeEqual,
  decodeReplicaFinish,
  decodeReplicaHello,
  encodeReplicaChallenge,
  encodeReplicaFinishReply,
  encodeReplicaStatus,
  macMatches,
  prepareReplicaMacKey,
  principalFromPublicKey,
  REPLICA_FINISH_MAX_BYTES,
  REPLICA_HANDSHAKE_TTL_MS,
  REPLICA_HELLO_MAX_BYTES,
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
import type { Blake3Key, HandshakeBinding, ReplicaFinishMessage, ReplicaHelloMessage } from "@unibus/crypto";
import { rawEndpoint } from "@unibus/kit";
import type { BucketSpec, RawEndpointSpec, RawOutcome } from "@unibus/kit";
import type { Logger } from "pino";
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

/** Largest handshake request: a finish with both ids at their longest (345 bytes); anything larger is refused unread. */
export const HANDSHAKE_MAX_PAYLOAD_BYTES = REPLICA_FINISH_MAX_BYTES;

/** What the handshake endpoints need. */
export interface HandshakeDeps {
  /** Undefined: no PSK configured, every handshake answers AuthRequired (fail closed). */
  readonly psk?: PskSet | undefined;
  /** This cluster's 16-byte id; undefined (no cluster name) also answers AuthRequired. */
  readonly clusterId?: Uint8Array | undefined;
  /** This acceptor's id, covered by both MACs. */
  readonly acceptorId: string;
  readonly sessions: KV;
  /** The clock (Unix ms); default `Date.now`. */
  readonly now?: () => number;
}

type Status = (typeof ReplicaHandshakeStatus)[keyof typeof ReplicaHandshakeStatus];
const statusName = (s: Status): string => Object.entries(ReplicaHandshakeStatus).find(([, v]) => v === s)?.[0] ?? String(s);

/** What the endpoint stats record for a request that was not its layout, or larger than any valid one. */
const MALFORMED: RawOutcome = { code: 400, reason: "malformed_message" };
const OVERSIZE: RawOutcome = { code: 413, reason: ErrorReason.PayloadTooLarge };
/** A store failure: the finish fails closed, never accepts (the kit's 503 for a JSON endpoint). */
const UNAVAILABLE: RawOutcome = { code: 503, reason: ErrorReason.Unavailable };

function isWrongLastSequence(err: unknown): boolean {
  return err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamWrongLastSequence;
}

// Rejects are logged (who was refused, and why) and answered with the bare
// status. Module-level, not a closure per request: the accepted path is the
// hot one and should allocate nothing it does not use.
function reject(msg: ServiceMsg, logger: Logger, stage: "hello" | "finish", who: Record<string, string>, status: Status, outcome?: RawOutcome): RawOutcome {
  logger.info({ ...who, status: statusName(status) }, `replica ${stage} rejected`);
  msg.respond(encodeReplicaStatus(status));
  return outcome;
}

function rejectHello(msg: ServiceMsg, logger: Logger, h: ReplicaHelloMessage, status: Status): Promise<RawOutcome> {
  return Promise.resolve(reject(msg, logger, "hello", { replicaId: h.replicaId }, status));
}

// Who was refused is built only for a reject, never on the accepted path.
function rejectFinish(msg: ServiceMsg, logger: Logger, f: ReplicaFinishMessage, status: Status): RawOutcome {
  return reject(msg, logger, "finish", { replicaId: f.replicaId, identity: principalFromPublicKey(f.identity) }, status);
}

/** Refuses a request that is not its message: oversize unread, else its parse status (UnknownCommand for another version, Malformed otherwise). */
function refuseUnparsed(msg: ServiceMsg, logger: Logger, stage: "hello" | "finish", status: Status, oversize: boolean): RawOutcome {
  return reject(msg, logger, stage, { bytes: String(msg.data.byteLength) }, oversize ? ReplicaHandshakeStatus.Malformed : status, oversize ? OVERSIZE : status === ReplicaHandshakeStatus.Malformed ? MALFORMED : undefined);
}

/**
 * The hello and finish endpoints of the replica gateway, in the handshake's
 * fixed binary layout (contracts/specs/replica-handshake.md), served as kit
 * raw endpoints: stats, metrics and the `_INBOX.` reply rule as for any
 * endpoint, no JSON, no schema, no envelope (the handshake authenticates
 * itself). The hello keeps no state: the challenge nonce carries its expiry
 * and both MACs cover it, so any replica can check a finish; the finish's
 * one create-only write of the session (keyed by the transcript, which holds
 * both nonces) is the single-use check across replicas.
 */
export function handshakeHandlers(deps: HandshakeDeps): { readonly hello: RawEndpointSpec; readonly finish: RawEndpointSpec } {
  // MAC keys are derived and prepared once per PSK for the process, never
  // per handshake; key ids are public. Neither is ever logged.
  const slots: { readonly keyId: Uint8Array; readonly macKey: Blake3Key }[] = [];
  if (deps.psk !== undefined) {
    for (const psk of deps.psk.previous === undefined ? [deps.psk.current] : [deps.psk.current, deps.psk.previous]) slots.push({ keyId: replicaKeyId(psk), macKey: prepareReplicaMacKey(replicaMacKey(psk)) });
  }
  // The MAC key a message's key id names (current or previous PSK). Key ids are public, so a plain compare.
  const macKeyFor = (keyId: Uint8Array): Blake3Key | undefined => slots.find((s) => s.keyId.length === keyId.length && s.keyId.every((b, i) => b === keyId[i]))?.macKey;
  const clusterId = deps.clusterId;
  const clusterIdHex = clusterId === undefined ? undefined : toHex(clusterId);
  const ready = slots.length > 0 && clusterId !== undefined;
  const now = deps.now ?? Date.now;
  const acceptorId = deps.acceptorId;

  const hello = rawEndpoint({
    subject: Subjects.replicaGateway.handshakeHello,
    protocol: "unibus-replica-handshake-v1",
    replyPrefix: "_INBOX.",
    handler(msg, { logger }): Promise<RawOutcome> {
      const d = msg.data;
      const h = d.byteLength > REPLICA_HELLO_MAX_BYTES ? ReplicaHandshakeStatus.Malformed : decodeReplicaHello(d);
      if (typeof h === "number") return Promise.resolve(refuseUnparsed(msg, logger, "hello", h, d.byteLength > REPLICA_HELLO_MAX_BYTES));
      if (!ready) return rejectHello(msg, logger, h, ReplicaHandshakeStatus.AuthRequired);
      if (!constantTimeEqual(h.clusterId, clusterId)) return rejectHello(msg, logger, h, ReplicaHandshakeStatus.ClusterMismatch);
      // An acceptor never accepts itself: stops a hello reflected back from a peer gateway.
      if (h.replicaId === acceptorId) return rejectHello(msg, logger, h, ReplicaHandshakeStatus.DirectionalRule);
      const macKey = macKeyFor(h.keyId);
      if (macKey === undefined) return rejectHello(msg, logger, h, ReplicaHandshakeStatus.MacMismatch);
      // Nothing is stored: a replayed hello only earns another challenge,
      // which nobody without the PSK can finish, and a hello flood cannot
      // fill a bucket.
      const nonceA = acceptorNonce(Math.floor(now()) + REPLICA_HANDSHAKE_TTL_MS);
      const macA = replicaMac(macKey, { clusterId, dialerId: h.replicaId, acceptorId, nonceD: h.nonceD, nonceA }, ReplicaDirection.acceptorToDialer);
      msg.respond(encodeReplicaChallenge({ nonceA, macA, acceptorId }));
      return Promise.resolve(undefined);
    },
  });

  const finish = rawEndpoint({
    subject: Subjects.replicaGateway.handshakeFinish,
    protocol: "unibus-replica-handshake-v1",
    replyPrefix: "_INBOX.",
    async handler(msg, { logger }): Promise<RawOutcome> {
      const d = msg.data;
      const f = d.byteLength > REPLICA_FINISH_MAX_BYTES ? ReplicaHandshakeStatus.Malformed : decodeReplicaFinish(d);
      if (typeof f === "number") return refuseUnparsed(msg, logger, "finish", f, d.byteLength > REPLICA_FINISH_MAX_BYTES);
      if (!ready) return rejectFinish(msg, logger, f, ReplicaHandshakeStatus.AuthRequired);
      if (!constantTimeEqual(f.clusterId, clusterId)) return rejectFinish(msg, logger, f, ReplicaHandshakeStatus.ClusterMismatch);
      // The hello at that acceptor refused a dialer bearing its own id; so does its finish, at any replica.
      if (f.replicaId === f.acceptorId) return rejectFinish(msg, logger, f, ReplicaHandshakeStatus.DirectionalRule);
      // The expiry is the challenge's own (covered by both MACs); a forged one fails the MAC below if it is not already dead here.
      if (!acceptorNonceLive(acceptorNonceExpiry(f.nonceA), now())) return rejectFinish(msg, logger, f, ReplicaHandshakeStatus.Expired);
      // The previous PSK may have been removed since the hello: rotation finished.
      const macKey = macKeyFor(f.keyId);
      if (macKey === undefined) return rejectFinish(msg, logger, f, ReplicaHandshakeStatus.MacMismatch);
      const binding: HandshakeBinding = { clusterId, dialerId: f.replicaId, acceptorId: f.acceptorId, nonceD: f.nonceD, nonceA: f.nonceA };
      // Both MACs and the transcript from one encoding of the binding.
      const { macD, transcript } = replicaProofs(macKey, binding, f.identity);
      if (!macMatches(macD, f.macD)) return rejectFinish(msg, logger, f, ReplicaHandshakeStatus.MacMismatch);
      if (!verifyReplicaTranscript(f.identity, transcript, f.signature)) return rejectFinish(msg, logger, f, ReplicaHandshakeStatus.AuthRequired);
      const at = Math.floor(now());
      const sessionId = replicaSessionId(transcript);
      // The record later steps (register, commit, join) read: JSON, as before.
      const session = {
        sessionId: toHex(sessionId),
        clusterId: clusterIdHex,
        replicaId: f.replicaId,
        acceptorId: f.acceptorId,
        principal: principalFromPublicKey(f.identity),
        createdAt: new Date(at).toISOString(),
        expiresAt: new Date(at + SESSION_TTL_MS).toISOString(),
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
        if (isWrongLastSequence(err)) return rejectFinish(msg, logger, f, ReplicaHandshakeStatus.Expired);
        logger.warn({ err: err instanceof Error ? err.message : String(err) }, "session store unavailable");
        msg.respondError(503, "service unavailable");
        return UNAVAILABLE;
      }
      msg.respond(encodeReplicaFinishReply({ sessionId, createdAt: at, expiresAt: at + SESSION_TTL_MS }));
      logger.info({ replicaId: f.replicaId, identity: session.principal, acceptorId: f.acceptorId, sessionId: session.sessionId }, "replica handshake accepted");
      return undefined;
    },
  });

  return { hello, finish };
}
