import { RoomStreamPrefix, StoredBucket } from "./stored.js";
import { ReplicaHandshakeSubjects, RoomSubjectPrefix, SubjectPrefix } from "./subjects.js";

/** Protocol names fixed by nats-server's auth callout (ADR-26). */
export const CalloutSubject = {
  /** Where nats-server publishes authorization requests. */
  auth: "$SYS.REQ.USER.AUTH",
  /** Micro-service group + endpoint that together make {@link CalloutSubject.auth}. */
  group: "$SYS.REQ.USER",
  endpoint: "AUTH",
  /** The `aud` of every genuine request JWT. */
  requestAudience: "nats-authorization-request",
  /** Header naming the server's curve key when the request is encrypted. */
  xkeyHeader: "Nats-Server-Xkey",
  /** Prefix of the server's reply inboxes for callout requests. */
  replyPrefix: "$SYS._INBOX.",
} as const;
/** One of the {@link CalloutSubject} values. */
export type CalloutSubject = (typeof CalloutSubject)[keyof typeof CalloutSubject];

/** Subject roots of the unibus data and control planes (architecture §4), from the one subjects module. */
export const UnibusSubject = {
  /** `unibus.room.<roomId>.>`: room data plane. */
  roomPrefix: `${RoomSubjectPrefix}.`,
  /** A persisted room's JetStream stream is `ROOM_<roomId>`. */
  roomStreamPrefix: RoomStreamPrefix,
  /** `unibus.v1.<service>.<endpoint…>`: control-plane requests. */
  controlPlane: `${SubjectPrefix}.*.>`,
  /** The replica gateway's PSK handshake subjects: all a node / bootstrap identity may publish to. */
  replicaHandshake: ReplicaHandshakeSubjects,
  /** Inbox root; each principal gets `_INBOX.<principal>.>`. */
  inboxPrefix: "_INBOX.",
  /** Micro discovery (`$SRV.PING|INFO|STATS`), admin only. */
  microDiscovery: "$SRV.>",
} as const;
/** One of the {@link UnibusSubject} values. */
export type UnibusSubject = (typeof UnibusSubject)[keyof typeof UnibusSubject];

/** The KV buckets the callout reads (written by the membership service). */
export const DirectoryBucket = {
  users: StoredBucket.membership.users,
  roomsByMember: StoredBucket.membership.roomsByMember,
} as const;
/** One of the {@link DirectoryBucket} names. */
export type DirectoryBucket = (typeof DirectoryBucket)[keyof typeof DirectoryBucket];
