import { ServiceName } from "@unibus/contracts";
import { runServiceMain } from "@unibus/kit";
import { createKeysService } from "./service.js";

await runServiceMain({ name: ServiceName.keys, create: createKeysService });
