import { ServiceName } from "@unibus/contracts";
import { runServiceMain } from "@unibus/kit";
import { createReplicaGatewayService } from "./service.js";

await runServiceMain({ name: ServiceName.replicaGateway, create: createReplicaGatewayService });
