import type { NatsConnection } from "@nats-io/transport-node";
import type { KV } from "@nats-io/kv";
import { microEndpointName, ServiceName } from "@unibus/contracts";
import { clusterIdFromName, gatewayAgreementBytes, generateAgreementKeyPair, SigningKey, toHex } from "@unibus/crypto";
import type { AgreementKeyPair } from "@unibus/crypto";
import { Access, defineService, endpointTable, lazyUsersRoleResolver, openBuckets, serviceJetStream, startService } from "@unibus/kit";
import type { KitDeps, RunningService, ServiceDefinition } from "@unibus/kit";
import { pino } from "pino";
import packageJson from "../package.json" with { type: "json" };
import type { GatewayConfig } from "./config.js";
import { handshakeHandlers, ReplicaBucket } from "./handlers/handshake.js";
import type { HandshakeDeps } from "./handlers/handshake.js";
import { ClusterCore, LifecycleBucket, lifecycleHandlers } from "./handlers/lifecycle.js";

/** The acceptor id used when none is configured. */
export const DEFAULT_ACCEPTOR_ID = "replica-gateway";

/**
 * The replica-gateway service definition: every endpoint it exposes, in one
 * table: the PSK handshake (binary, raw endpoints) and, with a cluster core, the node lifecycle,
 * history and recovery endpoints. Subjects and schema ids follow from the
 * names (`unibus.v1.replica.<name>`, `replica.<name>.request|reply`). The
 * micro metadata publishes the replica's principal and per-process
 * agreement key (signed), so the admin CLI can seal the seed to every replica.
 */
export function replicaGatewayService(deps: HandshakeDeps, core?: ClusterCore): ServiceDefinition {
  const handshake = handshakeHandlers(deps);
  const lifecycle = core === undefined ? undefined : lifecycleHandlers(core);
  const metadata =
    core === undefined
      ? undefined
      : {
          principal: core.deps.identity.principal,
          agreementKey: toHex(core.deps.agreement.publicKey),
          agreementSig: toHex(core.deps.identity.sign(gatewayAgreementBytes(core.deps.identity.principal, core.deps.agreement.publicKey))),
        };
  return defineService({
    name: ServiceName.replicaGateway,
    version: packageJson.version,
    description: "Cluster membership: PSK handshake, node join, unlock keys, recovery",
    ...(metadata === undefined ? {} : { metadata }),
    endpoints: endpointTable(
      "replica",
      {
        ...(lifecycle === undefined
          ? {}
          : {
              // Signed by the node, with a handshake session.
              "handshake.register": { access: Access.Signed, mutates: true, impl: lifecycle.register },
              "handshake.commit": { access: Access.Signed, mutates: true, impl: lifecycle.commit },
              "handshake.join": { access: Access.Signed, mutates: true, impl: lifecycle.join },
              info: { access: Access.Public, mutates: false, impl: lifecycle.info },
              init: { access: Access.Admin, mutates: true, impl: lifecycle.init },
              recover: { access: Access.Admin, mutates: true, impl: lifecycle.recover },
              history: { access: Access.Admin, mutates: false, impl: lifecycle.history },
              ticket: { access: Access.Admin, mutates: true, impl: lifecycle.ticket },
              approve: { access: Access.Admin, mutates: true, impl: lifecycle.approve },
              decommission: { access: Access.Admin, mutates: true, impl: lifecycle.decommission },
              nodes: { access: Access.Admin, mutates: false, impl: lifecycle.nodes },
              "gateway.add": { access: Access.Admin, mutates: true, impl: lifecycle.gatewayAdd },
              "gateway.remove": { access: Access.Admin, mutates: true, impl: lifecycle.gatewayRemove },
            }),
      },
      // Without a cluster core the gateway serves the handshake alone (and answers it AuthRequired).
      { subset: true },
    ),
    // Before any identity: the PSK handshake authenticates itself, in its own
    // binary layout (no JSON, no envelope); the finish keeps its single-use session.
    raw: { [microEndpointName("handshake.hello")]: handshake.hello, [microEndpointName("handshake.finish")]: handshake.finish },
  });
}

/** Options of {@link createReplicaGatewayService}: the kit's deps plus the gateway config. */
export interface ReplicaGatewayOptions extends KitDeps, GatewayConfig {
  /** The gateway's service identity (named in the genesis, signs seed requests); default a fresh one per process, which no manifest lists. */
  identity?: SigningKey;
  /** How long a seed request waits for peers. */
  seedWaitMs?: number;
  /** How often a locked replica asks its peers again. */
  peerRetryMs?: number;
}

/** A running gateway, with its buckets for tests and later steps. */
export interface RunningReplicaGateway extends RunningService {
  readonly buckets: { readonly sessions: KV; readonly history: KV; readonly nodes: KV; readonly tickets: KV; readonly cuks: KV };
  readonly acceptorId: string;
  readonly principal: string;
  /** The seed holder (tests read whether it is locked). */
  readonly core: ClusterCore;
}

/**
 * Opens the gateway's buckets and starts it on `nc`. Without a PSK or a
 * cluster name it still starts (the single-node default has no cluster) and
 * answers every handshake with AuthRequired.
 */
export async function createReplicaGatewayService(nc: NatsConnection, opts: ReplicaGatewayOptions = {}): Promise<RunningReplicaGateway> {
  const logger = opts.logger ?? pino({ level: "info" });
  const replicas = opts.bucketReplicas ?? 1;
  const kv = await openBuckets(
    // Bounded like every service's JetStream calls: a leaderless bucket is a coded 503 before the node's request times out.
    serviceJetStream(nc),
    [
      { ...ReplicaBucket.sessions, replicas },
      ...Object.values(LifecycleBucket).map((b) => ({ ...b, replicas })),
    ],
    { budgetMs: opts.bucketBudgetMs ?? 30_000, logger: logger.child({ svc: ServiceName.replicaGateway }) },
  );
  const acceptorId = opts.acceptorId ?? DEFAULT_ACCEPTOR_ID;
  const deps: HandshakeDeps = {
    psk: opts.psk,
    clusterId: opts.clusterName === undefined ? undefined : clusterIdFromName(opts.clusterName),
    acceptorId,
    sessions: kv.replica_sessions,
    now: opts.now ?? Date.now,
  };
  // Only the fact, never the key: whether the handshake can succeed at all.
  logger.info({ svc: ServiceName.replicaGateway, op: "config", acceptorId, psk: opts.psk === undefined ? "none" : opts.psk.previous === undefined ? "current" : "current+previous", cluster: opts.clusterName !== undefined }, "replica gateway configured");
  const identity = opts.identity ?? SigningKey.generate();
  if (opts.identity === undefined) logger.warn({ svc: ServiceName.replicaGateway, op: "config", principal: identity.principal }, "no service identity: a per-process one is used, which no cluster manifest lists");
  const agreement: AgreementKeyPair = generateAgreementKeyPair();
  const svcLogger = logger.child({ svc: ServiceName.replicaGateway });
  const core = new ClusterCore({
    nc,
    identity,
    agreement,
    clusterName: opts.clusterName,
    history: kv.replica_history,
    nodes: kv.replica_nodes,
    tickets: kv.replica_tickets,
    cuks: kv.replica_cuks,
    sessions: kv.replica_sessions,
    logger: svcLogger,
    now: opts.now ?? Date.now,
    ...(opts.seedWaitMs === undefined ? {} : { seedWaitMs: opts.seedWaitMs }),
    ...(opts.peerRetryMs === undefined ? {} : { peerRetryMs: opts.peerRetryMs }),
  });
  core.listen();
  const running = await startService(nc, replicaGatewayService(deps, core), { ...opts, logger, resolveRole: opts.resolveRole ?? lazyUsersRoleResolver(nc) });
  // A fresh replica of an initialised cluster asks its peers for the seed; until then it answers 503 cluster_locked.
  void core.askPeers();
  return {
    ...running,
    async stop() {
      core.stop();
      await running.stop();
    },
    buckets: { sessions: kv.replica_sessions, history: kv.replica_history, nodes: kv.replica_nodes, tickets: kv.replica_tickets, cuks: kv.replica_cuks },
    acceptorId,
    principal: identity.principal,
    core,
  };
}
