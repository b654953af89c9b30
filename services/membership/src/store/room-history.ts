/**
 * Room history, read by the membership service on its own connection: batch
 * direct get on `ROOM_<id>` (nats-server >= 2.11, stream `allow_direct`),
 * answered on the service's own inbox. Members hold no JetStream grant at
 * all: a direct get sends the stored message to whatever reply subject the
 * requester names, with the server's rights, so a member could aim a frame
 * it stored itself at `$KV.users.<key>` or `$JS.API.STREAM.PURGE.*` (threat:
 * a forged allowlist record, a purged bucket).
 */
import { createInbox } from "@nats-io/transport-node";
import type { Msg, NatsConnection } from "@nats-io/transport-node";
import type { MembershipRoomsHistoryReply } from "@unibus/contracts";
import { roomStreamName, roomSubject } from "./records.js";

/** One page of history as the endpoint answers it. */
export type RoomHistoryPage = MembershipRoomsHistoryReply;

/** Where a page starts: a stream sequence or a time. */
export type RoomHistoryStart = { seq: number } | { start_time: string };

/** Bounds of a history page. */
export const RoomHistoryLimits = {
  /** Frames per page when the request names no limit. */
  defaultFrames: 256,
  /**
   * Frame bytes per page (before base64): 512 KiB becomes about 683 KiB of
   * JSON, under NATS's 1 MiB max_payload with room for the rest of the reply.
   * A single frame above it is still returned alone.
   */
  pageBytes: 512 * 1024,
  /**
   * The largest frame a reply can carry (about 933 KiB once base64); larger
   * ones (no unibus SDK sends them) are listed with `omitted` and no data,
   * so history never stalls on one.
   */
  maxFrameBytes: 700 * 1024,
  /** A read with no reply from the stream for this long fails. */
  timeoutMs: 5_000,
} as const;

/** Headers of a direct get reply (nats-server's JetStream direct get API). */
const DirectHeader = {
  sequence: "Nats-Sequence",
  subject: "Nats-Subject",
  timeStamp: "Nats-Time-Stamp",
  numPending: "Nats-Num-Pending",
} as const;

/** Status codes a batch direct get ends with. */
const DirectStatus = {
  endOfBatch: 204,
  noResults: 404,
  noResponders: 503,
} as const;

/** A direct get that failed (no stream, refused, timed out, malformed). */
export class RoomHistoryError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "RoomHistoryError";
  }
}

/** Reads pages of a room's stored frames. */
export interface RoomHistory {
  /** One page of frames on the room's message subject from `start`; null when the room has no stream. */
  page(roomId: string, start: RoomHistoryStart, limit: number): Promise<RoomHistoryPage | null>;
}

/** A stored message as a direct get returns it. */
export interface DirectGetMessage {
  seq: number;
  subject: string;
  time: string;
  data: Uint8Array;
  headers: Record<string, string> | undefined;
  pending: number | undefined;
}

function headerNumber(msg: Msg, name: string): number | undefined {
  const v = msg.headers?.get(name);
  if (v === undefined || v === "") return undefined;
  const n = Number(v);
  return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
}

/** The frame's own headers; the server's `Nats-*` ones describe the stream, not the frame. */
function ownHeaders(msg: Msg): Record<string, string> | undefined {
  const h = msg.headers;
  if (h === undefined) return undefined;
  const out: Record<string, string> = {};
  for (const k of h.keys()) if (!k.toLowerCase().startsWith("nats-")) out[k] = h.get(k);
  return Object.keys(out).length === 0 ? undefined : out;
}

/** Room history over the service's own connection; replies come to its own inbox only. */
export class DirectRoomHistory implements RoomHistory {
  constructor(
    private readonly nc: NatsConnection,
    private readonly streams: { lastSeq(roomId: string): Promise<number | null> },
    private readonly timeoutMs: number = RoomHistoryLimits.timeoutMs,
  ) {}

  async page(roomId: string, start: RoomHistoryStart, limit: number): Promise<RoomHistoryPage | null> {
    // Read first, so every frame of the page is at or below it.
    const lastSeq = await this.streams.lastSeq(roomId);
    if (lastSeq === null) return null;
    const raw = await this.#fetch(roomStreamName(roomId), `${roomSubject(roomId)}.m`, start, limit);
    if (raw === null) return null;
    const messages: RoomHistoryPage["messages"] = [];
    let bytes = 0;
    let taken = 0;
    for (const r of raw) {
      // Counted before base64: the first frame always goes, so one large frame still makes progress.
      if (taken > 0 && bytes + r.data.byteLength > RoomHistoryLimits.pageBytes) break;
      bytes += r.data.byteLength;
      taken++;
      const omitted = r.data.byteLength > RoomHistoryLimits.maxFrameBytes;
      messages.push({
        seq: r.seq,
        subject: r.subject,
        time: r.time,
        data: omitted ? "" : Buffer.from(r.data).toString("base64"),
        ...(r.headers === undefined ? {} : { headers: r.headers }),
        ...(omitted ? { omitted: true } : {}),
      });
    }
    const lastTaken = raw[taken - 1];
    // More to read: frames left out of this page, or the server counted more after the batch.
    const more = taken < raw.length || (lastTaken?.pending ?? 0) > 0;
    return { messages, lastSeq: Math.max(lastSeq, lastTaken?.seq ?? 0), ...(more && lastTaken !== undefined ? { nextSeq: lastTaken.seq + 1 } : {}) };
  }

  #fetch(stream: string, subject: string, start: RoomHistoryStart, limit: number): Promise<DirectGetMessage[] | null> {
    return directGetBatch(this.nc, stream, subject, start, limit, this.timeoutMs);
  }
}

/**
 * One batch direct get of `stream` (messages on `subject` from `start`, at
 * most `limit`), answered on the connection's own inbox; null when the
 * stream does not exist. Also reads the audit stream.
 */
export function directGetBatch(nc: NatsConnection, stream: string, subject: string, start: RoomHistoryStart, limit: number, timeoutMs: number = RoomHistoryLimits.timeoutMs): Promise<DirectGetMessage[] | null> {
  return new Promise((resolve, reject) => {
    const frames: DirectGetMessage[] = [];
    let timer: NodeJS.Timeout | undefined;
    // The service's own inbox (its inboxPrefix), never a subject a requester chose.
    const inbox = createInbox((nc as { options?: { inboxPrefix?: string } }).options?.inboxPrefix);
    const finish = (err?: Error, none = false): void => {
      clearTimeout(timer);
      sub.unsubscribe();
      if (err !== undefined) reject(err);
      else resolve(none ? null : frames);
    };
    const arm = (): void => {
      clearTimeout(timer);
      timer = setTimeout(() => finish(new RoomHistoryError(`no direct get reply from ${stream} within ${timeoutMs} ms`)), timeoutMs);
    };
    const sub = nc.subscribe(inbox, {
      callback: (err, msg) => {
        if (err !== null) return finish(new RoomHistoryError(`direct get on ${stream} failed`, { cause: err }));
        const code = msg.headers?.code ?? 0;
        if (code === DirectStatus.endOfBatch || code === DirectStatus.noResults) return finish();
        if (code === DirectStatus.noResponders) return finish(undefined, true);
        if (code !== 0) return finish(new RoomHistoryError(`direct get on ${stream} failed: ${code} ${msg.headers?.description ?? ""}`));
        const seq = headerNumber(msg, DirectHeader.sequence);
        const stored = msg.headers?.get(DirectHeader.subject);
        const ts = msg.headers?.get(DirectHeader.timeStamp);
        const time = ts === undefined || ts === "" ? Number.NaN : Date.parse(ts);
        // Fail closed on a reply that is not a stored message: it cannot be placed in the stream order.
        if (seq === undefined || stored === undefined || stored === "" || Number.isNaN(time)) return finish(new RoomHistoryError(`malformed direct get reply from ${stream}`));
        frames.push({
          seq,
          subject: stored,
          time: new Date(time).toISOString(),
          data: msg.data,
          headers: ownHeaders(msg),
          pending: headerNumber(msg, DirectHeader.numPending),
        });
        arm();
      },
    });
    arm();
    nc.publish(`$JS.API.DIRECT.GET.${stream}`, JSON.stringify({ ...start, batch: limit, max_bytes: RoomHistoryLimits.pageBytes, next_by_subj: subject }), { reply: inbox });
  });
}
