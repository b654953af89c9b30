import type { KV } from "@nats-io/kv";
import type { Logger } from "pino";
import { WatchedKv } from "@unibus/kit";

/**
 * The key names of the membership `members` bucket (`<roomId>.<principal>`)
 * kept in memory by a headers-only KV watcher, so the exact-membership check
 * of `epochs.publish` and the listing of `agreement_keys.list` cost one stream-info
 * request instead of an ordered consumer over the room's keys (P4).
 *
 * Never stale: every listing first reads the bucket's last sequence number
 * (a request made after the caller's request arrived) and waits until the
 * watcher has applied every write up to it, so any removal committed before
 * the check began is reflected, exactly as with a listing made at that
 * moment. When the watcher is behind for a moment, or stopped, the caller
 * lists the bucket instead (returns null); one stalled for longer is
 * replaced (the kit's {@link WatchedKv}). room-keys.md "Service checks".
 */
export class MemberDirectory {
  #rooms = new Map<string, Set<string>>();
  readonly #watch: WatchedKv;

  private constructor(kv: KV, logger: Logger) {
    this.#watch = new WatchedKv(kv, {
      headersOnly: true,
      op: "members.watch",
      fallback: "listing the bucket directly",
      logger,
      reset: () => (this.#rooms = new Map()),
      apply: (e) => this.#apply(e.key, e.operation === "PUT"),
    });
  }

  /** Starts watching `members` (key names and operations only, no values). */
  static async watch(kv: KV, logger: Logger): Promise<MemberDirectory> {
    const dir = new MemberDirectory(kv, logger);
    await dir.#watch.start();
    return dir;
  }

  /**
   * The room's current members (unsorted), as of a moment after this call
   * began; null when the watcher cannot vouch for that (caller lists the
   * bucket).
   */
  async members(roomId: string): Promise<string[] | null> {
    if (!(await this.#watch.caughtUp())) return null;
    return [...(this.#rooms.get(roomId) ?? [])];
  }

  stop(): void {
    this.#watch.stop();
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
}
