import { ServiceName } from "@unibus/contracts";
import { loadIdentityFile } from "@unibus/crypto";
import { kitServiceEntry, loadServiceConfig } from "@unibus/kit";
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
  (env) => async (nc, deps) => {
    const config = loadGatewayConfig(env);
    // The service identity names this replica in the cluster manifest: the same one it connects with.
    const path = loadServiceConfig(env).identityPath;
    const identity = path === undefined ? undefined : (await loadIdentityFile(path)).signingKey;
    return createReplicaGatewayService(nc, { ...deps, ...config, ...(identity === undefined ? {} : { identity }) });
  },
);
