import { AuditDenialStream } from "@unibus/contracts";
import type { NatsConfig, NatsConfigMap } from "@unibus/natsd";
import { BusStreams, CalloutLease, CalloutSubject, DirectoryBucket, StoredBucket, StoredConsumer, UnibusSubject, kvStreamName, objectStoreStreamName } from "@unibus/contracts";
import type { DurableConsumer, ServiceStorageDeclaration } from "@unibus/contracts";

/** nats-server permission block for a config-level user (`permissions { publish, subscribe, allow_responses }`). */
export interface ServerPermissions {
  /** `deny` wins over `allow` (nats-server checks it after the allow list matched). */
  publish: { allow: string[]; deny?: string[] };
  subscribe: { allow: string[] };
  /** Let the user reply to requests it received (reply subjects only, once each). */
  allow_responses?: boolean;
}

/** A service replica's config-level nkey user (services bypass the callout). */
export interface ServiceUser {
  /** Service name, e.g. `membership`; used for readability only. */
  service: string;
  /** The service identity's `U…` nkey. */
  nkey: string;
  permissions: ServerPermissions;
}

/**
 * JetStream limits of the app account (nats-server `accounts.X.jetstream`),
 * in bytes and counts. They bound what all clients and services together can
 * store, a backstop behind each room's own quota (threat: one member, or a
 * bug, filling the server's disk). nats-server reserves every stream's
 * `max_bytes` against `max_file` when the stream is created.
 */
export interface AccountJetStreamLimits {
  max_memory: number;
  max_file: number;
  max_streams: number;
  max_consumers: number;
}

const GiB = 1024 * 1024 * 1024;

/**
 * Defaults of {@link AccountJetStreamLimits}: 16 GiB of files hold 256 rooms
 * at the default 64 MiB room quota (KV buckets and the blob store reserve
 * nothing); consumers are mostly short-lived history readers.
 */
export const DefaultAccountJetStreamLimits: AccountJetStreamLimits = {
  max_memory: 256 * 1024 * 1024,
  max_file: 16 * GiB,
  max_streams: 4096,
  max_consumers: 65_536,
};

/** Environment variables that override {@link DefaultAccountJetStreamLimits}, per field. */
export const AccountJetStreamLimitsEnv = {
  max_memory: "UNIBUS_JS_MAX_MEMORY",
  max_file: "UNIBUS_JS_MAX_FILE",
  max_streams: "UNIBUS_JS_MAX_STREAMS",
  max_consumers: "UNIBUS_JS_MAX_CONSUMERS",
} as const satisfies Record<keyof AccountJetStreamLimits, string>;

/**
 * The account limits from `env`, the defaults for unset variables. Anything
 * but a positive integer throws: a typo must not start an unlimited account.
 */
export function accountJetStreamLimitsFromEnv(env: Readonly<Record<string, string | undefined>>): AccountJetStreamLimits {
  const limits = { ...DefaultAccountJetStreamLimits };
  for (const field of Object.keys(AccountJetStreamLimitsEnv) as (keyof AccountJetStreamLimits)[]) {
    const name = AccountJetStreamLimitsEnv[field];
    const raw = env[name];
    if (raw === undefined || raw === "") continue;
    if (!/^[1-9][0-9]{0,15}$/.test(raw) || !Number.isSafeInteger(Number(raw))) throw new RangeError(`${name} must be a positive integer, got ${JSON.stringify(raw)}`);
    limits[field] = Number(raw);
  }
  return limits;
}

/** Inputs of {@link calloutServerConfig}. */
export interface CalloutServerConfigOptions {
  /** `A…` key the callout signs with; the server trusts only responses signed by it. */
  issuerAccountPublic: string;
  /** `U…` nkey of the callout service's own connection. */
  calloutUserPublic: string;
  /** `X…` curve key of the callout; when set, requests and responses are encrypted. */
  xkeyPublic?: string;
  /** Service replicas (config-level users, bypass the callout). */
  serviceUsers?: ServiceUser[];
  /** `U…` nkey of a system-account user (kicks, `$SYS.REQ.SERVER.*.KICK`). */
  systemUserPublic?: string;
  /** Account every client and service lives in. Default `UNIBUS`. */
  appAccount?: string;
  /** Name of the system account. Default `SYS`. */
  systemAccount?: string;
  /** Seconds the server waits for the callout (default 2, nats-server's default). */
  authTimeoutSeconds?: number;
  /** JetStream limits of the app account. Default {@link DefaultAccountJetStreamLimits}. */
  jetstreamLimits?: AccountJetStreamLimits;
}

/**
 * JS API subjects that let a user read (only read) the given KV buckets with
 * `kv.get`: from the stream leader only. No direct get, which any replica,
 * lagging or not, may answer: a read that decides access must reflect every
 * acknowledged write, so the server refuses the stale path outright.
 */
export function kvReadSubjects(buckets: readonly string[]): string[] {
  return buckets.flatMap((b) => [`$JS.API.STREAM.INFO.KV_${b}`, `$JS.API.STREAM.MSG.GET.KV_${b}`]);
}

/**
 * JS API subjects that let a user watch (ordered consumer) the given KV
 * buckets: consumers only read, so this grants no write.
 */
export function kvWatchSubjects(buckets: readonly string[]): string[] {
  return buckets.flatMap((b) => [
    `$JS.API.CONSUMER.CREATE.KV_${b}.>`,
    `$JS.API.CONSUMER.CREATE.KV_${b}`,
    `$JS.API.CONSUMER.DELETE.KV_${b}.>`,
    `$JS.API.CONSUMER.INFO.KV_${b}.>`,
    `$JS.FC.KV_${b}.>`,
  ]);
}

/**
 * JetStream API subjects the healthz service user may publish: account info
 * (proves a meta leader) and stream info of every bus stream, plus leader
 * gets and a watch of `users` (the fenced copy the admin check reads). Read
 * only: no create, update, purge or delete (threat: a compromised probe
 * destroying the state it watches).
 */
export function healthzJetStreamSubjects(): string[] {
  return [
    "$JS.API.INFO",
    ...BusStreams.map((s) => `$JS.API.STREAM.INFO.${s.stream}`),
    `$JS.API.STREAM.MSG.GET.${kvStreamName(StoredBucket.membership.users)}`,
    ...kvWatchSubjects([StoredBucket.membership.users]),
  ];
}

/**
 * Permissions of the callout's own connection: receive authorization
 * requests, answer the server's `$SYS._INBOX` replies, read and watch the
 * two directory buckets, answer micro discovery, append refused logins
 * to the audit stream (its subjects only, no stream API: it can neither
 * read, purge nor reconfigure the trail), keep its own lease bucket and
 * answer barrier requests. Nothing else that writes.
 */
export function calloutUserPermissions(calloutUserPublic: string): ServerPermissions {
  return {
    publish: {
      allow: [
        `${CalloutSubject.replyPrefix}>`,
        `${AuditDenialStream.subjectPrefix}.>`,
        ...kvReadSubjects(Object.values(DirectoryBucket)),
        ...kvWatchSubjects(Object.values(DirectoryBucket)),
        // Its own lease bucket (created at start, one record per replica):
        // full use of that bucket only, so it writes no directory record.
        "$JS.API.INFO",
        `$JS.API.STREAM.*.${kvStreamName(StoredBucket.authCallout.leases)}`,
        `$KV.${StoredBucket.authCallout.leases}.>`,
      ],
    },
    subscribe: {
      // Barrier requests (only membership may publish there); answered on the
      // requester's inbox through allow_responses.
      allow: [CalloutSubject.auth, UnibusSubject.microDiscovery, `${UnibusSubject.inboxPrefix}${calloutUserPublic}.>`, `${CalloutLease.barrierPrefix}.*`],
    },
    allow_responses: true,
  };
}

/**
 * Permissions of a typical service replica (architecture §4 "service:X"): its
 * endpoints, micro discovery, full use of its own KV buckets, and replies.
 */
export function servicePermissions(opts: { service: string; kvBuckets?: readonly string[]; publish?: string[]; subscribe?: string[] }): ServerPermissions {
  const buckets = opts.kvBuckets ?? [];
  // Leader reads (`STREAM.MSG.GET`), never direct gets: see kvReadSubjects.
  const js = buckets.flatMap((b) => [`$JS.API.STREAM.*.KV_${b}`, `$JS.API.STREAM.MSG.GET.KV_${b}`, `$JS.API.CONSUMER.*.KV_${b}.>`, `$JS.API.CONSUMER.*.KV_${b}`, `$KV.${b}.>`]);
  return {
    publish: { allow: [...js, ...(buckets.length > 0 ? ["$JS.API.INFO"] : []), `${UnibusSubject.inboxPrefix}>`, ...(opts.publish ?? [])] },
    subscribe: { allow: [`unibus.v1.${opts.service}.>`, UnibusSubject.microDiscovery, `${UnibusSubject.inboxPrefix}>`, ...(opts.subscribe ?? [])] },
    allow_responses: true,
  };
}

/**
 * A service user's permissions, generated from its storage declaration
 * (contracts' `ServiceStorage`): its endpoints, micro discovery, replies,
 * full use of what it owns, and read-only access to what it only reads.
 * Services without buckets get no JetStream API at all.
 */
export function serviceStoragePermissions(decl: ServiceStorageDeclaration): ServerPermissions {
  const publish: string[] = [];
  if (decl.roomStreams === true) {
    // NATS wildcards match whole tokens only (`ROOM_*` is a literal, and
    // matched no room), so stream create/info cannot be narrowed to `ROOM_`
    // names: CREATE cannot change an existing stream (no DELETE/PURGE here),
    // and this service already holds the allowlist itself. UPDATE turns on
    // direct get on room streams made before it; consumer list and delete
    // remove leftover consumers from room streams when someone loses access
    // (neither reads a message). Batch direct get (`DIRECT.GET.<stream>`, no
    // subject suffix) serves room history: only this service reads room
    // streams, and the server answers it on the service's own inbox, never a
    // subject a member chose.
    publish.push("$JS.API.DIRECT.GET.*", "$JS.API.STREAM.CREATE.*", "$JS.API.STREAM.INFO.*", "$JS.API.STREAM.UPDATE.*", "$JS.API.CONSUMER.LIST.*", "$JS.API.CONSUMER.DELETE.*.*");
  }
  for (const store of decl.ownsObjectStores ?? []) {
    const stream = objectStoreStreamName(store);
    // Stream API, chunk and meta subjects, ordered consumers for reads, purge
    // of aborted uploads, flow control.
    publish.push(
      `$JS.API.STREAM.*.${stream}`,
      `$JS.API.CONSUMER.*.${stream}`,
      `$JS.API.CONSUMER.*.${stream}.>`,
      `$JS.API.DIRECT.GET.${stream}.>`,
      `$JS.API.STREAM.MSG.GET.${stream}`,
      `$O.${store}.>`,
      "$JS.FC.>",
    );
  }
  // Another service's buckets: leader get, stream info, key-listing and
  // watch consumers (with their flow-control replies), no `$KV.<bucket>.>`
  // publish, so a compromised reader cannot write itself a grant. No direct
  // get: a lagging replica would answer it.
  for (const b of decl.readsKv ?? []) {
    const stream = kvStreamName(b);
    publish.push(`$JS.API.STREAM.INFO.${stream}`, `$JS.API.STREAM.MSG.GET.${stream}`, `$JS.API.CONSUMER.*.${stream}`, `$JS.API.CONSUMER.*.${stream}.>`, `$JS.FC.${stream}.>`);
  }
  // Its own durable consumers, by name: create-or-update (no filter, so no
  // subject suffix), info, pulls and acknowledgements (ack, nak, in
  // progress), so another consumer of the stream cannot be drained through
  // this grant.
  for (const c of decl.consumes ?? []) {
    publish.push(`$JS.API.CONSUMER.CREATE.${c.stream}.${c.durable}`, `$JS.API.CONSUMER.INFO.${c.stream}.${c.durable}`, `$JS.API.CONSUMER.MSG.NEXT.${c.stream}.${c.durable}`, `$JS.ACK.${c.stream}.${c.durable}.>`);
  }
  for (const b of decl.getsKv ?? []) publish.push(`$JS.API.STREAM.INFO.${kvStreamName(b)}`, `$JS.API.STREAM.MSG.GET.${kvStreamName(b)}`);
  publish.push(...(decl.publishes ?? []));
  // Readiness and posture: account info, stream info of the bus streams,
  // leader gets of `users` (admin check), and micro PING / $SRV.METRICS to
  // every service. Read only: no create, update, purge or delete.
  if (decl.inspectsBus === true) publish.push(...healthzJetStreamSubjects(), UnibusSubject.microDiscovery);
  const permissions = servicePermissions({ service: decl.endpoints, kvBuckets: decl.ownsKv, publish });
  const deny = foreignConsumerSubjects(decl);
  return deny.length === 0 ? permissions : { ...permissions, publish: { ...permissions.publish, deny } };
}

/**
 * The API and ack subjects of every durable consumer another service
 * declares. A bucket reader's watch grant (`$JS.API.CONSUMER.*.KV_<b>.>`,
 * which the KV library's ordered consumers need) and membership's
 * room-stream clean-up (`CONSUMER.DELETE.*.*`) would otherwise also let a
 * compromised service pull that consumer's messages away from its owner,
 * acknowledge them, change its config or delete it: for the keys service's
 * removals consumer, a member's shares never deleted.
 */
function foreignConsumerSubjects(decl: ServiceStorageDeclaration): string[] {
  const own = new Set((decl.consumes ?? []).map((c) => `${c.stream}.${c.durable}`));
  return Object.values(StoredConsumer)
    .flatMap((byService): DurableConsumer[] => Object.values(byService))
    .filter((c) => !own.has(`${c.stream}.${c.durable}`))
    .flatMap((c) => [`$JS.API.CONSUMER.*.${c.stream}.${c.durable}`, `$JS.API.CONSUMER.*.${c.stream}.${c.durable}.>`, `$JS.API.CONSUMER.MSG.NEXT.${c.stream}.${c.durable}`, `$JS.ACK.${c.stream}.${c.durable}.>`]);
}

/**
 * The accounts + authorization fragment for a callout-protected server
 * (config mode, nats-server ≥ 2.10):
 *
 * - `SYS` (system account) holds only the kick user.
 * - The app account (`UNIBUS`, JetStream with account limits) holds the callout user and
 *   the service users; callout-authorized clients are placed there too (the
 *   user JWT's `aud`). The callout runs in this account so it can read the
 *   `users` / `rooms_by_member` buckets on one connection; clients can never
 *   reach its subjects because no client permission includes `$SYS.>`.
 * - `auth_callout.auth_users` lists every config-level user (callout,
 *   services, system), so only clients go through the callout.
 * - Every config-level user is an nkey user, which also makes the server send
 *   a nonce (docs/nats-notes.md). No `no_auth_user` (a PING-before-CONNECT bypass
 *   existed in 2.10.27).
 */
export function calloutServerConfig(opts: CalloutServerConfigOptions): NatsConfig {
  const appAccount = opts.appAccount ?? "UNIBUS";
  const systemAccount = opts.systemAccount ?? "SYS";
  const serviceUsers = opts.serviceUsers ?? [];
  const appUsers: NatsConfigMap[] = [
    { nkey: opts.calloutUserPublic, permissions: permissionsBlock(calloutUserPermissions(opts.calloutUserPublic)) },
    ...serviceUsers.map((u) => ({ nkey: u.nkey, permissions: permissionsBlock(u.permissions) })),
  ];
  const authUsers = [opts.calloutUserPublic, ...serviceUsers.map((u) => u.nkey)];
  const sysAccount: NatsConfigMap = {};
  if (opts.systemUserPublic !== undefined) {
    sysAccount.users = [{ nkey: opts.systemUserPublic }];
    authUsers.push(opts.systemUserPublic);
  }
  return {
    accounts: {
      [systemAccount]: sysAccount,
      [appAccount]: { jetstream: { ...(opts.jetstreamLimits ?? DefaultAccountJetStreamLimits) }, users: appUsers },
    },
    system_account: systemAccount,
    authorization: {
      ...(opts.authTimeoutSeconds !== undefined ? { timeout: opts.authTimeoutSeconds } : {}),
      auth_callout: {
        issuer: opts.issuerAccountPublic,
        auth_users: authUsers,
        account: appAccount,
        ...(opts.xkeyPublic !== undefined ? { xkey: opts.xkeyPublic } : {}),
      },
    },
  };
}

function permissionsBlock(p: ServerPermissions): NatsConfigMap {
  return {
    publish: { allow: p.publish.allow, ...(p.publish.deny !== undefined && p.publish.deny.length > 0 ? { deny: p.publish.deny } : {}) },
    subscribe: { allow: p.subscribe.allow },
    ...(p.allow_responses === true ? { allow_responses: true } : {}),
  };
}
