/**
 * Where a room's symmetric keys come from. The frame layer only needs "the
 * key to write with now" and "the key of epoch N, if I hold it"; how keys are
 * distributed (sealed shares from the keys service, a test fixture) is the
 * implementation's business.
 */

/** Length in bytes of a room key (XChaCha20-Poly1305 key). */
export const ROOM_KEY_BYTES = 32 as const;

/** A room key and the epoch it belongs to. */
export interface RoomEpochKey {
  /** The key epoch (a non-negative integer; a rekey starts a higher one). */
  epoch: number;
  /** The 32-byte room key of that epoch. */
  key: Uint8Array;
}

/**
 * The room keys a reader/writer holds, per room and epoch.
 *
 * Implementations must fail closed: `current` rejects when the caller holds
 * no key for the room (a member never falls back to plaintext), and `get`
 * returns `undefined` for an epoch the caller holds no share of (e.g. one
 * that started after it was removed, or before it joined).
 */
export interface RoomKeySource {
  /** The newest epoch and its key, used to encrypt outgoing frames. */
  current(roomId: string): Promise<RoomEpochKey>;
  /** The key of `epoch`, or `undefined` when the caller holds no share of it. */
  get(roomId: string, epoch: number): Promise<Uint8Array | undefined>;
  /**
   * The verified members of `epoch`, known once its key was obtained. A
   * source that has this method makes readers drop frames from anyone else
   * (and every frame of an epoch it returns undefined for); one without it
   * (a test fixture) leaves senders unchecked.
   */
  members?(roomId: string, epoch: number): ReadonlySet<string> | undefined;
  /** Optional: forget any cached notion of the current epoch (a room calls it when a hint says the epoch may have moved). */
  invalidate?(roomId: string): void;
}

/** Raised when a key source holds no key at all for a room. */
export class NoRoomKeyError extends Error {
  override readonly name = "NoRoomKeyError";
  constructor(
    readonly roomId: string,
    options?: { cause?: unknown },
  ) {
    super(`no room key held for room ${roomId}`, options);
  }
}

/**
 * An in-memory {@link RoomKeySource} for tests and tools: keys are added by
 * hand, the highest epoch of a room is its current one.
 */
export class StaticRoomKeys implements RoomKeySource {
  readonly #rooms = new Map<string, Map<number, Uint8Array>>();

  /** Adds (or replaces) the key of `epoch` in `roomId`. Returns `this` to chain. */
  set(roomId: string, epoch: number, key: Uint8Array): this {
    if (!Number.isSafeInteger(epoch) || epoch < 0) throw new RangeError(`epoch must be a non-negative integer, got ${epoch}`);
    if (key.length !== ROOM_KEY_BYTES) throw new RangeError(`room key must be ${ROOM_KEY_BYTES} bytes, got ${key.length}`);
    let epochs = this.#rooms.get(roomId);
    if (epochs === undefined) {
      epochs = new Map();
      this.#rooms.set(roomId, epochs);
    }
    epochs.set(epoch, Uint8Array.from(key));
    return this;
  }

  /** Forgets the key of `epoch` in `roomId` (e.g. to model a reader without that share). */
  delete(roomId: string, epoch: number): void {
    this.#rooms.get(roomId)?.delete(epoch);
  }

  current(roomId: string): Promise<RoomEpochKey> {
    const epochs = this.#rooms.get(roomId);
    let best: RoomEpochKey | undefined;
    for (const [epoch, key] of epochs ?? []) {
      if (best === undefined || epoch > best.epoch) best = { epoch, key };
    }
    if (best === undefined) return Promise.reject(new NoRoomKeyError(roomId));
    return Promise.resolve(best);
  }

  get(roomId: string, epoch: number): Promise<Uint8Array | undefined> {
    return Promise.resolve(this.#rooms.get(roomId)?.get(epoch));
  }
}
