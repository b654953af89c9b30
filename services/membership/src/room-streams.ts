import { DiscardPolicy, RetentionPolicy, StorageType } from "@nats-io/jetstream";
import type { JetStreamManager } from "@nats-io/jetstream";
import { roomStreamName, roomSubject } from "./records.js";

/** Creates the JetStream streams of persisted rooms. */
export interface RoomStreams {
  /** Creates (or confirms) the stream of a persisted room; idempotent. */
  ensure(roomId: string): Promise<void>;
}

/** Options of {@link JetStreamRoomStreams}. */
export interface RoomStreamOptions {
  /** 1 standalone, 3 in the cluster. */
  replicas: number;
  /** Largest frame in bytes. Default 1 MiB. */
  maxMsgSize?: number;
}

/**
 * Room streams on JetStream: `ROOM_<id>` over `unibus.room.<id>.>`, file
 * storage. Clients publish only ciphertext frames (DESIGN §5), so the stream
 * holds nothing readable; deletes and purges are denied so a member cannot
 * quietly erase history.
 */
export class JetStreamRoomStreams implements RoomStreams {
  constructor(
    private readonly jsm: JetStreamManager,
    private readonly opts: RoomStreamOptions,
  ) {}

  async ensure(roomId: string): Promise<void> {
    await this.jsm.streams.add({
      name: roomStreamName(roomId),
      subjects: [`${roomSubject(roomId)}.>`],
      storage: StorageType.File,
      retention: RetentionPolicy.Limits,
      discard: DiscardPolicy.Old,
      num_replicas: this.opts.replicas,
      max_msg_size: this.opts.maxMsgSize ?? 1024 * 1024,
      deny_delete: true,
      deny_purge: true,
    });
  }
}
