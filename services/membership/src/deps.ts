import type { ConnectionKicker } from "./kick.js";
import type { RoomStreams } from "./room-streams.js";
import type { MembershipStore } from "./store.js";

/** What the membership handlers work on; `createMembershipService` builds it. */
export interface MembershipDeps {
  store: MembershipStore;
  kicker: ConnectionKicker;
  streams: RoomStreams;
  /**
   * Principal of the privileged internal bootstrap identity, the only signer
   * `admin.bootstrap` accepts. Unset: bootstrap is refused to everyone.
   */
  bootstrapPrincipal?: string;
  /** New room ids; default 12 random bytes as hex. */
  newRoomId?: () => string;
  /** Delay of a kick that affects the caller itself, after its reply. Default 250 ms. */
  selfKickDelayMs?: number;
}
