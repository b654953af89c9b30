/**
 * Epochs only move forward (contracts/specs/room-keys.md "Epoch rollback"):
 * the highest epoch a client has verified per room, kept for the life of the
 * client and, through an {@link EpochStore}, across restarts. A keys service
 * that offers an older epoch as current could otherwise push a sender back
 * to a key from before a member's removal.
 */
import { chmod, mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import { ErrorCode, UnibusError } from "@unibus/contracts";

/** Stable reason of the error raised when the service offers an epoch below one already verified. */
export const EPOCH_ROLLBACK = "epoch_rollback" as const;

/** Where the highest verified epoch per room outlives the process (e.g. a CLI's home directory). */
export interface EpochStore {
  /** The highest epoch recorded for `roomId`, or undefined. */
  load(roomId: string): Promise<number | undefined>;
  /** Records `epoch` as the highest verified for `roomId` (only ever called with a higher one). */
  save(roomId: string, epoch: number): Promise<void>;
}

/**
 * An {@link EpochStore} in one JSON file (`{"<roomId>": epoch}`), written
 * 0600 through a temporary file and a rename, so a crash leaves the old or
 * the new map, never half of one. One writer per file is assumed.
 */
export class FileEpochStore implements EpochStore {
  #map: Promise<Map<string, number>> | undefined;
  #writing: Promise<void> = Promise.resolve();

  constructor(readonly path: string) {}

  #read(): Promise<Map<string, number>> {
    this.#map ??= readFile(this.path, "utf8").then(
      (text) => {
        const parsed: unknown = JSON.parse(text);
        const map = new Map<string, number>();
        if (typeof parsed !== "object" || parsed === null) throw new UnibusError(ErrorCode.Internal, "epoch_store_corrupt", `epoch store ${this.path} is not a JSON object`);
        for (const [room, epoch] of Object.entries(parsed)) {
          if (Number.isSafeInteger(epoch) && (epoch as number) >= 0) map.set(room, epoch as number);
        }
        return map;
      },
      (err: NodeJS.ErrnoException) => {
        if (err.code === "ENOENT") return new Map<string, number>();
        throw err;
      },
    );
    return this.#map;
  }

  async load(roomId: string): Promise<number | undefined> {
    return (await this.#read()).get(roomId);
  }

  async save(roomId: string, epoch: number): Promise<void> {
    const map = await this.#read();
    if ((map.get(roomId) ?? -1) >= epoch) return;
    map.set(roomId, epoch);
    const text = `${JSON.stringify(Object.fromEntries(map))}\n`;
    this.#writing = this.#writing.then(async () => {
      await mkdir(dirname(this.path), { recursive: true, mode: 0o700 });
      const tmp = `${this.path}.tmp`;
      await writeFile(tmp, text, { mode: 0o600 });
      await chmod(tmp, 0o600);
      await rename(tmp, this.path);
    });
    await this.#writing;
  }
}

/** The in-memory floor of one client, over an optional store. */
export class EpochFloor {
  readonly #highest = new Map<string, number>();
  readonly #loaded = new Map<string, Promise<void>>();

  constructor(readonly store?: EpochStore) {}

  async #load(roomId: string): Promise<void> {
    const store = this.store;
    if (store === undefined) return;
    let p = this.#loaded.get(roomId);
    if (p === undefined) {
      p = store.load(roomId).then((e) => {
        if (e !== undefined && e > (this.#highest.get(roomId) ?? -1)) this.#highest.set(roomId, e);
      });
      this.#loaded.set(roomId, p);
      p.catch(() => this.#loaded.delete(roomId));
    }
    await p;
  }

  /** The highest verified epoch of `roomId`, or undefined. */
  async highest(roomId: string): Promise<number | undefined> {
    await this.#load(roomId);
    return this.#highest.get(roomId);
  }

  /**
   * Throws UnibusError 409 `epoch_rollback` when `offered`, named by the
   * service as the room's current epoch, is below the highest verified one.
   */
  async checkCurrent(roomId: string, offered: number): Promise<void> {
    const highest = await this.highest(roomId);
    if (highest !== undefined && offered < highest) {
      throw new UnibusError(ErrorCode.Conflict, EPOCH_ROLLBACK, `the keys service offered epoch ${offered} of room ${roomId} as current, below epoch ${highest} already verified: refusing to send under an older key`);
    }
  }

  /** Raises the floor to `epoch` (call only after the epoch's statement verified). */
  async record(roomId: string, epoch: number): Promise<void> {
    await this.#load(roomId);
    if (epoch <= (this.#highest.get(roomId) ?? -1)) return;
    this.#highest.set(roomId, epoch);
    await this.store?.save(roomId, epoch);
  }
}
