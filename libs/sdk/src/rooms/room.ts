/**
 * End-to-end encrypted room messaging (architecture §5, contracts/specs/frames.md).
 *
 * Publishers coalesce the messages of one event-loop turn into one frame (one
 * AEAD operation, one Ed25519 signature, one NATS message), flushed on
 * `setImmediate` or when a size bound is reached; a message into an idle room
 * is sealed and sent inside `publish()`, and under load one signature covers
 * a batch. Sending is pipelined: a batch is sealed while earlier frames are
 * still unconfirmed by the server, up to a bound (RoomLimits
 * maxUnconfirmedBytes/Frames), past which it waits for a round trip. Receivers
 * deliver only frames whose signature, room, epoch key, counters and AEAD tag
 * all check out; everything else becomes a reject event.
 */
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import { ErrorCode, ErrorReason, UnibusError, roomKeysNoticeSubject, roomMembershipSubject } from "@unibus/contracts";
import type { MembershipRoomsGetReply, MembershipRoomsHistoryReply, MembershipRoomsHistoryRequest } from "@unibus/contracts";
import { toHex } from "@unibus/crypto";
import type { SigningKey } from "@unibus/crypto";
import { FrameError, RejectReason, frameOverheadBytes, frameSignatureValid, openFrame, parseFrame, sealFrame, senderPrincipal } from "./frame.js";
import type { ParsedFrame } from "./frame.js";
import type { RoomEpochKey, RoomKeySource } from "./keyring.js";
import { ReplayGuard } from "./replay-guard.js";
import { ReplayWindow } from "./replay-window.js";

/** Room subjects and stream names; the auth callout grants `unibus.room.<id>.>` to members. */
export const RoomSubject = {
  prefix: "unibus.room.",
  /** Last token of the message subject. */
  messages: "m",
  streamPrefix: "ROOM_",
} as const;

/** Publisher/receiver bounds (contracts/specs/frames.md §Coalescing). */
export const RoomLimits = {
  /** Most messages in one frame. */
  maxMessagesPerFrame: 512,
  /** A frame is flushed once its plaintext reaches this many bytes (below NATS's 1 MiB max_payload). */
  maxFrameBytes: 256 * 1024,
  /** Reordering tolerated per (sender, epoch), in message counters. */
  replayWindow: 8192,
  /** Reject events buffered for `rejects()`; older ones are dropped (and counted). */
  rejectBuffer: 1024,
  /**
   * Largest frame sent to a persisted room, whatever its max_msg_size: history
   * comes back base64 in a JSON reply, which must stay under NATS's 1 MiB
   * max_payload (640 KiB is about 853 KiB once encoded).
   */
  maxStoredFrameBytes: 640 * 1024,
  /** Stored bytes a frame costs besides its own bytes and subject (the stream's per-message record), for the quota estimate. */
  storedOverheadBytes: 64,
  /** While publishing, the room's usage is re-read from the service at least this often. */
  usageRefreshMs: 5_000,
  /** A full room's usage is re-read at most this often (a sender retrying does not flood the service). */
  fullRefreshMs: 1_000,
  /** Frames asked for per history page (the service also bounds a page in bytes). */
  historyPageFrames: 256,
  /**
   * The publisher's current key is re-read on a keys notice, a membership
   * event or a live frame of a newer epoch; this is the backstop when such a
   * hint is lost (they are core NATS messages).
   */
  currentKeyRefreshMs: 10_000,
  /** Hints re-read the current key at most this often (any member may publish a notice). */
  currentKeyHintMinMs: 250,
  /**
   * Frame bytes handed to the connection that no server round trip has
   * confirmed yet. A batch waits before sealing while this many are out, so
   * a publisher that awaits `publish()` keeps sealing while earlier frames
   * travel, but cannot grow the connection's buffers without bound (or push
   * the server into dropping a slow subscriber) by outrunning the server.
   */
  maxUnconfirmedBytes: 2 * 1024 * 1024,
  /** Frames handed to the connection and not yet confirmed; the same bound for many small frames. */
  maxUnconfirmedFrames: 64,
} as const;

/** Publisher pipeline bounds; tests shrink them. */
export interface PipelineLimits {
  maxUnconfirmedBytes: number;
  maxUnconfirmedFrames: number;
}

/** Stable reasons of a refused room publish (UnibusError code 413). */
export const RoomPublishReason = {
  /** The persisted room's stream is at its quota (bytes or messages): nothing more is stored until old frames expire. */
  roomFull: "room_full",
  /** One message is larger than the room's largest frame. */
  messageTooLarge: "message_too_large",
} as const;

/**
 * What a room needs of the membership service: `rooms.get` (persistence,
 * quota and usage) and `rooms.history`. `UnibusClient.rooms` has both.
 * Members hold no JetStream grant, so a room never calls the JetStream API.
 */
export interface RoomControl {
  get(roomId: string): Promise<MembershipRoomsGetReply>;
  history(req: MembershipRoomsHistoryRequest, opts?: { timeoutMs?: number }): Promise<MembershipRoomsHistoryReply>;
}

/** A persisted room's limits and what the sender believes its stream holds. */
interface Quota {
  maxBytes: number;
  maxMsgs: number;
}

/** Where a room's frames go, from `rooms.get`. */
type PublishTarget = { persisted: false } | { persisted: true; maxFrameBytes: number; quota: Quota | undefined };

/** An authenticated, decrypted room message. */
export interface RoomMessage {
  /** The sender's principal (`U…`), proven by its Ed25519 signature. */
  readonly sender: string;
  readonly epoch: number;
  /** The sender's counter for this message; unique per (sender, epoch). */
  readonly counter: number;
  readonly data: Uint8Array;
  /** `data` as UTF-8. */
  string(): string;
  /** `data` parsed as JSON. */
  json<T = unknown>(): T;
}

/** A frame that was not delivered. Fields other than `reason` are the frame's claims; they are authenticated only for `unknown_epoch`, `replay`, `stale` and `decrypt_failed`. */
export interface RoomReject {
  reason: RejectReason;
  sender?: string;
  epoch?: number;
  counter?: number;
  /** Messages the frame claimed to carry. */
  count?: number;
}

/** A live subscription; iterate it (or give `subscribe` a callback), `stop()` it. */
export interface RoomSubscription extends AsyncIterable<RoomMessage> {
  stop(): void;
}

/** Called with each authenticated live message by `subscribe(callback)`. */
export type RoomMessageCallback = (m: RoomMessage) => void;

/** Options of {@link Room.history}. */
export interface HistoryOptions {
  /** A stream sequence to start at, or a time. Default: the beginning. */
  since?: number | Date;
  /** A page of history (one `rooms.history` request) with no reply for this long fails the read. Default: the client's request timeout. */
  timeoutMs?: number;
}

/** An end-to-end encrypted room. */
export interface Room {
  readonly roomId: string;
  /** The subject frames travel on: `unibus.room.<roomId>.m`. */
  readonly subject: string;
  /**
   * Queues a message; resolves when its frame is handed to the connection
   * (a core publish: room streams send no acks). In a persisted room it
   * rejects with UnibusError 413 `room_full` when the room's usage, as last
   * read from the service plus what this sender sent since, says the frame
   * cannot fit its quota, and `message_too_large` for a message above the
   * room's largest frame. The stream's own limit stays the hard one: frames
   * of several concurrent senders may be dropped by the stream (still
   * delivered live) before a sender's estimate catches up.
   * Messages queued in the same event-loop turn share one outcome; a message
   * into an idle room is sent before `publish()` returns. Back-pressure:
   * while `RoomLimits.maxUnconfirmedBytes` (or `maxUnconfirmedFrames`) of
   * this room's frames are unconfirmed by a server round trip, a new batch
   * waits before it is sealed, so a publisher that awaits `publish()` keeps
   * at most that much in flight. It rejects with 503 `connection_lost`
   * when the connection went away while it waited: that batch was not sent.
   */
  publish(data: Uint8Array | string | object): Promise<void>;
  /**
   * Sends what is queued and resolves once the server has received every
   * frame published before the call (a round trip to the server): the
   * backpressure point of a publisher, without reaching for the connection.
   * Rejects like `publish` when a queued frame was refused.
   */
  flush(): Promise<void>;
  /**
   * Authenticated messages published from now on: iterate the result, or pass
   * `callback` to be called with each (the iterator then yields nothing).
   * Live frames must be fresh (contracts/specs/frames.md §Freshness): a
   * frame's counter within 5 min of this clock, and never one this client
   * already accepted, across resubscribes.
   */
  subscribe(callback?: RoomMessageCallback): RoomSubscription;
  /** Authenticated messages stored in a persisted room's stream, up to the newest at call time. */
  history(opts?: HistoryOptions): AsyncIterable<RoomMessage>;
  /** Reject events of every subscription and history read of this room. */
  rejects(): AsyncIterable<RoomReject>;
  /** Reject events dropped because nobody drained `rejects()`. */
  readonly rejectsDropped: number;
  /** Flushes pending messages and stops subscriptions. */
  close(): Promise<void>;
}

class RoomMessageImpl implements RoomMessage {
  constructor(
    readonly sender: string,
    readonly epoch: number,
    readonly counter: number,
    readonly data: Uint8Array,
  ) {}
  string(): string {
    return new TextDecoder().decode(this.data);
  }
  json<T = unknown>(): T {
    return JSON.parse(this.string()) as T;
  }
}

/** An unbounded (or drop-oldest bounded) push → async-iterator queue. */
class PushQueue<T> implements AsyncIterable<T> {
  #items: T[] = [];
  #head = 0;
  #waiter: ((r: IteratorResult<T>) => void) | undefined;
  #done = false;
  dropped = 0;
  constructor(readonly bound = Infinity) {}

  push(item: T): void {
    if (this.#done) return;
    const w = this.#waiter;
    if (w !== undefined) {
      this.#waiter = undefined;
      w({ value: item, done: false });
      return;
    }
    if (this.#items.length - this.#head >= this.bound) {
      this.#head++;
      this.dropped++;
    }
    this.#items.push(item);
  }

  end(): void {
    this.#done = true;
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return {
      next: (): Promise<IteratorResult<T>> => {
        if (this.#head < this.#items.length) {
          const value = this.#items[this.#head++] as T;
          if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
            this.#items = this.#items.slice(this.#head);
            this.#head = 0;
          }
          return Promise.resolve({ value, done: false });
        }
        if (this.#done) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => (this.#waiter = resolve));
      },
      return: (): Promise<IteratorResult<T>> => {
        this.end();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }
}

/** A frame sender's derived ids, cached by {@link FrameReceiver} for the next frame. */
interface SenderIds {
  key: Uint8Array;
  epoch: number;
  hex: string;
  principal: string;
  /** The replay window's id: `room/senderHex/epoch`. */
  windowId: string;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Authenticates frames of one delivery stream (the room's live feed or one
 * history read) in arrival order: parse → room → signature → freshness (live
 * only) → replay window → epoch key → sender membership → AEAD → deliver:
 * the cheap local checks run before anything that may ask the keys service. Live frames use the
 * client's replay windows (kept across resubscribes); a history read has its
 * own, because it legitimately sees each stored frame once however old.
 */
class FrameReceiver {
  readonly #own = new Map<string, ReplayWindow>();
  readonly #principals = new Map<string, string>();
  /**
   * The previous frame's sender and epoch with their derived strings: a
   * room's frames mostly come from the sender of the one before, and
   * re-deriving the hex key, principal and window id per frame was garbage
   * on every message. The key is a copy: the frame's bytes are not ours to keep.
   */
  #last: SenderIds | undefined;
  #chain: Promise<void> | undefined;

  constructor(
    readonly roomId: string,
    readonly keyFor: (epoch: number) => Uint8Array | undefined | Promise<Uint8Array | undefined>,
    readonly deliver: (m: RoomMessage) => void,
    readonly reject: (r: RoomReject) => void,
    /** Present for live frames: the client's replay windows and clock. */
    readonly live: ReplayGuard | undefined,
    /** The epoch's verified members; absent when the key source cannot tell (no sender check). */
    readonly membersOf?: (epoch: number) => ReadonlySet<string> | undefined,
  ) {}

  #window(id: string): ReplayWindow {
    if (this.live !== undefined) return this.live.window(id);
    let w = this.#own.get(id);
    if (w === undefined) {
      w = new ReplayWindow(RoomLimits.replayWindow);
      this.#own.set(id, w);
    }
    return w;
  }

  /** The `U…` principal of a sender key, cached: a room's frames come from few senders, and encoding one costs more than the lookup. */
  #principal(senderHex: string, f: ParsedFrame): string {
    let p = this.#principals.get(senderHex);
    if (p === undefined) {
      // Bounded: frames claiming ever new keys cannot grow it.
      if (this.#principals.size >= 1024) this.#principals.clear();
      p = senderPrincipal(f);
      this.#principals.set(senderHex, p);
    }
    return p;
  }

  /** The sender's ids for frame `f`: the previous frame's when sender and epoch are the same, else derived afresh. */
  #senderIds(f: ParsedFrame): SenderIds {
    const last = this.#last;
    if (last !== undefined && last.epoch === f.epoch && sameBytes(last.key, f.senderKey)) return last;
    const hex = toHex(f.senderKey);
    const ids: SenderIds = { key: f.senderKey.slice(), epoch: f.epoch, hex, principal: this.#principal(hex, f), windowId: `${this.roomId}/${hex}/${f.epoch}` };
    this.#last = ids;
    return ids;
  }

  /** Processes one frame; returns a promise only when it had to wait for a key (order is kept). */
  accept(bytes: Uint8Array): void | Promise<void> {
    if (this.#chain !== undefined) return this.#track(this.#chain.then(() => this.#process(bytes)));
    const pending = this.#process(bytes);
    if (pending !== undefined) return this.#track(pending);
  }

  #track(p: Promise<void>): Promise<void> {
    const tail: Promise<void> = p.finally(() => {
      if (this.#chain === tail) this.#chain = undefined;
    });
    this.#chain = tail;
    return tail;
  }

  #process(bytes: Uint8Array): void | Promise<void> {
    let f: ParsedFrame;
    try {
      f = parseFrame(bytes);
    } catch {
      return this.reject({ reason: RejectReason.malformed });
    }
    const ids = this.#senderIds(f);
    const claims = { sender: ids.principal, epoch: f.epoch, counter: f.counter, count: f.count };
    if (f.roomId !== this.roomId) return this.reject({ reason: RejectReason.wrongRoom, ...claims });
    if (!frameSignatureValid(f)) return this.reject({ reason: RejectReason.badSignature, ...claims });
    // Before the key lookup: an old frame replayed live must not cost a shares.get.
    if (this.live !== undefined && !this.live.timely(f.counter)) return this.reject({ reason: RejectReason.stale, ...claims });
    // Also before the key lookup: a replayed frame is refused from memory.
    // Frames are processed one at a time (#chain), so nothing records into
    // this window between this check and the record below.
    const w = this.#window(ids.windowId);
    if (!w.fresh(f.counter, f.count)) return this.reject({ reason: RejectReason.replay, ...claims });
    const key = this.keyFor(f.epoch);
    if (key instanceof Promise) {
      return key.then(
        (k) => this.#finish(f, claims, k, w),
        () => this.reject({ reason: RejectReason.unknownEpoch, ...claims }),
      );
    }
    this.#finish(f, claims, key, w);
  }

  #finish(f: ParsedFrame, claims: { sender: string; epoch: number; counter: number; count: number }, key: Uint8Array | undefined, w: ReplayWindow): void {
    if (key === undefined) return this.reject({ reason: RejectReason.unknownEpoch, ...claims });
    // Only the epoch's verified members may speak in it: a removed member's
    // key, or one the service slipped in, signs nothing readers accept.
    if (this.membersOf !== undefined && this.membersOf(f.epoch)?.has(claims.sender) !== true) return this.reject({ reason: RejectReason.senderNotMember, ...claims });
    let messages: Uint8Array[];
    try {
      messages = openFrame(f, key);
    } catch (err) {
      return this.reject({ reason: err instanceof FrameError ? err.reason : RejectReason.decryptFailed, ...claims });
    }
    // Recorded only now: a frame that fails the tag must not burn its counters.
    w.record(f.counter, f.count);
    for (let i = 0; i < messages.length; i++) this.deliver(new RoomMessageImpl(claims.sender, f.epoch, f.counter + i, messages[i]!));
  }
}

/** A server round trip (PING/PONG) asked for by the publisher pipeline. */
interface Ping {
  done: Promise<void>;
}

interface Batch {
  messages: Uint8Array[];
  bytes: number;
  done: Promise<void>;
  resolve: () => void;
  fail: (err: unknown) => void;
}

function newBatch(): Batch {
  let resolve!: () => void;
  let fail!: (err: unknown) => void;
  const done = new Promise<void>((res, rej) => {
    resolve = res;
    fail = rej;
  });
  return { messages: [], bytes: 0, done, resolve, fail };
}

const encoder = new TextEncoder();

function toBytes(data: Uint8Array | string | object): Uint8Array {
  if (data instanceof Uint8Array) return data;
  if (typeof data === "string") return encoder.encode(data);
  return encoder.encode(JSON.stringify(data));
}

/** One subscriber of a room's live feed. */
interface LiveListener {
  deliver(m: RoomMessage): void;
  end(): void;
}

/** A room's one NATS subscription, fanned out to its subscriptions: the client's replay windows see each frame once. */
interface LiveFeed {
  sub: Subscription;
  listeners: Set<LiveListener>;
}

class RoomImpl implements Room {
  readonly subject: string;
  readonly #nc: NatsConnection;
  readonly #signer: SigningKey;
  readonly #keys: RoomKeySource;
  readonly #keyCache = new Map<number, Uint8Array>();
  readonly #rejects = new PushQueue<RoomReject>(RoomLimits.rejectBuffer);
  readonly #guard: ReplayGuard;
  #live: LiveFeed | undefined;
  /** Outcomes of batches not yet settled, for `flush()`. */
  readonly #pending = new Set<Promise<void>>();
  /** The publisher's current key, re-read on hints (keys notice, membership event, newer epoch seen) or after `currentKeyRefreshMs`. */
  #current: { value: RoomEpochKey; at: number } | undefined;
  #currentStale = false;
  #hints: Subscription[] | undefined;
  #batch: Batch | undefined;
  #sending: Promise<void> = Promise.resolve();
  /** Batches chained on #sending and not yet finished: while any is, a lone message may not overtake it. */
  #queued = 0;
  /**
   * A frame was handed over in this event-loop turn: the room is busy, so a
   * new message joins a batch (the sending loop's next message must not go
   * out alone, costing a signature and a verification of its own).
   */
  #handedThisTurn = false;
  /** A lone message made a round trip due in this turn; {@link #turnEnded} asks for it. */
  #pingAtTurnEnd = false;
  /** Frames and frame bytes handed to the connection so far, and how many of them a server round trip confirmed. */
  readonly #handed = { frames: 0, bytes: 0 };
  readonly #confirmed = { frames: 0, bytes: 0 };
  /** Handed counts when the last round trip was asked for. */
  readonly #pinged = { frames: 0, bytes: 0 };
  /** Round trips under way, oldest first; each confirms what was handed before it was sent. */
  readonly #pings: Ping[] = [];
  readonly #limits: PipelineLimits;
  #closedConn: Promise<never> | undefined;
  #target: Promise<PublishTarget> | undefined;
  /** The settled value of #target, so a lone message can be sent without waiting for it. */
  #targetValue: PublishTarget | undefined;
  readonly #control: RoomControl | undefined;
  /** What the room's stream holds, as last read plus what this sender published since. */
  #usage: { bytes: number; messages: number } | undefined;
  #usageAt = 0;
  /** Frames counted into the estimate since the usage was last read. */
  #sentSince = 0;
  #counter = 0;
  #closed = false;

  constructor(
    nc: NatsConnection,
    signer: SigningKey,
    readonly roomId: string,
    keys: RoomKeySource,
    control: RoomControl | undefined,
    guard: ReplayGuard,
    limits: PipelineLimits,
  ) {
    if (!/^[A-Za-z0-9_-]{1,128}$/.test(roomId)) throw new RangeError("room id must match [A-Za-z0-9_-]{1,128}");
    if (!(limits.maxUnconfirmedBytes > 0 && limits.maxUnconfirmedFrames >= 1)) throw new RangeError("pipeline limits must be positive");
    this.#limits = limits;
    this.#nc = nc;
    this.#guard = guard;
    this.#control = control;
    this.#signer = signer;
    this.#keys = keys;
    this.subject = `${RoomSubject.prefix}${roomId}.${RoomSubject.messages}`;
  }

  get rejectsDropped(): number {
    return this.#rejects.dropped;
  }

  /** Frames handed to the connection that no server round trip has confirmed yet (the pipeline's depth). */
  get unconfirmedFrames(): number {
    return this.#handed.frames - this.#confirmed.frames;
  }

  publish(data: Uint8Array | string | object): Promise<void> {
    if (this.#closed) return Promise.reject(new Error("room is closed"));
    const bytes = toBytes(data);
    if (this.#batch === undefined) {
      const sent = this.#sendAlone(bytes);
      if (sent !== undefined) return sent;
    }
    let batch = this.#batch;
    if (batch !== undefined && batch.bytes + 4 + bytes.byteLength > RoomLimits.maxFrameBytes) {
      this.#flush();
      batch = undefined;
    }
    if (batch === undefined) {
      batch = newBatch();
      this.#batch = batch;
      const done = batch.done;
      this.#pending.add(done);
      const settled = (): void => void this.#pending.delete(done);
      done.then(settled, settled);
      const scheduled = batch;
      // The end of the current event-loop turn: no timer delay on an idle room.
      setImmediate(() => {
        if (this.#batch === scheduled) this.#flush();
      });
    }
    batch.messages.push(bytes);
    batch.bytes += 4 + bytes.byteLength;
    const done = batch.done;
    if (batch.messages.length >= RoomLimits.maxMessagesPerFrame || batch.bytes >= RoomLimits.maxFrameBytes) this.#flush();
    return done;
  }

  /**
   * A message published into an idle room is sealed and handed to the
   * connection at once, with no hop to the end of the turn: nothing is
   * queued or being sealed (so it cannot overtake an earlier message), the
   * pipeline has room, and the key, the room's target and (in a persisted
   * room) a fresh usage estimate are already known. Returns undefined when
   * any of that does not hold: the message then takes the batched path,
   * where messages published behind it in this turn join it.
   */
  #sendAlone(bytes: Uint8Array): Promise<void> | undefined {
    if (this.#handedThisTurn || this.#queued > 0 || this.#windowFull()) return undefined;
    const current = this.#cachedKey();
    const target = this.#targetValue;
    if (current === undefined || target === undefined) return undefined;
    let stored = 0;
    if (target.persisted) {
      const frameBytes = frameOverheadBytes(this.roomId) + 4 + bytes.byteLength;
      stored = frameBytes + this.subject.length + RoomLimits.storedOverheadBytes;
      if (frameBytes > target.maxFrameBytes || (target.quota !== undefined && !this.#fitsNow(target.quota, stored, 1))) return undefined;
    }
    try {
      this.#handOver([this.#seal([bytes], current)], true);
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    if (target.persisted && target.quota !== undefined) this.#count(stored, 1);
    return Promise.resolve();
  }

  #flush(): void {
    const batch = this.#batch;
    this.#batch = undefined;
    if (batch === undefined || batch.messages.length === 0) return;
    this.#queued++;
    // Frames leave in publish order: each waits for the previous one's key lookup.
    this.#sending = this.#sending.then(() => this.#send(batch));
  }

  async flush(): Promise<void> {
    this.#flush();
    await Promise.all([...this.#pending]);
    await this.#nc.flush();
  }

  /**
   * The key to send under. Cached between hints rather than asked for on
   * every frame; a hint (any member may send one) re-reads it at most every
   * `currentKeyHintMinMs`, so notices cannot turn publishing into key lookups.
   */
  async #currentKey(): Promise<RoomEpochKey> {
    this.#watchHints();
    const cached = this.#cachedKey();
    if (cached !== undefined) return cached;
    this.#currentStale = false;
    this.#keys.invalidate?.(this.roomId);
    try {
      const value = await this.#keys.current(this.roomId);
      this.#current = { value, at: performance.now() };
      return value;
    } catch (err) {
      this.#current = undefined;
      throw err;
    }
  }

  /** The cached current key while it is still to be trusted without a re-read, else undefined. */
  #cachedKey(): RoomEpochKey | undefined {
    const c = this.#current;
    if (c === undefined) return undefined;
    const age = performance.now() - c.at;
    return age < RoomLimits.currentKeyRefreshMs && (!this.#currentStale || age < RoomLimits.currentKeyHintMinMs) ? c.value : undefined;
  }

  /** Listens for what means the current key may have changed: a keys notice or a membership event of this room. */
  #watchHints(): void {
    if (this.#hints !== undefined || this.#closed) return;
    const hint = (): void => void (this.#currentStale = true);
    this.#hints = [roomKeysNoticeSubject(this.roomId), roomMembershipSubject(this.roomId)].map((subject) => this.#nc.subscribe(subject, { callback: hint }));
  }

  /** A live frame of a newer epoch than the one sent under: someone rekeyed. */
  #sawEpoch(epoch: number): void {
    if (this.#current !== undefined && epoch > this.#current.value.epoch) this.#currentStale = true;
  }

  async #send(batch: Batch): Promise<void> {
    try {
      const target = await this.#publishTarget();
      // Sealing waits here, not the caller's earlier frames: they travel meanwhile.
      await this.#windowRoom();
      const current = await this.#currentKey();
      const chunks = target.persisted ? this.#split(batch.messages, target.maxFrameBytes) : [batch.messages];
      const frames = chunks.map((messages) => this.#seal(messages, current));
      if (target.persisted && target.quota !== undefined) await this.#checkQuota(target.quota, frames);
      this.#handOver(frames);
    } catch (err) {
      this.#queued--;
      batch.fail(err);
      return;
    }
    // Before the caller resumes: its next message may then go out alone.
    this.#queued--;
    batch.resolve();
  }

  #seal(messages: Uint8Array[], { epoch, key }: RoomEpochKey): Uint8Array {
    // Counters start at the clock in µs so a restarted sender never reuses one (frames.md §Counters).
    const counter = Math.max(this.#counter, Date.now() * 1000);
    this.#counter = counter + messages.length;
    return sealFrame({ roomId: this.roomId, epoch, key, signer: this.#signer, counter, messages });
  }

  /**
   * Core publishes: a JetStream publish would wait for an ack the room
   * stream never sends (no_ack), and members hold no JetStream grant. A
   * round trip is asked for once a quarter of either pipeline bound was
   * handed over since the last one, so a lone message costs no PING. When a
   * lone message is the one that makes it due, the PING waits for the end
   * of the turn (see {@link #turnEnded}).
   */
  #handOver(frames: Uint8Array[], lone = false): void {
    if (!this.#handedThisTurn) {
      this.#handedThisTurn = true;
      setImmediate(this.#turnEnded);
    }
    for (const frame of frames) {
      this.#nc.publish(this.subject, frame);
      this.#handed.frames++;
      this.#handed.bytes += frame.byteLength;
    }
    if (!this.#pingDue()) return;
    if (lone) this.#pingAtTurnEnd = true;
    else this.#ping();
  }

  #pingDue(): boolean {
    const { maxUnconfirmedBytes, maxUnconfirmedFrames } = this.#limits;
    return this.#handed.frames - this.#pinged.frames >= Math.ceil(maxUnconfirmedFrames / 4) || this.#handed.bytes - this.#pinged.bytes >= maxUnconfirmedBytes / 4;
  }

  /**
   * One callback for every turn's end rather than a closure per frame handed
   * over. A PING made due by a lone message is sent here rather than inside
   * `publish()`: there nats.js writes it at once, taking the frame with it,
   * so every sixteenth lone message paid for a PING's write and its PONG on
   * its own way to the subscribers (about 60 µs at p50 in P8). Here the
   * frame has left on its own write. The bound holds all the same: a turn
   * sends at most one lone frame, far below the three quarters of the
   * window left, and a full window waits on a round trip of its own.
   */
  readonly #turnEnded = (): void => {
    this.#handedThisTurn = false;
    if (!this.#pingAtTurnEnd) return;
    this.#pingAtTurnEnd = false;
    // A batch sent later in the turn may have asked already.
    if (this.#pingDue()) this.#ping();
  };

  /** Asks the server for a round trip that, when it returns, confirms every frame handed so far. */
  #ping(): Ping {
    const upTo = { frames: this.#handed.frames, bytes: this.#handed.bytes };
    this.#pinged.frames = upTo.frames;
    this.#pinged.bytes = upTo.bytes;
    const settle = (): void => {
      const i = this.#pings.indexOf(ping);
      if (i >= 0) this.#pings.splice(i, 1);
    };
    const ping: Ping = {
      done: this.#nc.flush().then(
        () => {
          settle();
          this.#confirmed.frames = Math.max(this.#confirmed.frames, upTo.frames);
          this.#confirmed.bytes = Math.max(this.#confirmed.bytes, upTo.bytes);
        },
        (err: unknown) => {
          // Nothing is confirmed: the next batch asks again, and fails if the connection is gone.
          settle();
          throw err;
        },
      ),
    };
    // Whoever waits on it sees the failure; an unobserved one is not an unhandled rejection.
    ping.done.catch(() => undefined);
    this.#pings.push(ping);
    return ping;
  }

  #windowFull(): boolean {
    return this.#handed.frames - this.#confirmed.frames >= this.#limits.maxUnconfirmedFrames || this.#handed.bytes - this.#confirmed.bytes >= this.#limits.maxUnconfirmedBytes;
  }

  /**
   * Waits until the pipeline has room. When the round trip cannot come back
   * (the connection dropped, which fails it, or was closed, which leaves it
   * pending forever), rejects with 503 `connection_lost`: the waiting batch
   * was not sent, so its caller may send it again.
   */
  async #windowRoom(): Promise<void> {
    while (this.#windowFull()) {
      try {
        await Promise.race([(this.#pings[0] ?? this.#ping()).done, this.#connectionClosed()]);
      } catch (cause) {
        throw new UnibusError(ErrorCode.Unavailable, ErrorReason.ConnectionLost, "the connection went away before the server confirmed the room's earlier frames; this message was not sent", { cause });
      }
    }
  }

  /** Rejects once the connection is closed (cached: one listener per room). */
  #connectionClosed(): Promise<never> {
    if (this.#closedConn === undefined) {
      this.#closedConn = this.#nc.closed().then(() => Promise.reject(new Error("connection closed")));
      this.#closedConn.catch(() => undefined);
    }
    return this.#closedConn;
  }

  /** Stored bytes of one frame, as the stream counts them (approximately). */
  #storedBytes(frame: Uint8Array): number {
    return frame.byteLength + this.subject.length + RoomLimits.storedOverheadBytes;
  }

  /**
   * Refuses frames the room's quota cannot take. The estimate is the usage
   * last read from `rooms.get` plus what this sender published since; when it
   * says the frames do not fit, the usage is re-read (unless it was read
   * fresh, with nothing sent since, within `fullRefreshMs`: a sender retrying
   * on a full room does not flood the service), and only the re-read usage
   * refuses. It is also re-read every `usageRefreshMs` while publishing, so
   * frames of other senders and expired ones are counted. Frames that pass
   * are counted into the estimate.
   *
   * @throws UnibusError 413 `room_full` when the re-read usage has no room for them.
   */
  async #checkQuota(quota: Quota, frames: Uint8Array[]): Promise<void> {
    const bytes = frames.reduce((n, f) => n + this.#storedBytes(f), 0);
    const fits = (): boolean => this.#usage !== undefined && this.#usage.bytes + bytes <= quota.maxBytes && this.#usage.messages + frames.length <= quota.maxMsgs;
    const age = Date.now() - this.#usageAt;
    if (this.#usage === undefined || age >= RoomLimits.usageRefreshMs) await this.#refreshUsage();
    else if (!fits() && (this.#sentSince > 0 || age >= RoomLimits.fullRefreshMs)) await this.#refreshUsage();
    if (!fits()) throw new UnibusError(ErrorCode.PayloadTooLarge, RoomPublishReason.roomFull, "the room is full: its stored frames are at the room's quota");
    this.#count(bytes, frames.length);
  }

  /**
   * {@link #checkQuota} without a re-read: true only when the usage estimate
   * is fresh and `frames` frames of `bytes` stored bytes fit; false means
   * "ask the service first" (the batched path), never "refused".
   */
  #fitsNow(quota: Quota, bytes: number, frames: number): boolean {
    const usage = this.#usage;
    if (usage === undefined || Date.now() - this.#usageAt >= RoomLimits.usageRefreshMs) return false;
    return usage.bytes + bytes <= quota.maxBytes && usage.messages + frames <= quota.maxMsgs;
  }

  #count(bytes: number, frames: number): void {
    const usage = this.#usage!;
    this.#usage = { bytes: usage.bytes + bytes, messages: usage.messages + frames };
    this.#sentSince += frames;
  }

  async #refreshUsage(): Promise<void> {
    const reply = await this.#control!.get(this.roomId);
    this.#usage = reply.usage === undefined ? { bytes: 0, messages: 0 } : { bytes: reply.usage.bytes, messages: reply.usage.messages };
    this.#usageAt = Date.now();
    this.#sentSince = 0;
  }

  /**
   * Splits a batch into frames no larger than the room stream's max_msg_size,
   * which may be below the coalescing bound. A message that cannot fit alone
   * fails the whole batch before anything is sent.
   */
  #split(messages: Uint8Array[], maxFrameBytes: number): Uint8Array[][] {
    const room = maxFrameBytes - frameOverheadBytes(this.roomId);
    const chunks: Uint8Array[][] = [];
    let chunk: Uint8Array[] = [];
    let bytes = 0;
    for (const m of messages) {
      const size = 4 + m.byteLength;
      if (size > room) throw new UnibusError(ErrorCode.PayloadTooLarge, RoomPublishReason.messageTooLarge, `message of ${m.byteLength} bytes exceeds the room's largest frame`, { details: { limit: Math.max(0, room - 4) } });
      if (chunk.length > 0 && bytes + size > room) {
        chunks.push(chunk);
        chunk = [];
        bytes = 0;
      }
      chunk.push(m);
      bytes += size;
    }
    if (chunk.length > 0) chunks.push(chunk);
    return chunks;
  }

  /**
   * Whether the room is persisted, its largest frame and its quota, read once
   * from `rooms.get` (which also seeds the usage estimate). Without a control
   * the room is live-only. A failed lookup is not cached, so the next publish
   * asks again.
   */
  #publishTarget(): Promise<PublishTarget> {
    const control = this.#control;
    if (control === undefined) {
      this.#targetValue = { persisted: false };
      return Promise.resolve(this.#targetValue);
    }
    this.#target ??= control.get(this.roomId).then((reply): PublishTarget => {
      if (!reply.room.policy.persist) return { persisted: false };
      if (reply.usage !== undefined) {
        this.#usage = { bytes: reply.usage.bytes, messages: reply.usage.messages };
        this.#usageAt = Date.now();
        this.#sentSince = 0;
      }
      const q = reply.quota;
      // A stream made before quotas has no limits: only the coalescing bound and the history reply bound apply.
      const maxFrameBytes = Math.min(q?.maxMsgSize ?? Infinity, RoomLimits.maxStoredFrameBytes);
      return { persisted: true, maxFrameBytes, quota: q === undefined ? undefined : { maxBytes: q.maxBytes, maxMsgs: q.maxMsgs } };
    });
    const target = this.#target;
    void target.then((t) => {
      if (this.#target === target) this.#targetValue = t;
    }, () => undefined);
    target.catch(() => {
      if (this.#target === target) this.#target = undefined;
    });
    return target;
  }

  #keyFor = (epoch: number): Uint8Array | undefined | Promise<Uint8Array | undefined> => {
    const hit = this.#keyCache.get(epoch);
    if (hit !== undefined) return hit;
    return this.#keys.get(this.roomId, epoch).then((k) => {
      // Only held keys are cached: a share may arrive later for an epoch unknown now.
      if (k !== undefined) this.#keyCache.set(epoch, k);
      return k;
    });
  };

  #membersOf(): ((epoch: number) => ReadonlySet<string> | undefined) | undefined {
    const keys = this.#keys;
    return keys.members === undefined ? undefined : (epoch: number): ReadonlySet<string> | undefined => keys.members!(this.roomId, epoch);
  }

  #receiver(deliver: (m: RoomMessage) => void): FrameReceiver {
    return new FrameReceiver(this.roomId, this.#keyFor, deliver, (r) => this.#rejects.push(r), undefined, this.#membersOf());
  }

  #liveFeed(): LiveFeed {
    if (this.#live !== undefined) return this.#live;
    const listeners = new Set<LiveListener>();
    const endAll = (): void => {
      for (const l of listeners) l.end();
      listeners.clear();
      if (this.#live === feed) this.#live = undefined;
    };
    const rx = new FrameReceiver(
      this.roomId,
      this.#keyFor,
      (m) => {
        this.#sawEpoch(m.epoch);
        for (const l of listeners) l.deliver(m);
      },
      (r) => this.#rejects.push(r),
      this.#guard,
      this.#membersOf(),
    );
    const sub = this.#nc.subscribe(this.subject, {
      callback: (err, msg) => {
        if (err !== null) return endAll();
        void rx.accept(msg.data);
      },
    });
    const feed: LiveFeed = { sub, listeners };
    void sub.closed.then(endAll);
    this.#live = feed;
    return feed;
  }

  subscribe(callback?: RoomMessageCallback): RoomSubscription {
    if (this.#closed) throw new Error("room is closed");
    const queue = new PushQueue<RoomMessage>();
    const deliver =
      callback === undefined
        ? (m: RoomMessage): void => queue.push(m)
        : (m: RoomMessage): void => {
            // A throwing callback must not stop the feed for the room's other subscriptions.
            try {
              callback(m);
            } catch {
              /* the application's error; the subscription goes on */
            }
          };
    const listener: LiveListener = { deliver, end: () => queue.end() };
    const feed = this.#liveFeed();
    feed.listeners.add(listener);
    const stop = (): void => {
      queue.end();
      if (!feed.listeners.delete(listener)) return;
      if (feed.listeners.size === 0 && this.#live === feed) {
        this.#live = undefined;
        feed.sub.unsubscribe();
      }
    };
    return {
      stop,
      [Symbol.asyncIterator]: () => queue[Symbol.asyncIterator](),
    };
  }

  async *history(opts: HistoryOptions = {}): AsyncIterable<RoomMessage> {
    const control = this.#control;
    if (control === undefined) throw new UnibusError(ErrorCode.Unavailable, "history_unavailable", "this room was opened without the membership service; it has no history");
    const since = opts.since;
    const out: RoomMessage[] = [];
    const rx = this.#receiver((m) => out.push(m));
    const reqOpts = opts.timeoutMs === undefined ? {} : { timeoutMs: opts.timeoutMs };
    // Pages from `rooms.history`: the service reads the stream and answers
    // only this client's inbox. The first page's lastSeq bounds the read, so
    // a busy room cannot keep it going forever.
    let req: MembershipRoomsHistoryRequest =
      since === undefined ? { roomId: this.roomId } : typeof since === "number" ? { roomId: this.roomId, startSeq: Math.max(1, Math.floor(since)) } : { roomId: this.roomId, startTime: since.toISOString() };
    let bound: number | undefined;
    for (;;) {
      const page = await control.history({ ...req, limit: RoomLimits.historyPageFrames }, reqOpts);
      bound ??= page.lastSeq;
      for (const f of page.messages) {
        if (f.seq > bound) return;
        if (f.subject !== this.subject) continue;
        const pending = f.omitted === true ? this.#rejects.push({ reason: RejectReason.malformed }) : rx.accept(Buffer.from(f.data, "base64"));
        if (pending !== undefined) await pending;
        while (out.length > 0) yield out.shift()!;
      }
      if (page.nextSeq === undefined || page.nextSeq > bound || page.messages.length === 0) return;
      req = { roomId: this.roomId, startSeq: page.nextSeq };
    }
  }

  rejects(): AsyncIterable<RoomReject> {
    return this.#rejects;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#flush();
    this.#closed = true;
    await this.#sending;
    const feed = this.#live;
    this.#live = undefined;
    if (feed !== undefined) {
      feed.sub.unsubscribe();
      for (const l of feed.listeners) l.end();
      feed.listeners.clear();
    }
    for (const h of this.#hints ?? []) h.unsubscribe();
    this.#rejects.end();
  }
}

/**
 * Internal: a room over a raw connection and signing key (the client's
 * `room()` calls this with its `rooms` API and its replay guard). Without
 * `control` the room is live-only: frames are not split for a stream and
 * there is no history. Without `guard` the room's live replay state lives as
 * long as the room object.
 */
export function createRoom(
  nc: NatsConnection,
  signer: SigningKey,
  roomId: string,
  keys: RoomKeySource,
  control?: RoomControl,
  guard: ReplayGuard = new ReplayGuard(),
  limits: PipelineLimits = RoomLimits,
): Room & { readonly unconfirmedFrames: number } {
  return new RoomImpl(nc, signer, roomId, keys, control, guard, limits);
}

/** What {@link openRoom} needs of a client: `UnibusClient` has it. */
export interface RoomOpener {
  room(roomId: string, keys: RoomKeySource): Room;
}

/**
 * Opens room `roomId` for end-to-end encrypted messaging as `client`'s
 * identity, with room keys from `keys`. Same as `client.room(roomId, keys)`.
 */
export function openRoom(client: RoomOpener, roomId: string, keys: RoomKeySource): Room {
  return client.room(roomId, keys);
}
