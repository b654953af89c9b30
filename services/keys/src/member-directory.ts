import type { KV } from "@nats-io/kv";
import type { Logger } from "pino";

/** How long a listing waits for the watcher to catch up with the bucket before listing the bucket directly. */
const CATCH_UP_MS = 500;

/**
 * The key names of the membership `members` bucket (`<roomId>.<principal>`)
 * kept in memory by a headers-only KV watcher, so the exact-membership check
 * of `publish_epoch` and the listing of `agreement_keys` cost one stream-info
 * request instead of an ordered consumer over the room's keys (P4).
 *
 * Never stale: every listing first reads the bucket's last sequence number
 * (a request made after the caller's request arrived) and waits until the
 * watcher has applied every write up to it, so any removal committed before
 * the check began is reflected, exactly as with a listing made at that
 * moment. When the watcher is behind for {@link CATCH_UP_MS}, or stopped,
 * the caller lists the bucket instead (returns null). room-keys.md
 * "Service checks".
 */
export class MemberDirectory {
  readonly #kv: KV;
  readonly #rooms = new Map<string, Set<string>>();
  #seen = 0;
  #healthy = false;
  #stop: (() => void) | undefined;

  private constructor(kv: KV) {
    this.#kv = kv;
  }

  /** Starts watching `members` (key names and operations only, no values). */
  static async watch(kv: KV, logger: Logger): Promise<MemberDirectory> {
    const dir = new MemberDirectory(kv);
    const iter = await kv.watch({ headers_only: true });
    dir.#stop = () => iter.stop();
    dir.#healthy = true;
    void (async () => {
      try {
        for await (const e of iter) {
          dir.#apply(e.key, e.operation === "PUT");
          dir.#seen = Math.max(dir.#seen, e.revision);
        }
      } catch (err) {
        logger.error({ op: "members.watch", err: (err as Error).message }, "members watcher failed; listing the bucket directly");
      } finally {
        dir.#healthy = false;
      }
    })();
    return dir;
  }

  /**
   * The room's current members (unsorted), as of a moment after this call
   * began; null when the watcher cannot vouch for that (caller lists the
   * bucket).
   */
  async members(roomId: string): Promise<string[] | null> {
    if (!(await this.#caughtUp())) return null;
    return [...(this.#rooms.get(roomId) ?? [])];
  }

  stop(): void {
    this.#stop?.();
    this.#healthy = false;
  }

  #apply(key: string, present: boolean): void {
    const dot = key.indexOf(".");
    if (dot <= 0) return;
    const roomId = key.slice(0, dot);
    const principal = key.slice(dot + 1);
    let room = this.#rooms.get(roomId);
    if (present) {
      if (room === undefined) this.#rooms.set(roomId, (room = new Set()));
      room.add(principal);
    } else if (room !== undefined) {
      room.delete(principal);
      if (room.size === 0) this.#rooms.delete(roomId);
    }
  }

  async #caughtUp(): Promise<boolean> {
    if (!this.#healthy) return false;
    let last: number;
    try {
      last = (await this.#kv.status()).streamInfo.state.last_seq;
    } catch {
      return false;
    }
    const deadline = Date.now() + CATCH_UP_MS;
    while (this.#healthy && this.#seen < last) {
      if (Date.now() > deadline) return false;
      await new Promise((r) => setTimeout(r, 2));
    }
    return this.#healthy;
  }
}
