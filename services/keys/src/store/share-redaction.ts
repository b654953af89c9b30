/**
 * Deletes a member's sealed shares from every stored epoch of a room once it
 * is no longer a member (contracts/specs/room-keys.md "Share deletion").
 * Shares are sealed to long-term agreement keys, so a share kept forever is
 * one more thing a key stolen later opens; once its member left, nobody is
 * served it again. Each share is replaced by its SHA-256 (`shareDigest`), so
 * the signed Merkle root and the other members' proofs stay valid.
 *
 * Driven by deletions in the membership `members` bucket (a watcher, not the
 * room's membership subject, which members can publish on); before touching
 * anything it re-checks that the principal is not a member again.
 */
import { KvWatchInclude } from "@nats-io/kv";
import type { KV, KvEntry } from "@nats-io/kv";
import type { Logger } from "pino";
import { fromBase64Url, sha256, toBase64Url } from "@unibus/crypto";
import { currentMembers } from "../access.js";
import type { MembershipView } from "../access.js";
import { checkEpochRecord, isRevisionConflict, listKeys } from "./records.js";
import type { EpochRecord } from "./records.js";

/** Attempts per epoch record when a concurrent write (a rekey, another deletion) wins the compare-and-set. */
const UPDATE_ATTEMPTS = 5;

/**
 * A removal is acted on this long after it is seen: the rekey that follows
 * it (the urgent part, P4) goes first, and rewriting every stored epoch of a
 * 1,000-member room (~200 KB each) does not compete with it.
 */
const DELETE_DELAY_MS = 2_000;

/** Replaces `principal`'s sealed share in every epoch of `roomId` by its digest; returns how many records changed. */
export async function deleteMemberShares(roomKeys: KV, membership: MembershipView, roomId: string, principal: string): Promise<number> {
  if ((await currentMembers(membership, roomId)).includes(principal)) return 0;
  let changed = 0;
  for (const key of await listKeys(roomKeys, `${roomId}.*`)) {
    for (let attempt = 0; attempt < UPDATE_ATTEMPTS; attempt++) {
      const entry = await roomKeys.get(key);
      if (entry === null || entry.operation !== "PUT") break;
      // A record that fails its schema is not rewritten: the corrupt_record error goes to the watcher's log.
      const record: EpochRecord = checkEpochRecord(entry.json<unknown>(), key);
      const i = record.shares.findIndex((s) => s.principal === principal && s.sealedShare !== undefined);
      if (i < 0) break;
      const share = record.shares[i]!;
      record.shares[i] = { principal, shareDigest: toBase64Url(sha256(fromBase64Url(share.sealedShare!))) };
      try {
        await roomKeys.update(key, JSON.stringify(record), entry.revision);
        changed++;
        break;
      } catch (err) {
        if (!isRevisionConflict(err)) throw err;
      }
    }
  }
  return changed;
}

/** Watches `members` for removals and deletes the removed member's shares; `stop()` ends it. */
export async function watchMemberRemovals(members: KV, roomKeys: KV, membership: MembershipView, logger: Logger): Promise<{ stop(): void; idle(): Promise<void> }> {
  // Only changes from now on: a removal before this start was handled by the
  // previous run, or is caught by the next one of the same member.
  const iter = await members.watch({ headers_only: true, include: KvWatchInclude.UpdatesOnly });
  let chain: Promise<void> = Promise.resolve();
  const timers = new Set<NodeJS.Timeout>();
  const handle = (e: KvEntry): void => {
    if (e.operation === "PUT") return;
    const dot = e.key.indexOf(".");
    if (dot < 1) return;
    const timer = setTimeout(() => {
      timers.delete(timer);
      enqueue(e.key.slice(0, dot), e.key.slice(dot + 1));
    }, DELETE_DELAY_MS);
    timers.add(timer);
  };
  const enqueue = (roomId: string, principal: string): void => {
    chain = chain
      .then(() => deleteMemberShares(roomKeys, membership, roomId, principal))
      .then(
        (n) => {
          if (n > 0) logger.info({ op: "shares.delete", roomId, principal, epochs: n }, "deleted the shares of a member who left");
        },
        (err: unknown) => logger.error({ op: "shares.delete", roomId, principal, err: (err as Error).message }, "could not delete the shares of a member who left"),
      );
  };
  void (async () => {
    for await (const e of iter) handle(e);
  })().catch((err: unknown) => logger.error({ op: "members.watch", err: (err as Error).message }, "removal watcher stopped"));
  return {
    stop: () => {
      for (const t of timers) clearTimeout(t);
      timers.clear();
      iter.stop();
    },
    idle: () => chain,
  };
}
