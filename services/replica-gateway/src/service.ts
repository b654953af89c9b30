import type { NatsConnection } from "@nats-io/transport-node";
import { ServiceName } from "@unibus/contracts";
import { defineService, startService } from "@unibus/kit";
import type { KitDeps, RunningService } from "@unibus/kit";
import packageJson from "../package.json" with { type: "json" };

/** The replica-gateway service. Endpoints arrive with later issues; it already registers so `$SRV.INFO` lists it. */
export const replicaGatewayService = defineService({
  name: ServiceName.replicaGateway,
  version: packageJson.version,
  description: "Cluster membership: PSK handshake, node join, unlock keys, recovery",
  endpoints: {},
});

/** Starts the replica-gateway service on `nc`. */
export function createReplicaGatewayService(nc: NatsConnection, deps: KitDeps = {}): Promise<RunningService> {
  return startService(nc, replicaGatewayService, deps);
}
