import { ServiceName } from "@unibus/contracts";
import { kitServiceEntry } from "@unibus/kit";
import type { ServiceEntry } from "@unibus/kit";
import { loadHealthzOptions } from "./config.js";
import { createHealthzService } from "./service.js";

/** How a process runs healthz (its own `main.ts`, or `unibus up`'s one process for every service). */
export const healthzEntry: ServiceEntry = kitServiceEntry(ServiceName.healthz, (env) => (nc, deps) => createHealthzService(nc, deps, loadHealthzOptions(env)));
