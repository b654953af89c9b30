import { ServiceName } from "@unibus/contracts";
import { ServiceConfigError, runServiceMain } from "@unibus/kit";
import { DEFAULT_MAX_BLOB_BYTES } from "./limits.js";
import { createBlobsService } from "./service.js";

// The blob size limit is read here, with the rest of the environment (STYLE: main.ts is the only reader).
const rawLimit = process.env["UNIBUS_BLOBS_MAX_BYTES"];
const maxBlobBytes = rawLimit === undefined || rawLimit === "" ? DEFAULT_MAX_BLOB_BYTES : Number(rawLimit);
if (!Number.isSafeInteger(maxBlobBytes) || maxBlobBytes < 16) throw new ServiceConfigError("UNIBUS_BLOBS_MAX_BYTES must be an integer >= 16");

await runServiceMain({ name: ServiceName.blobs, create: (nc, deps) => createBlobsService(nc, { ...deps, maxBlobBytes }) });
