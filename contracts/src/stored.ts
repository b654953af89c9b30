/**
 * What the bus stores, named once: every KV bucket, object store and stream
 * prefix, and the key formats readers and writers share. The owning service
 * writes; other services, the CLI's server config and healthz only name them
 * from here, so a renamed bucket cannot leave a reader (or a permission)
 * pointing at the old name.
 */

import { RoomSubjectPrefix, Subjects } from "./subjects.js";
import type { ServiceName } from "./subjects.js";

/** KV buckets, grouped by the service that writes them. */
export const StoredBucket = {
  membership: {
    users: "users",
    rooms: "rooms",
    members: "members",
    roomsByMember: "rooms_by_member",
    /** Each room's hash-chained membership log, key `<roomId>.<seq>` (contracts/specs/membership-log.md). */
    roomLog: "room_log",
    /** The hash-chained users log rooted at the bootstrap, key `<seq>` (contracts/specs/membership-log.md). */
    usersLog: "users_log",
  },
  keys: {
    /** Key `<roomId>.<epoch>`: one share set per epoch, created once (compare-and-set). */
    roomKeys: "room_keys",
    /** Key principal: the member's published agreement key. */
    agreementKeys: "agreement_keys",
  },
  replica: {
    /** Sessions completed handshakes leave for the join step. */
    sessions: "replica_sessions",
    /** The cluster's signed, hash-chained history (contracts/specs/replica-lifecycle.md). */
    history: "replica_history",
    /** Node records and the join-key index, both rebuilt from the history. */
    nodes: "replica_nodes",
    /** One-time node tickets, by the hash of their secret. */
    tickets: "replica_tickets",
    /** Each UP node's cluster unlock key share, wrapped under the seed-derived key. */
    cuks: "replica_cuks",
  },
  authCallout: {
    /**
     * Each callout replica's login lease, key = its replica id: a record it
     * rewrites every second while it answers logins from memory, and that
     * membership reads (fenced) after every write a login decides on.
     */
    leases: "callout_leases",
  },
  /** Replay protection of signed requests, shared by every service with mutating endpoints. */
  shared: { nonces: "nonces" },
} as const;

/**
 * The callout's login lease (docs/design.md "The callout's directory"): a
 * replica answers logins from its watched copy without a per-login fence
 * only while it holds a lease, and membership acknowledges a write to
 * `users` or `rooms_by_member` only once every replica holding one has
 * applied it or its lease has run out.
 */
export const CalloutLease = {
  /** A lease's length, measured from just before its record is written. Membership's longest wait. */
  durationMs: 3_000,
  /** How often a replica rewrites its record (well inside the duration). */
  renewEveryMs: 1_000,
  /** Share of the duration a replica gives up against clock-rate drift, and its floor in ms. */
  marginRatio: 0.1,
  marginMinMs: 100,
  /**
   * A replica's barrier subject is `<prefix>.<replica id>`: outside
   * `unibus.v1.` and the room prefix, so no client grant reaches it; only
   * membership may publish there.
   */
  barrierPrefix: "unibus.lease.barrier",
  /** Record age after which the bucket drops it (a crashed replica's); far past any lease. */
  recordTtlMs: 600_000,
} as const;

/** A callout replica's barrier subject. */
export function leaseBarrierSubject(replicaId: string): string {
  return `${CalloutLease.barrierPrefix}.${replicaId}`;
}

/** Object stores, by owner. */
export const StoredObjectStore = {
  /** Committed blobs, object name `<roomId>/<blobId>`. */
  blobs: "blobs",
} as const;

/** A durable JetStream consumer: one name, shared by every replica of its service, so each message goes to one of them. */
export interface DurableConsumer {
  /** The stream it reads. */
  readonly stream: string;
  /** Its name (durable). */
  readonly durable: string;
}

/** Durable consumers, by the service that creates and acknowledges them. */
export const StoredConsumer = {
  keys: {
    /**
     * Every change of membership's `members` (headers only): each delete or
     * purge marker is a removal whose member's sealed shares the keys service
     * deletes, acknowledged only once they are (contracts/specs/room-keys.md
     * "Share deletion").
     */
    shareDeletion: { stream: kvStreamName(StoredBucket.membership.members), durable: "keys_share_deletion" },
  },
} as const satisfies Record<string, Record<string, DurableConsumer>>;

/** A persisted room's JetStream stream is `ROOM_<roomId>`. */
export const RoomStreamPrefix = "ROOM_" as const;

/** The JetStream stream backing a persisted room. */
export function roomStreamName(roomId: string): string {
  return `${RoomStreamPrefix}${roomId}`;
}

/** The `members` key of one membership. */
export function memberKey(roomId: string, principal: string): string {
  return `${roomId}.${principal}`;
}

/** The stream behind a KV bucket. */
export function kvStreamName(bucket: string): string {
  return `KV_${bucket}`;
}

/** The stream behind an object store. */
export function objectStoreStreamName(store: string): string {
  return `OBJ_${store}`;
}

/** A JetStream stream the bus cannot serve without, named by the bucket it backs. */
export interface RequiredStream {
  /** Bucket (or object store) name. */
  readonly bucket: string;
  /** `KV_<bucket>` or `OBJ_<bucket>`. */
  readonly stream: string;
}

const kv = (bucket: string): RequiredStream => ({ bucket, stream: kvStreamName(bucket) });

/** Every bucket and store the services keep state in: what readiness checks and what healthz may inspect. */
export const BusStreams: readonly RequiredStream[] = [
  ...Object.values(StoredBucket.membership).map(kv),
  kv(StoredBucket.shared.nonces),
  ...Object.values(StoredBucket.keys).map(kv),
  ...Object.values(StoredBucket.replica).map(kv),
  { bucket: StoredObjectStore.blobs, stream: objectStoreStreamName(StoredObjectStore.blobs) },
];

/**
 * What one service keeps and reads in JetStream, and what it publishes
 * besides replies: its declaration, from which its server permissions are
 * generated (the kit's `serviceStoragePermissions`), so a bucket a service
 * starts using cannot be forgotten in a hand-kept permission list, nor a
 * grant outlive the bucket.
 */
export interface ServiceStorageDeclaration {
  /** The token its endpoints answer under: `unibus.v1.<token>.>`. */
  readonly endpoints: string;
  /** KV buckets it owns: full use. */
  readonly ownsKv: readonly string[];
  /** Object stores it owns: full use. */
  readonly ownsObjectStores?: readonly string[];
  /** Another service's KV buckets it reads, lists and watches (stream info, leader reads, listing and watch consumers), never writes. */
  readonly readsKv?: readonly string[];
  /** Another service's KV buckets it reads by leader get only (no listing). */
  readonly getsKv?: readonly string[];
  /** Creates and maintains the persisted rooms' streams and reads their history. */
  readonly roomStreams?: boolean;
  /** Reads the stream info of every bus stream and pings every service (readiness and posture). */
  readonly inspectsBus?: boolean;
  /** Durable consumers it creates (create-or-update), pulls from and acknowledges; nothing else of their streams. */
  readonly consumes?: readonly DurableConsumer[];
  /** Subjects it publishes besides replies and its stores. */
  readonly publishes?: readonly string[];
}

/** Every service user's declaration (auth-callout connects as the callout user instead). */
export const ServiceStorage = {
  membership: {
    endpoints: "membership",
    ownsKv: [...Object.values(StoredBucket.membership), StoredBucket.shared.nonces],
    // The callouts' leases, read fenced after each directory write, whose
    // holders it asks (barrier) to apply the write before it acknowledges.
    readsKv: [StoredBucket.authCallout.leases],
    roomStreams: true,
    // Membership changes are announced to the room's members so owners rekey.
    publishes: [`${RoomSubjectPrefix}.*.membership`, `${CalloutLease.barrierPrefix}.*`],
  },
  keys: {
    endpoints: "keys",
    ownsKv: [...Object.values(StoredBucket.keys), StoredBucket.shared.nonces],
    readsKv: [StoredBucket.membership.users, StoredBucket.membership.members],
    // Removals reach one replica each, acknowledged once the shares are deleted.
    consumes: [StoredConsumer.keys.shareDeletion],
  },
  blobs: {
    endpoints: "blobs",
    ownsKv: [StoredBucket.shared.nonces],
    ownsObjectStores: [StoredObjectStore.blobs],
    // Watched: room access is decided from the kit's fenced copy of `members`.
    readsKv: [StoredBucket.membership.members],
  },
  // It answers under `unibus.v1.replica.>`, not its process name. Its signed
  // lifecycle endpoints need `nonces`; admin roles come from membership's
  // `users` (its fenced copy: watched); it asks its peers for the seed (sealed, signed).
  "replica-gateway": {
    endpoints: "replica",
    ownsKv: [...Object.values(StoredBucket.replica), StoredBucket.shared.nonces],
    readsKv: [StoredBucket.membership.users],
    publishes: [Subjects.replicaGateway.seedRequest],
  },
  healthz: { endpoints: "healthz", ownsKv: [], inspectsBus: true },
} as const satisfies Record<Exclude<ServiceName, "auth-callout">, ServiceStorageDeclaration>;
