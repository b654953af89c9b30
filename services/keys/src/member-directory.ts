import type { KV } from "@nats-io/kv";
import type { Logger } from "pino";
import { WatchedKv } from "@unibus/kit";

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
 * moment. When the watcher cannot vouch for that (the kit's WatchedKv
 * policy), the caller lists the bucket instead (returns null). room-keys.md
 * "Service checks".
 */
export class MemberDirectory {
  readonly #rooms = new Map<string, Set<string>>();
  #watched: WatchedKv | undefined;

  private constructor() {}

  /** Starts watching `members` (key names and operations only, no values). */
  static async watch(kv: KV, logger: Logger): Promise<MemberDirectory> {
    const dir = new MemberDirectory();
    dir.#watched = await WatchedKv.watch(kv, { logger, op: "members.watch", headersOnly: true, apply: (e) => dir.#apply(e.key, e.operation === "PUT") });
    return dir;
  }

  /**
   * The room's current members (unsorted), as of a moment after this call
   * began; null when the watcher cannot vouch for that (caller lists the
   * bucket).
   */
  async members(roomId: string): Promise<string[] | null> {
    if (!(await this.#watched?.caughtUp())) return null;
    return [...(this.#rooms.get(roomId) ?? [])];
  }

  stop(): void {
    this.#watched?.stop();
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
