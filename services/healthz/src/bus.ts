import { ServiceName } from "@unibus/contracts";
import { NonceBucket } from "@unibus/kit";
import { BLOBS_BUCKET } from "@unibus/blobs";
import { KeysBucket } from "@unibus/keys";
import { MembershipBucket } from "@unibus/membership";
import { LifecycleBucket, ReplicaBucket } from "@unibus/replica-gateway";

/** A JetStream stream the bus cannot serve without, named by the bucket it backs. */
export interface RequiredStream {
  /** Bucket name as the owning service declares it. */
  readonly bucket: string;
  /** `KV_<bucket>` or `OBJ_<bucket>`. */
  readonly stream: string;
}

const kv = (bucket: string): RequiredStream => ({ bucket, stream: `KV_${bucket}` });

/**
 * Every bucket the services store state in, taken from the owners' own
 * declarations so the list cannot drift from them. The healthz service user
 * may read exactly these streams' info and nothing else of JetStream.
 */
export const BUS_STREAMS: readonly RequiredStream[] = [
  ...Object.values(MembershipBucket).map(kv),
  kv(NonceBucket.name),
  ...Object.values(KeysBucket).map(kv),
  ...Object.values(ReplicaBucket).map((b) => kv(b.name)),
  ...Object.values(LifecycleBucket).map((b) => kv(b.name)),
  { bucket: BLOBS_BUCKET, stream: `OBJ_${BLOBS_BUCKET}` },
];

/** Services that must answer a micro PING for the bus to be ready (healthz itself is the one asking). */
export const BUS_SERVICES: readonly string[] = Object.values(ServiceName).filter((n) => n !== ServiceName.healthz);

/** The users bucket, read (leader reads only) to resolve the caller of an admin endpoint. */
export const USERS_BUCKET = MembershipBucket.users;

/**
 * JetStream API subjects the healthz service user may publish: account info
 * (proves a meta leader) and stream info of {@link BUS_STREAMS}, plus leader
 * gets of `users` for the admin check. Read only: no create, update, purge
 * or delete (threat: a compromised probe destroying the state it watches).
 */
export function healthzJetStreamSubjects(): string[] {
  return [
    "$JS.API.INFO",
    ...BUS_STREAMS.map((s) => `$JS.API.STREAM.INFO.${s.stream}`),
    `$JS.API.STREAM.MSG.GET.KV_${USERS_BUCKET}`,
  ];
}
