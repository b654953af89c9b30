import { DiscardPolicy, JetStreamApiError, RetentionPolicy, StorageType } from "@nats-io/jetstream";
import { nanos } from "@nats-io/transport-node";
import type { JetStreamManager } from "@nats-io/jetstream";
import type { MembershipRoomsGetReply } from "@unibus/contracts";
import type { RoomQuota } from "../quota.js";
import { roomStreamName, roomSubject } from "./records.js";

/** What a room's stream holds now. */
export type RoomUsage = NonNullable<MembershipRoomsGetReply["usage"]>;

/** A room stream's limits (absent for a stream created before quotas, which has none) and usage. */
export interface RoomStreamState {
  quota?: RoomQuota;
  usage: RoomUsage;
}

/** JetStream API error code: the account's storage cannot reserve the stream's max_bytes. */
export const InsufficientResourcesErrCode = 10047;

/** Creates the JetStream streams of persisted rooms. */
export interface RoomStreams {
  /** Creates (or confirms) the stream of a persisted room with `quota` as its limits; idempotent. */
  ensure(roomId: string, quota: RoomQuota): Promise<void>;
  /** The limits and usage of a room's stream, read from the stream; null if it has none. */
  describe(roomId: string): Promise<RoomStreamState | null>;
  /**
   * Turns on direct get and no-ack on a stream made before they were set,
   * changing nothing else; a no-op for a current stream or a room without one.
   */
  upgrade(roomId: string): Promise<void>;
  /** The stream's last sequence (0 when empty); null if the room has no stream. */
  lastSeq(roomId: string): Promise<number | null>;
}

/** Options of {@link JetStreamRoomStreams}. */
export interface RoomStreamOptions {
  /** 1 standalone, 3 in the cluster. */
  replicas: number;
}

/**
 * Room streams on JetStream: `ROOM_<id>` over `unibus.room.<id>.>`, file
 * storage. Clients publish only ciphertext frames (architecture §5), so the stream
 * holds nothing readable; deletes and purges are denied so a member cannot
 * quietly erase history.
 */
export class JetStreamRoomStreams implements RoomStreams {
  constructor(
    private readonly jsm: JetStreamManager,
    private readonly opts: RoomStreamOptions,
  ) {}

  async ensure(roomId: string, quota: RoomQuota): Promise<void> {
    await this.jsm.streams.add({
      name: roomStreamName(roomId),
      subjects: [`${roomSubject(roomId)}.>`],
      storage: StorageType.File,
      retention: RetentionPolicy.Limits,
      // A full room refuses new frames (the sender's publish gets an error)
      // instead of silently dropping the oldest: with discard=old, one member
      // flooding the room would erase everyone's history (threat: history
      // wiped by spam). max_age still expires old frames.
      discard: DiscardPolicy.New,
      num_replicas: this.opts.replicas,
      max_bytes: quota.maxBytes,
      max_msgs: quota.maxMsgs,
      max_msg_size: quota.maxMsgSize,
      max_age: nanos(quota.maxAgeSeconds * 1000),
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

  async upgrade(roomId: string): Promise<void> {
    let info;
    try {
      info = await this.jsm.streams.info(roomStreamName(roomId));
    } catch (err) {
      if (err instanceof JetStreamApiError && err.status === 404) return;
      throw err;
    }
    if (info.config.allow_direct && info.config.no_ack) return;
    await this.jsm.streams.update(info.config.name, { ...info.config, allow_direct: true, no_ack: true });
  }

  async lastSeq(roomId: string): Promise<number | null> {
    try {
      return (await this.jsm.streams.info(roomStreamName(roomId))).state.last_seq;
    } catch (err) {
      if (err instanceof JetStreamApiError && err.status === 404) return null;
      throw err;
    }
  }

  async describe(roomId: string): Promise<RoomStreamState | null> {
    let info;
    try {
      info = await this.jsm.streams.info(roomStreamName(roomId));
    } catch (err) {
      if (err instanceof JetStreamApiError && err.status === 404) return null;
      throw err;
    }
    const { config, state } = info;
    const usage: RoomUsage = { bytes: state.bytes, messages: state.messages };
    if (state.messages > 0 && state.first_ts !== undefined && !state.first_ts.startsWith("0001-")) usage.oldestAt = new Date(state.first_ts).toISOString();
    const maxMsgSize = config.max_msg_size ?? -1;
    const maxAgeSeconds = Math.floor(config.max_age / 1e9);
    // -1 / 0 mean unlimited in JetStream: such a stream predates quotas.
    if (config.max_bytes <= 0 || config.max_msgs <= 0 || maxMsgSize <= 0 || maxAgeSeconds <= 0) return { usage };
    return { quota: { maxBytes: config.max_bytes, maxMsgs: config.max_msgs, maxMsgSize, maxAgeSeconds }, usage };
  }
}
