import { Kvm } from "@nats-io/kv";
import type { KV } from "@nats-io/kv";
import type { JetStreamClient } from "@nats-io/jetstream";
import { ErrorCode, ErrorReason, UnibusError } from "@unibus/contracts";

/**
 * The membership service's `members` bucket (key `<roomId>.<principal>`).
 * Named here rather than imported so blobs does not depend on the membership
 * package; the bucket name is part of the stored-data contract.
 */
export const MEMBERS_BUCKET = "members";

/** Answers "is this principal a member of this room?" from the `members` bucket. */
export interface RoomAccess {
  /** Throws 403 for a non-member and 503 when the store cannot answer (fail closed). */
  requireMember(roomId: string, principal: string): Promise<void>;
}

/** {@link RoomAccess} over a KV bucket; binds lazily so blobs can start before membership creates it. */
export class KvRoomAccess implements RoomAccess {
  #kv: KV | undefined;

  constructor(
    private readonly js: JetStreamClient,
    kv?: KV,
  ) {
    this.#kv = kv;
  }

  async requireMember(roomId: string, principal: string): Promise<void> {
    let found: boolean;
    try {
      // A leader read: a follower that has not seen a removal would still grant the room.
      this.#kv ??= await new Kvm(this.js).open(MEMBERS_BUCKET, { allow_direct: false });
      const entry = await this.#kv.get(`${roomId}.${principal}`);
      // A DEL/PURGE marker is a removed member (nats-notes "JetStream KV").
      found = entry !== null && entry.operation === "PUT" && entry.length > 0;
    } catch (err) {
      throw new UnibusError(ErrorCode.Unavailable, ErrorReason.Unavailable, "service unavailable", { cause: err });
    }
    if (!found) throw new UnibusError(ErrorCode.Forbidden, ErrorReason.Forbidden, "not a member of this room");
  }
}
