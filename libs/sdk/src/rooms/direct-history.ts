/**
 * Reads a room stream with batch direct get (nats-server >= 2.11, stream
 * `allow_direct`): `$JS.API.DIRECT.GET.<stream>` with `{seq|start_time,
 * batch, max_bytes, next_by_subj}`, answered on the reader's own inbox. No
 * consumer is created, so a member needs no `$JS.API.CONSUMER.*` grant
 * (a push consumer's deliver subject escapes the member's publish allow list).
 */
import { createInbox } from "@nats-io/transport-node";
import type { Msg, NatsConnection } from "@nats-io/transport-node";

/** Headers of a direct get reply (nats-server's JetStream direct get API). */
const DirectHeader = {
  sequence: "Nats-Sequence",
  subject: "Nats-Subject",
  numPending: "Nats-Num-Pending",
} as const;

/** Status codes a batch direct get ends with. */
const DirectStatus = {
  /** End of batch: the page is complete. */
  endOfBatch: 204,
  /** Nothing at or after the start. */
  noResults: 404,
  /** No stream answers this subject (the room is not persisted). */
  noResponders: 503,
} as const;

/** Bounds of a direct history read. */
export const DirectHistoryLimits = {
  /** Messages asked for per request. */
  batch: 256,
  /** Bytes asked for per request; a page is held in memory before it is read. */
  maxBytes: 8 * 1024 * 1024,
  /** A page with no reply for this long fails the read. */
  timeoutMs: 5_000,
} as const;

/** One stored message of a room stream. */
export interface StoredFrame {
  readonly seq: number;
  readonly subject: string;
  readonly data: Uint8Array;
}

/** Where a history read starts: a stream sequence or a time. */
export type DirectHistoryStart = { seq: number } | { start_time: string };

/** Thrown when a direct get fails (no stream, refused, timed out). */
export class DirectHistoryError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "DirectHistoryError";
  }
}

interface Page {
  frames: StoredFrame[];
  /** Matching messages after the page's first one, as the server counted them then. */
  firstPending: number | undefined;
  /** Matching messages after the page's last one. */
  pending: number | undefined;
}

function headerNumber(msg: Msg, name: string): number | undefined {
  const v = msg.headers?.get(name);
  if (v === undefined || v === "") return undefined;
  const n = Number(v);
  return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
}

function fetchPage(nc: NatsConnection, stream: string, subject: string, start: DirectHistoryStart, timeoutMs: number): Promise<Page> {
  return new Promise((resolve, reject) => {
    const frames: StoredFrame[] = [];
    let firstPending: number | undefined;
    let pending: number | undefined;
    let timer: NodeJS.Timeout | undefined;
    // The reply must come to this connection's own inbox (`inboxPrefix`, set
    // by `connect()`): it is the only subject a member may subscribe to
    // besides its rooms. The option is not on the public interface.
    const inbox = createInbox((nc as { options?: { inboxPrefix?: string } }).options?.inboxPrefix);
    const finish = (err?: Error): void => {
      clearTimeout(timer);
      sub.unsubscribe();
      if (err !== undefined) reject(err);
      else resolve({ frames, firstPending, pending });
    };
    const arm = (): void => {
      clearTimeout(timer);
      timer = setTimeout(() => finish(new DirectHistoryError(`no direct get reply from ${stream} within ${timeoutMs} ms`)), timeoutMs);
    };
    const sub = nc.subscribe(inbox, {
      callback: (err, msg) => {
        if (err !== null) return finish(new DirectHistoryError(`direct get on ${stream} failed`, { cause: err }));
        const code = msg.headers?.code ?? 0;
        if (code === DirectStatus.endOfBatch || code === DirectStatus.noResults) return finish();
        if (code === DirectStatus.noResponders) return finish(new DirectHistoryError(`no stream ${stream}`));
        if (code !== 0) return finish(new DirectHistoryError(`direct get on ${stream} failed: ${code} ${msg.headers?.description ?? ""}`));
        const seq = headerNumber(msg, DirectHeader.sequence);
        const stored = msg.headers?.get(DirectHeader.subject);
        // Fail closed on a reply that is not a stored message: it cannot be placed in the stream order.
        if (seq === undefined || stored === undefined) return finish(new DirectHistoryError(`malformed direct get reply from ${stream}`));
        frames.push({ seq, subject: stored, data: msg.data });
        pending = headerNumber(msg, DirectHeader.numPending);
        if (frames.length === 1) firstPending = pending;
        arm();
      },
    });
    arm();
    nc.publish(`$JS.API.DIRECT.GET.${stream}`, JSON.stringify({ ...start, batch: DirectHistoryLimits.batch, max_bytes: DirectHistoryLimits.maxBytes, next_by_subj: subject }), {
      reply: inbox,
    });
  });
}

/**
 * The messages of `stream` on `subject` from `start`, up to the newest at
 * the time of the first reply: the first message's pending count fixes how
 * many are read, so a busy room cannot keep the read going forever.
 */
export async function* readDirectHistory(nc: NatsConnection, stream: string, subject: string, start: DirectHistoryStart, timeoutMs: number = DirectHistoryLimits.timeoutMs): AsyncGenerator<StoredFrame> {
  let left: number | undefined;
  let from = start;
  for (;;) {
    const page = await fetchPage(nc, stream, subject, from, timeoutMs);
    if (page.frames.length === 0) return;
    // Without a pending count, the first page is all there is to read.
    if (left === undefined) left = page.firstPending === undefined ? page.frames.length : 1 + page.firstPending;
    for (const f of page.frames) {
      yield f;
      if (--left <= 0) return;
    }
    if (page.pending === undefined || page.pending === 0) return;
    from = { seq: page.frames[page.frames.length - 1]!.seq + 1 };
  }
}
