import type { NatsConnection } from "@nats-io/transport-node";
import { ServiceName } from "@unibus/contracts";
import { defineService, startService } from "@unibus/kit";
import type { KitDeps, RunningService } from "@unibus/kit";
import packageJson from "../package.json" with { type: "json" };

/** The keys service. Endpoints arrive with later issues; it already registers so `$SRV.INFO` lists it. */
export const keysService = defineService({
  name: ServiceName.keys,
  version: packageJson.version,
  description: "Sealed room-key shares and key epochs",
  endpoints: {},
});

/** Starts the keys service on `nc`. */
export function createKeysService(nc: NatsConnection, deps: KitDeps = {}): Promise<RunningService> {
  return startService(nc, keysService, deps);
}
