import { JetStreamApiError } from "@nats-io/jetstream";
import type { JetStreamManager } from "@nats-io/jetstream";
import type { Logger } from "pino";
import { roomStreamName } from "./records.js";

/** JetStream's "stream not found": a room that is not persisted has no stream. */
const STREAM_NOT_FOUND = 10059;
/** JetStream's "consumer not found". */
const CONSUMER_NOT_FOUND = 10014;

/**
 * Removes consumers from room streams. Members are granted no consumer API
 * and room history is read with direct get, and no service keeps a consumer
 * on a room stream, so every consumer found there is a leftover (made before
 * members lost the consumer grant, or by hand) and is deleted. A durable
 * consumer outlives its creator's membership and the server delivers it as
 * its own client (threat: a removed member keeps reading the room, or
 * frames are sent to another user's inbox or a service endpoint).
 */
export interface RoomConsumers {
  /** Deletes every consumer on `roomId`'s stream; resolves to how many were deleted (0 if the room has no stream). */
  deleteAll(roomId: string): Promise<number>;
}

/** {@link RoomConsumers} on JetStream (`$JS.API.CONSUMER.LIST` / `DELETE` of `ROOM_<id>`). */
export class JetStreamRoomConsumers implements RoomConsumers {
  constructor(private readonly jsm: JetStreamManager) {}

  async deleteAll(roomId: string): Promise<number> {
    const stream = roomStreamName(roomId);
    const names: string[] = [];
    try {
      // Listed in full first: deleting while paging would shift the pages.
      for await (const ci of this.jsm.consumers.list(stream)) names.push(ci.name);
    } catch (err) {
      if (err instanceof JetStreamApiError && err.code === STREAM_NOT_FOUND) return 0;
      throw err;
    }
    let deleted = 0;
    for (const name of names) {
      try {
        if (await this.jsm.consumers.delete(stream, name)) deleted++;
      } catch (err) {
        // Gone meanwhile (an ephemeral one timing out) is the goal reached.
        if (err instanceof JetStreamApiError && err.code === CONSUMER_NOT_FOUND) continue;
        throw err;
      }
    }
    return deleted;
  }
}

/**
 * Deletes the consumers of `roomIds`' streams after someone lost access to
 * them. The access change is already durable and the grant is gone, so a
 * failure here is logged, not returned: the next start of the service sweeps
 * every room stream again (see `createMembershipService`).
 */
export async function deleteLeftoverConsumers(consumers: RoomConsumers, roomIds: readonly string[], logger: Logger): Promise<void> {
  for (const roomId of roomIds) {
    try {
      const deleted = await consumers.deleteAll(roomId);
      if (deleted > 0) logger.warn({ room: roomId, deleted }, "leftover consumers deleted from room stream");
    } catch (err) {
      logger.error({ room: roomId, err: err instanceof Error ? err.message : String(err) }, "leftover consumers of room stream not deleted");
    }
  }
}
