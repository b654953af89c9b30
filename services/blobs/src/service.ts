import { randomBytes } from "node:crypto";
import type { NatsConnection } from "@nats-io/transport-node";
import type { KV } from "@nats-io/kv";
import type { ObjectStore } from "@nats-io/obj";
import { ServiceName } from "@unibus/contracts";
import { Access, defineService, endpointTable, serviceJetStream, startService } from "@unibus/kit";
import type { KitDeps, RunningService, ServiceDefinition } from "@unibus/kit";
import { pino } from "pino";
import type { Logger } from "pino";
import packageJson from "../package.json" with { type: "json" };
import { transferHandlers } from "./handlers/transfers.js";
import type { TransferLimits } from "./handlers/transfers.js";
import { DEFAULT_MAX_BLOB_BYTES, DEFAULT_MAX_SESSIONS, DEFAULT_SESSION_IDLE_MS, wireChunkBytes } from "./limits.js";
import { openObjectStore } from "./store/object-store.js";
import { KvRoomAccess } from "./store/room-access.js";
import type { RoomAccess } from "./store/room-access.js";

export { BlobsErrorReason } from "./handlers/transfers.js";

/** What the blobs service needs beyond the kit's deps; every field has a default. */
export interface BlobsDeps extends KitDeps {
  /** Largest blob (ciphertext bytes) accepted; default 64 MiB (`UNIBUS_BLOBS_MAX_BYTES` in main). */
  maxBlobBytes?: number;
  /** Idle time after which an upload or download is abandoned; default 30 s. */
  sessionIdleMs?: number;
  /** Sessions held at once by this replica; default 128. */
  maxSessions?: number;
  /** The membership `members` bucket; bound lazily by name when absent. */
  membersBucket?: KV;
  /** The object store; opened (created if missing) when absent. */
  objectStore?: ObjectStore;
}

/**
 * Builds the blobs service definition: every endpoint it exposes, in one
 * table. Subjects and schema ids follow from the names
 * (`unibus.v1.blobs.<name>`, `blobs.<name>.request|reply`); the chunk and end
 * endpoints listen on subjects suffixed with this replica's token, since an
 * upload's stream lives in one replica's memory, so its chunks must reach
 * that replica, not any member of the queue group.
 */
export function blobsDefinition(replica: string, store: ObjectStore, access: RoomAccess, opts: TransferLimits, logger?: Logger): { definition: ServiceDefinition; shutdown(): Promise<void> } {
  const transfers = transferHandlers(replica, store, access, opts, logger);
  const h = transfers.handlers;
  const definition = defineService({
    name: ServiceName.blobs,
    version: packageJson.version,
    description: "Content-addressed encrypted blobs in the object store",
    metadata: { replica },
    endpoints: endpointTable(
      "blobs",
      {
        "put.begin": { access: Access.Signed, mutates: true, impl: h.putBegin },
        // Not `mutates`: a chunk's replay protection is the upload itself, which
        // accepts each index once and in order, so a nonce write per
        // chunk would buy nothing.
        "put.chunk": { access: Access.Signed, mutates: false, impl: h.putChunk },
        "put.end": { access: Access.Signed, mutates: true, impl: h.putEnd },
        "get.begin": { access: Access.Signed, mutates: false, impl: h.getBegin },
        "get.chunk": { access: Access.Signed, mutates: false, impl: h.getChunk },
      },
      { replica },
    ),
  });
  return { definition, shutdown: () => transfers.shutdown() };
}

/**
 * Starts the blobs service on `nc`: opens (creates) the `blobs` object store,
 * binds the `members` bucket for room checks and registers the endpoints.
 */
export async function createBlobsService(nc: NatsConnection, deps: BlobsDeps = {}): Promise<RunningService> {
  const logger = deps.logger ?? pino({ level: "info" });
  const store = deps.objectStore ?? (await openObjectStore(nc, deps.bucketReplicas ?? 1));
  // Room checks are leader reads: bounded, so a leaderless `members` is a coded 503, not a client timeout.
  const access = new KvRoomAccess(serviceJetStream(nc), deps.membersBucket);
  const replica = randomBytes(8).toString("hex");
  const built = blobsDefinition(replica, store, access, {
    maxBlobBytes: deps.maxBlobBytes ?? DEFAULT_MAX_BLOB_BYTES,
    sessionIdleMs: deps.sessionIdleMs ?? DEFAULT_SESSION_IDLE_MS,
    maxSessions: deps.maxSessions ?? DEFAULT_MAX_SESSIONS,
    // Sized from this server's max_payload, so a chunk request always fits.
    wireChunkBytes: wireChunkBytes(nc.info?.max_payload),
  }, logger.bindings()["svc"] === undefined ? logger.child({ svc: ServiceName.blobs }) : logger);
  const running = await startService(nc, built.definition, { ...deps, logger });
  return {
    ...running,
    async stop() {
      await running.stop();
      // Sessions still open are abandoned transfers: aborting makes the
      // object store purge their chunks, so nothing half-written remains.
      await built.shutdown();
    },
  };
}
