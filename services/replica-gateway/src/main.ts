import { ServiceName } from "@unibus/contracts";
import { runServiceMain } from "@unibus/kit";
import { loadGatewayConfig } from "./config.js";
import { createReplicaGatewayService } from "./service.js";

// Read before connecting: a PSK that is set but unusable stops the process
// instead of running a gateway that silently refuses every node.
const config = loadGatewayConfig(process.env);
await runServiceMain({ name: ServiceName.replicaGateway, create: (nc, deps) => createReplicaGatewayService(nc, { ...deps, ...config }) });
