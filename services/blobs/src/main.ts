import { ServiceName } from "@unibus/contracts";
import { runServiceMain } from "@unibus/kit";
import { createBlobsService } from "./service.js";

await runServiceMain({ name: ServiceName.blobs, create: createBlobsService });
