import { DiscardPolicy, JetStreamApiError, RetentionPolicy, StorageType } from "@nats-io/jetstream";
import type { JetStreamManager } from "@nats-io/jetstream";
import { roomStreamName, roomSubject } from "./records.js";

/** JetStream's "stream name already in use with a different configuration". */
const STREAM_NAME_IN_USE = 10058;

/** Creates the JetStream streams of persisted rooms. */
export interface RoomStreams {
  /** Creates (or confirms) the stream of a persisted room, turning on direct get and no-ack on an older one; idempotent. */
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
    const name = roomStreamName(roomId);
    try {
      await this.add(roomId);
    } catch (err) {
      // A stream made before these two settings lacks them; turn them on
      // and change nothing else. Any other difference still fails, as before.
      if (!(err instanceof JetStreamApiError && err.code === STREAM_NAME_IN_USE)) throw err;
      const info = await this.jsm.streams.info(name);
      if (info.config.allow_direct && info.config.no_ack) throw err;
      await this.jsm.streams.update(name, { ...info.config, allow_direct: true, no_ack: true });
    }
  }

  private async add(roomId: string): Promise<void> {
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
      // Members read history with batch direct get, never a consumer.
      allow_direct: true,
      // Frames are core publishes; an ack would go to whatever reply subject
      // the publisher named, even one it may not publish to (threat: a
      // member overwriting a KV record with a PubAck).
      no_ack: true,
    });
  }
}
