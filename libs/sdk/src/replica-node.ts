/**
 * The node side of the cluster lifecycle (contracts/specs/replica-lifecycle.md):
 * register (ticket + join key → NEW), commit (the node's cluster unlock key
 * share, sealed to the cluster → UP) and join (every boot: the CUK back,
 * sealed to the node). Each request is signed by the node's join key and
 * names a finished PSK handshake session of that same key.
 */
import type { NatsConnection } from "@nats-io/nats-core";
import { Subjects } from "@unibus/contracts";
import type { ReplicaCommitReply, ReplicaJoinReply, ReplicaRegisterReply } from "@unibus/contracts";
import { clusterIdFromName, fromBase64Url, fromHex, nodeAgreementBytes, openSealed, randomBytes, sealTo, toBase64Url, toHex } from "@unibus/crypto";
import type { Identity } from "@unibus/crypto";
import { signedRequest } from "./signed-request.js";

const TIMEOUT_MS = 10_000;

/** What every node step needs: the node's identity (its join key) and a finished handshake session of it. */
export interface NodeStepOptions {
  /** The node's identity: the Ed25519 key is the join key, the X25519 key receives the CUK. */
  readonly identity: Identity;
  readonly nodeId: string;
  /** `sessionId` of a finished handshake by this identity. */
  readonly sessionId: string;
  readonly timeoutMs?: number;
}

/** Registers the node with a one-time ticket: NEW. The reply names the cluster's public keys, for the node's home. */
export async function registerNode(nc: NatsConnection, opts: NodeStepOptions & { clusterName: string; ticket: string }): Promise<ReplicaRegisterReply> {
  const clusterId = clusterIdFromName(opts.clusterName);
  // The join key vouches for the agreement key, so no gateway can swap in its own and read the CUK.
  const agreementSig = toHex(opts.identity.signingKey.sign(nodeAgreementBytes(clusterId, opts.nodeId, opts.identity.agreementPublicKey)));
  return signedRequest<ReplicaRegisterReply>(
    nc,
    opts.identity.signingKey,
    Subjects.replicaGateway.handshakeRegister,
    { sessionId: opts.sessionId, nodeId: opts.nodeId, ticket: opts.ticket, agreementKey: toHex(opts.identity.agreementPublicKey), agreementSig },
    opts.timeoutMs ?? TIMEOUT_MS,
  );
}

/** What {@link commitNode} returns: the CUK the node made (a secret) and the gateway's wrapped copy for the node's home. */
export interface CommitResult {
  readonly reply: ReplicaCommitReply;
  readonly cuk: Uint8Array;
  readonly wrappedCuk: Uint8Array;
}

/**
 * Commits a fresh cluster unlock key share (32 random bytes), sealed to the
 * cluster agreement key (hex, from the register reply): UP. Only an approved
 * (STANDBY) node may commit.
 */
export async function commitNode(nc: NatsConnection, opts: NodeStepOptions & { clusterAgreementKey: string; cuk?: Uint8Array }): Promise<CommitResult> {
  const cuk = opts.cuk ?? randomBytes(32);
  const sealedCuk = toBase64Url(sealTo(fromHex(opts.clusterAgreementKey), cuk));
  const reply = await signedRequest<ReplicaCommitReply>(nc, opts.identity.signingKey, Subjects.replicaGateway.handshakeCommit, { sessionId: opts.sessionId, nodeId: opts.nodeId, sealedCuk }, opts.timeoutMs ?? TIMEOUT_MS);
  return { reply, cuk, wrappedCuk: fromBase64Url(reply.wrappedCuk) };
}

/** Joins on boot: returns the node's CUK (a secret: never log it). Only an UP node gets it; a decommissioned one never again. */
export async function joinNode(nc: NatsConnection, opts: NodeStepOptions): Promise<Uint8Array> {
  const reply = await signedRequest<ReplicaJoinReply>(nc, opts.identity.signingKey, Subjects.replicaGateway.handshakeJoin, { sessionId: opts.sessionId, nodeId: opts.nodeId }, opts.timeoutMs ?? TIMEOUT_MS);
  return openSealed(opts.identity.agreementSecretKey, fromBase64Url(reply.sealedCuk));
}
