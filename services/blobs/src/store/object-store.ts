import type { NatsConnection } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import { Objm, setSha256Backend } from "@nats-io/obj";
import type { ObjectStore } from "@nats-io/obj";
import { BLOBS_BUCKET } from "../limits.js";

/** Opens (creates if missing) the `blobs` object store. */
export async function openObjectStore(nc: NatsConnection, replicas: number): Promise<ObjectStore> {
  // The object store digests every byte it writes and re-checks it on read;
  // its default SHA-256 is pure JavaScript (~45 MB/s here, a fifth of this
  // service's CPU in P9). node:crypto gives the same digests far faster.
  setSha256Backend("native");
  const store = await new Objm(jetstream(nc)).create(BLOBS_BUCKET, { storage: "file", replicas });
  // objm.create can swallow errors (docs/nats-notes.md): a store that cannot report
  // its status is not there, and the service must not start on it.
  await store.status();
  return store;
}
