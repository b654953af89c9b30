import { ServiceName } from "@unibus/contracts";
import { kitServiceEntry } from "@unibus/kit";
import type { ServiceEntry } from "@unibus/kit";
import { createKeysService } from "./service.js";

/** How a process runs keys (its own `main.ts`, or `unibus up`'s one process for every service). */
export const keysEntry: ServiceEntry = kitServiceEntry(ServiceName.keys, () => createKeysService);
