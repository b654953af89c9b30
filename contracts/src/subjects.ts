/**
 * Every subject and service name unibus uses, in one module, so ACLs, services
 * and clients cannot drift apart. Control-plane requests follow
 * `unibus.v1.<service>.<endpoint>`.
 */
import { resendableSubjects, serviceSubjects } from "./endpoints.js";
export { SubjectPrefix } from "./endpoints.js";

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
 * Request subjects, grouped by the service that answers them, derived from
 * the endpoint catalogue (`endpoints.ts`): `Subjects.<service>.<camelName>`
 * is `unibus.v1.<token>.<name>` (`users.add` → `usersAdd`). `all` is the
 * service's wildcard, for permissions. The replica gateway answers under
 * `replica`, the name architecture §2 gives its subjects.
 */
export const Subjects = {
  authCallout: {
    /** nats-server's auth callout request subject. */
    authorize: "$SYS.REQ.USER.AUTH",
  },
  membership: serviceSubjects("membership"),
  keys: serviceSubjects("keys"),
  /** Per-replica endpoints (`put.chunk`, `put.end`, `get.chunk`) listen on `<subject>.<replica>`, the replica holding the session. */
  blobs: serviceSubjects("blobs"),
  replicaGateway: {
    ...serviceSubjects("replica"),
    /** Gateway to gateway (plain subscription, every replica hears it): a fresh replica asks peers for the seed. */
    seedRequest: "unibus.v1.replica.seed.request",
  },
  healthz: serviceSubjects("healthz"),
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
 * permissions does exactly that): the catalogue's `resend` endpoints. Part
 * of the contract: the kit refuses to start a service that declares one of
 * these as mutating.
 */
export const ReadOnlySubjects: ReadonlySet<string> = new Set<string>(resendableSubjects());

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
