import type { NatsConnection } from "@nats-io/transport-node";
import { ServiceName } from "@unibus/contracts";
import { defineService, startService } from "@unibus/kit";
import type { KitDeps, RunningService } from "@unibus/kit";
import packageJson from "../package.json" with { type: "json" };

/** The blobs service. Endpoints arrive with later issues; it already registers so `$SRV.INFO` lists it. */
export const blobsService = defineService({
  name: ServiceName.blobs,
  version: packageJson.version,
  description: "Content-addressed encrypted blobs in the object store",
  endpoints: {},
});

/** Starts the blobs service on `nc`. */
export function createBlobsService(nc: NatsConnection, deps: KitDeps = {}): Promise<RunningService> {
  return startService(nc, blobsService, deps);
}
