import type { NatsConnection } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import { ServiceName } from "@unibus/contracts";
import { clusterIdFromName } from "@unibus/crypto";
import { defineService, openBuckets, startService } from "@unibus/kit";
import type { KitDeps, RunningService, ServiceDefinition } from "@unibus/kit";
import { pino } from "pino";
import packageJson from "../package.json" with { type: "json" };
import type { GatewayConfig } from "./config.js";
import { handshakeEndpoints, ReplicaBucket } from "./handshake.js";
import type { HandshakeDeps } from "./handshake.js";

/** The acceptor id used when none is configured. */
export const DEFAULT_ACCEPTOR_ID = "replica-gateway";

/** The replica-gateway service definition: the PSK handshake for now; join, unlock and recovery follow. */
export function replicaGatewayService(deps: HandshakeDeps): ServiceDefinition {
  return defineService({
    name: ServiceName.replicaGateway,
    version: packageJson.version,
    description: "Cluster membership: PSK handshake, node join, unlock keys, recovery",
    endpoints: { ...handshakeEndpoints(deps) },
  });
}

/** Options of {@link createReplicaGatewayService}: the kit's deps plus the gateway config. */
export interface ReplicaGatewayOptions extends KitDeps, GatewayConfig {}

/** A running gateway, with its buckets for tests and later steps. */
export interface RunningReplicaGateway extends RunningService {
  readonly buckets: { readonly handshakes: KV; readonly sessions: KV };
  readonly acceptorId: string;
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
    jetstream(nc),
    [
      { ...ReplicaBucket.handshakes, replicas },
      { ...ReplicaBucket.sessions, replicas },
    ],
    { budgetMs: opts.bucketBudgetMs ?? 30_000, logger: logger.child({ svc: ServiceName.replicaGateway }) },
  );
  const acceptorId = opts.acceptorId ?? DEFAULT_ACCEPTOR_ID;
  const deps: HandshakeDeps = {
    psk: opts.psk,
    clusterId: opts.clusterName === undefined ? undefined : clusterIdFromName(opts.clusterName),
    acceptorId,
    handshakes: kv.replica_handshakes,
    sessions: kv.replica_sessions,
  };
  // Only the fact, never the key: whether the handshake can succeed at all.
  logger.info({ svc: ServiceName.replicaGateway, op: "config", acceptorId, psk: opts.psk === undefined ? "none" : opts.psk.previous === undefined ? "current" : "current+previous", cluster: opts.clusterName !== undefined }, "replica gateway configured");
  const running = await startService(nc, replicaGatewayService(deps), { ...opts, logger });
  return { ...running, buckets: { handshakes: kv.replica_handshakes, sessions: kv.replica_sessions }, acceptorId };
}
