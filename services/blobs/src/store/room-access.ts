import { Kvm } from "@nats-io/kv";
import type { KV } from "@nats-io/kv";
import type { JetStreamClient } from "@nats-io/jetstream";
import { ErrorCode, ErrorReason, StoredBucket, UnibusError } from "@unibus/contracts";
import { requireMember } from "@unibus/kit";

/** The membership service's `members` bucket (key `<roomId>.<principal>`), from the stored-data contract. */
export const MEMBERS_BUCKET = StoredBucket.membership.members;

/** Answers "is this principal a member of this room?" from the `members` bucket. */
export interface RoomAccess {
  /** Throws 403 for a non-member, 503 when the store cannot answer and 500 for a damaged record (fail closed). */
  requireMember(roomId: string, principal: string): Promise<void>;
}

/** {@link RoomAccess} over a KV bucket (the kit's membership view); binds lazily so blobs can start before membership creates it. */
export class KvRoomAccess implements RoomAccess {
  #kv: KV | undefined;

  constructor(
    private readonly js: JetStreamClient,
    kv?: KV,
  ) {
    this.#kv = kv;
  }

  async requireMember(roomId: string, principal: string): Promise<void> {
    try {
      // The view reads its fenced copy of this bucket: neither a lagging
      // follower nor a stale leader may grant the room after a removal.
      this.#kv ??= await new Kvm(this.js).open(MEMBERS_BUCKET, { allow_direct: false });
    } catch (err) {
      throw new UnibusError(ErrorCode.Unavailable, ErrorReason.Unavailable, "service unavailable", { cause: err });
    }
    // A DEL/PURGE marker is a removed member; a damaged record denies with corrupt_record.
    await requireMember(this.#kv, roomId, principal);
  }
}
