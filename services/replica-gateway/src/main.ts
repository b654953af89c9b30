import { ServiceName } from "@unibus/contracts";
import { runServiceMain } from "@unibus/kit";
import { loadGatewayConfig } from "./config.js";
import { createReplicaGatewayService } from "./service.js";

// The config is read inside create so an unusable PSK (short, a file others
// can read) fails the start with the kit's one fatal log line, never a stack
// trace, and never a gateway that silently refuses every node.
await runServiceMain({ name: ServiceName.replicaGateway, create: (nc, deps) => createReplicaGatewayService(nc, { ...deps, ...loadGatewayConfig(process.env) }) });
