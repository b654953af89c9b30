import type { NatsConnection } from "@nats-io/transport-node";
import { ServiceName, Subjects } from "@unibus/contracts";
import { Access, defineService, endpoint, startService } from "@unibus/kit";
import type { KitDeps, RunningService } from "@unibus/kit";
import packageJson from "../package.json" with { type: "json" };

/** The healthz service: liveness and (later) posture of the bus. */
export const healthzService = defineService({
  name: ServiceName.healthz,
  version: packageJson.version,
  description: "Health, posture and version report of the bus",
  endpoints: {
    status: endpoint({
      subject: Subjects.healthz.status,
      request: "healthz.status.request",
      reply: "healthz.status.reply",
      mutates: false,
      // Public so probes and not-yet-enrolled clients can check the bus is up;
      // it reveals only versions.
      access: Access.Public,
      async handler() {
        return { status: "ok", service: ServiceName.healthz, version: packageJson.version };
      },
    }),
  },
});

/** Starts the healthz service on `nc`. */
export function createHealthzService(nc: NatsConnection, deps: KitDeps = {}): Promise<RunningService> {
  return startService(nc, healthzService, deps);
}
