import { BusStreams, ServiceName, StoredBucket } from "@unibus/contracts";
import type { RequiredStream } from "@unibus/contracts";

export type { RequiredStream } from "@unibus/contracts";

/**
 * Every bucket the services store state in, from the stored-data contract so
 * the list cannot drift from the owners. The healthz service user may read
 * exactly these streams' info and nothing else of JetStream.
 */
export const BUS_STREAMS: readonly RequiredStream[] = BusStreams;

/** Services that must answer a micro PING for the bus to be ready (healthz itself is the one asking). */
export const BUS_SERVICES: readonly string[] = Object.values(ServiceName).filter((n) => n !== ServiceName.healthz);

/** The users bucket, read (leader reads only) to resolve the caller of an admin endpoint. */
export const USERS_BUCKET = StoredBucket.membership.users;
