import type { DenialTrail } from "./store/audit.js";
import type { ConnectionKicker } from "./kick.js";
import type { RoomQuotaConfig } from "./quota.js";
import type { RoomConsumers } from "./store/room-consumers.js";
import type { RoomHistory } from "./store/room-history.js";
import type { RoomStreams } from "./store/room-streams.js";
import type { RoomLogStore } from "./store/room-log.js";
import type { MembershipStore } from "./store/membership-store.js";
import type { UsersLogStore } from "./store/users-log.js";

/** What the membership handlers work on; `createMembershipService` builds it. */
export interface MembershipDeps {
  store: MembershipStore;
  /** The rooms' membership logs: every create, invite, removal and leave is appended there first. */
  roomLog: RoomLogStore;
  /**
   * The users log, rooted at the bootstrap: every allowlist change is
   * appended there first. Unset (unit fixtures) or empty (a bus bootstrapped
   * before the log existed): changes are not logged.
   */
  usersLog?: UsersLogStore;
  kicker: ConnectionKicker;
  streams: RoomStreams;
  /** Deletes leftover consumers of a room stream when someone loses access to the room. */
  consumers: RoomConsumers;
  /** Reads room history for `rooms.history`; unset, that endpoint answers 503. */
  history?: RoomHistory;
  /** Reads recorded login refusals for `audit.denials`; unset, that endpoint answers 503. */
  denials?: DenialTrail;
  /**
   * Principal of the privileged internal bootstrap identity, the only signer
   * `admin.bootstrap` accepts. Unset: bootstrap is refused to everyone.
   */
  bootstrapPrincipal?: string;
  /** Stream limits of persisted rooms: defaults and ceilings. Default `DefaultRoomQuotaConfig`. */
  quotas?: RoomQuotaConfig;
  /** Delay of a kick that affects the caller itself, after its reply. Default 250 ms. */
  selfKickDelayMs?: number;
  /** Rooms one principal may belong to (create and invite refuse past it). Default `RoomLimit.perPrincipal`. */
  roomLimit?: number;
  /**
   * Announces a durable membership change of a room (after its KV writes),
   * so owners' clients rekey (architecture §5). Unset: nothing is announced.
   */
  announce?: (event: MembershipChangeEvent) => void;
}

/** Published on `unibus.room.<roomId>.membership` after a member joins, is removed or leaves. */
export interface MembershipChangeEvent {
  roomId: string;
  principal: string;
  change: "added" | "removed" | "left";
  /** The membership revision of the change. */
  revision: number;
}
