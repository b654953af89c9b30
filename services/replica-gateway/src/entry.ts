import { ServiceName } from "@unibus/contracts";
import { kitServiceEntry } from "@unibus/kit";
import type { ServiceEntry } from "@unibus/kit";
import { loadGatewayConfig } from "./config.js";
import { createReplicaGatewayService } from "./service.js";

/**
 * How a process runs the replica gateway. The config is read inside create so
 * an unusable PSK (short, a file others can read) fails the start with the
 * kit's one fatal log line, never a stack trace, and never a gateway that
 * silently refuses every node.
 */
export const replicaGatewayEntry: ServiceEntry = kitServiceEntry(
  ServiceName.replicaGateway,
  (env) => (nc, deps) => createReplicaGatewayService(nc, { ...deps, ...loadGatewayConfig(env) }),
);
