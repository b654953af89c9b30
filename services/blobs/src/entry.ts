import { ServiceName } from "@unibus/contracts";
import { ServiceConfigError, kitServiceEntry } from "@unibus/kit";
import type { ServiceEntry } from "@unibus/kit";
import { DEFAULT_MAX_BLOB_BYTES } from "./limits.js";
import { createBlobsService } from "./service.js";

/**
 * How a process runs blobs (its own `main.ts`, or `unibus up`'s one process
 * for every service). The blob size limit is read here, with the rest of the
 * environment (STYLE: the entry is the only reader).
 */
export const blobsEntry: ServiceEntry = kitServiceEntry(ServiceName.blobs, (env) => {
  const rawLimit = env["UNIBUS_BLOBS_MAX_BYTES"];
  const maxBlobBytes = rawLimit === undefined || rawLimit === "" ? DEFAULT_MAX_BLOB_BYTES : Number(rawLimit);
  if (!Number.isSafeInteger(maxBlobBytes) || maxBlobBytes < 16) throw new ServiceConfigError("UNIBUS_BLOBS_MAX_BYTES must be an integer >= 16");
  return (nc, deps) => createBlobsService(nc, { ...deps, maxBlobBytes });
});
