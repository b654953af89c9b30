import { ServiceName } from "@unibus/contracts";
import { runServiceMain } from "@unibus/kit";
import { createHealthzService } from "./service.js";

await runServiceMain({ name: ServiceName.healthz, create: createHealthzService });
