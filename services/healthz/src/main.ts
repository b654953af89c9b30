import { ServiceName } from "@unibus/contracts";
import { runServiceMain } from "@unibus/kit";
import { loadHealthzOptions } from "./config.js";
import { createHealthzService } from "./service.js";

await runServiceMain({ name: ServiceName.healthz, create: (nc, deps) => createHealthzService(nc, deps, loadHealthzOptions(process.env)) });
