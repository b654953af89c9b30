/**
 * Every subject and service name unibus uses, in one module, so ACLs, services
 * and clients cannot drift apart. Control-plane requests follow
 * `unibus.v1.<service>.<endpoint>`.
 */

/** Prefix of every control-plane request subject. */
export const SubjectPrefix = "unibus.v1" as const;
/** The prefix as a type. */
export type SubjectPrefix = typeof SubjectPrefix;

/** Names of the unibus micro services, as they appear in `$SRV.INFO`. */
export const ServiceName = {
  authCallout: "auth-callout",
  membership: "membership",
  keys: "keys",
  blobs: "blobs",
  replicaGateway: "replica-gateway",
  healthz: "healthz",
} as const;
/** One of the {@link ServiceName} values. */
export type ServiceName = (typeof ServiceName)[keyof typeof ServiceName];

/**
 * Request subjects, grouped by the service that answers them. `all` is the
 * service's wildcard, for permissions. The replica gateway answers under
 * `replica`, the name architecture §2 gives its subjects.
 */
export const Subjects = {
  authCallout: {
    /** nats-server's auth callout request subject. */
    authorize: "$SYS.REQ.USER.AUTH",
  },
  membership: {
    all: "unibus.v1.membership.>",
    usersAdd: "unibus.v1.membership.users.add",
    usersList: "unibus.v1.membership.users.list",
    usersGet: "unibus.v1.membership.users.get",
    usersRevoke: "unibus.v1.membership.users.revoke",
    roomsCreate: "unibus.v1.membership.rooms.create",
    roomsGet: "unibus.v1.membership.rooms.get",
    roomsList: "unibus.v1.membership.rooms.list",
    roomsInvite: "unibus.v1.membership.rooms.invite",
    roomsRemove: "unibus.v1.membership.rooms.remove",
    roomsLeave: "unibus.v1.membership.rooms.leave",
    /** One page of a persisted room's stored frames, read by the service (members hold no JetStream grant). */
    roomsHistory: "unibus.v1.membership.rooms.history",
    /** One page of a room's hash-chained membership log (contracts/specs/membership-log.md); clients verify it. */
    roomsLog: "unibus.v1.membership.rooms.log",
    /** One page of the users log, rooted at the bootstrap (contracts/specs/membership-log.md); clients verify it. */
    usersLog: "unibus.v1.membership.users.log",
    /** Seeds admin #0; only the privileged internal bootstrap identity may publish here. */
    adminBootstrap: "unibus.v1.membership.admin.bootstrap",
    /** Recorded login denials, read from the audit stream by the service (admins hold no JetStream grant). */
    auditDenials: "unibus.v1.membership.audit.denials",
  },
  keys: {
    all: "unibus.v1.keys.>",
    /** Self-service: the caller registers its self-signed X25519 agreement key. */
    registerAgreementKey: "unibus.v1.keys.register_agreement_key",
    /** A room's current members with their agreement keys (what a distributor seals to). */
    agreementKeys: "unibus.v1.keys.agreement_keys",
    /** A new room-key epoch: sealed shares + one distributor signature (owners/admins). */
    publishEpoch: "unibus.v1.keys.publish_epoch",
    /** The caller's own sealed share of an epoch, with its Merkle proof. */
    getShare: "unibus.v1.keys.get_share",
    /** A room's epochs. */
    epochs: "unibus.v1.keys.epochs",
  },
  blobs: {
    all: "unibus.v1.blobs.>",
    putBegin: "unibus.v1.blobs.put.begin",
    getBegin: "unibus.v1.blobs.get.begin",
    /** Per-replica: chunks go to `<putChunk>.<replica>`, the replica holding the upload's stream. */
    putChunk: "unibus.v1.blobs.put.chunk",
    /** Per-replica: `<putEnd>.<replica>`. */
    putEnd: "unibus.v1.blobs.put.end",
    /** Per-replica: `<getChunk>.<replica>`. */
    getChunk: "unibus.v1.blobs.get.chunk",
  },
  replicaGateway: {
    all: "unibus.v1.replica.>",
    /** `ReplicaHello` → `ReplicaChallenge` (contracts/specs/replica-handshake.md). */
    handshakeHello: "unibus.v1.replica.handshake.hello",
    /** `ReplicaFinish` → `ReplicaFinishReply`. */
    handshakeFinish: "unibus.v1.replica.handshake.finish",
    /** Node-side lifecycle (contracts/specs/replica-lifecycle.md): signed by the node, with a handshake session. */
    handshakeRegister: "unibus.v1.replica.handshake.register",
    handshakeCommit: "unibus.v1.replica.handshake.commit",
    handshakeJoin: "unibus.v1.replica.handshake.join",
    /** A replica's principal and per-process agreement key (public). */
    info: "unibus.v1.replica.info",
    /** Admin-signed lifecycle and cluster endpoints. */
    init: "unibus.v1.replica.init",
    recover: "unibus.v1.replica.recover",
    history: "unibus.v1.replica.history",
    ticket: "unibus.v1.replica.ticket",
    approve: "unibus.v1.replica.approve",
    decommission: "unibus.v1.replica.decommission",
    nodes: "unibus.v1.replica.nodes",
    gatewayAdd: "unibus.v1.replica.gateway.add",
    gatewayRemove: "unibus.v1.replica.gateway.remove",
    /** Gateway to gateway (plain subscription, every replica hears it): a fresh replica asks peers for the seed. */
    seedRequest: "unibus.v1.replica.seed.request",
  },
  healthz: {
    all: "unibus.v1.healthz.>",
    status: "unibus.v1.healthz.status",
    /** The posture document (admin-signed): what `unibus status` and the web panel show. */
    posture: "unibus.v1.healthz.posture",
  },
} as const;
/**
 * The PSK handshake's subjects (hello, finish): the only ones an unknown or
 * node principal may publish to, so its grant is this wildcard, never
 * `replicaGateway.all` (the join/unlock endpoints that follow need a session).
 */
export const ReplicaHandshakeSubjects = "unibus.v1.replica.handshake.*" as const;

/** The shape of {@link Subjects}. */
export type Subjects = typeof Subjects;

/**
 * Requests that change nothing, so a client may send them again when the
 * connection drops while one is in flight (a kick that applies new
 * permissions does exactly that). Part of the contract: the kit refuses to
 * start a service that declares one of these as mutating.
 */
export const ReadOnlySubjects: ReadonlySet<string> = new Set<string>([
  Subjects.membership.usersList,
  Subjects.membership.usersGet,
  Subjects.membership.roomsGet,
  Subjects.membership.roomsList,
  Subjects.membership.roomsHistory,
  Subjects.membership.roomsLog,
  Subjects.membership.auditDenials,
  Subjects.membership.usersLog,
  Subjects.keys.agreementKeys,
  Subjects.keys.getShare,
  Subjects.keys.epochs,
  Subjects.healthz.status,
  Subjects.healthz.posture,
]);

/**
 * Prefix reserved for room subjects (ciphertext frames). It lies outside
 * `unibus.v1.` on purpose: members may publish to `unibus.v1.*.>` requests
 * (architecture §4), and that grant must never cover a room they do not belong to.
 * The room subject helper arrives with the rooms issue.
 */
export const RoomSubjectPrefix = "unibus.room" as const;
/** The room prefix as a type. */
export type RoomSubjectPrefix = typeof RoomSubjectPrefix;

/**
 * Where the membership service announces a change of `roomId`'s members
 * (`{roomId, principal, change, revision}`), so owners' clients rekey. Inside
 * the room's own subject space: only members (who may publish there too, so
 * an event is a hint, never an authority) receive it.
 */
export function roomMembershipSubject(roomId: string): string {
  return `${RoomSubjectPrefix}.${roomId}.membership`;
}

/**
 * Room-key notices (`{kind: "share_wanted", principal}` from a member that
 * holds no key of the newest epoch, `{kind: "epoch", epoch}` from an owner
 * after a rekey), contracts/specs/room-keys.md "Late agreement keys". Inside
 * the room's subject space, so only members receive them; any member may
 * publish there, so a notice only makes the receiver ask the keys service.
 */
export function roomKeysNoticeSubject(roomId: string): string {
  return `${RoomSubjectPrefix}.${roomId}.ctl.keys`;
}

/**
 * The capped stream of refused logins (schema `audit.denial.record`): the
 * auth callout publishes one record per denial to
 * `<subjectPrefix>.<principal>` (`_` when the client presented no valid
 * nkey), the membership service creates the stream and serves
 * `audit.denials` from it. Outside `unibus.v1.` and `unibus.room.`, so no
 * client grant reaches it. Old records are discarded first: an attacker
 * filling the stream can only push out history, never block the callout.
 */
export const AuditDenialStream = {
  name: "AUDIT_DENIALS",
  subjectPrefix: "unibus.audit.denials",
  /** Records kept at most. */
  maxMsgs: 100_000,
  /** Bytes kept at most (a record is ~250 bytes). */
  maxBytes: 64 * 1024 * 1024,
  /** Oldest record kept, in ms. */
  maxAgeMs: 7 * 24 * 3600 * 1000,
  /** Subject token used when no valid principal was presented. */
  noPrincipal: "_",
} as const;
/** The shape of {@link AuditDenialStream}. */
export type AuditDenialStream = typeof AuditDenialStream;

/** Subject an audit record of `principal` (or of none) is published to. */
export function auditDenialSubject(principal: string | undefined): string {
  return `${AuditDenialStream.subjectPrefix}.${principal ?? AuditDenialStream.noPrincipal}`;
}
