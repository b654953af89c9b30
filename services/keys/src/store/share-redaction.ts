/**
 * Deletes a member's sealed shares from every stored epoch of a room once it
 * is no longer a member (contracts/specs/room-keys.md "Share deletion").
 * Shares are sealed to long-term agreement keys, so a share kept forever is
 * one more thing a key stolen later opens; once its member left, nobody is
 * served it again. Each share is replaced by its SHA-256 (`shareDigest`), so
 * the signed Merkle root and the other members' proofs stay valid.
 *
 * Driven by deletions in the membership `members` bucket (a durable consumer
 * of its stream, not the room's membership subject, which members can
 * publish on); before touching anything it re-checks that the principal is
 * not a member again.
 */
import { AckPolicy, DeliverPolicy, JetStreamApiError } from "@nats-io/jetstream";
import type { ConsumerConfig, JetStreamClient, JsMsg } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import { nanos } from "@nats-io/transport-node";
import { StoredConsumer } from "@unibus/contracts";
import type { Logger } from "pino";
import { fromBase64Url, sha256, toBase64Url } from "@unibus/crypto";
import { retry } from "@unibus/kit";
import { currentMembers } from "../access.js";
import type { MembershipView } from "../access.js";
import { MembershipReadBucket, checkEpochRecord, isRevisionConflict, listKeys } from "./records.js";
import type { EpochRecord } from "./records.js";

/** Attempts per epoch record when a concurrent write (a rekey, another deletion) wins the compare-and-set. */
const UPDATE_ATTEMPTS = 5;

/**
 * A removal is acted on no sooner than this after it was stored (the
 * marker's stream time): the rekey that follows it (the urgent part, P4)
 * goes first, and rewriting every stored epoch of a 1,000-member room
 * (~200 KB each) does not compete with it.
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

/** The durable consumer's tuning: bounded, so a flood of removals queues in the stream, not in memory. */
export const ShareDeletionConsumer = {
  /** Unacknowledged removals across all replicas; beyond this the server holds the rest back. */
  maxAckPending: 64,
  /** Messages one replica holds at a time; each is worked on in turn (the ack-wait clock runs meanwhile). */
  batch: 8,
  /** Redelivery to another replica if one neither acknowledges nor reports progress for this long (it died). */
  ackWaitMs: 60_000,
  /**
   * How long one pull waits on the server; heartbeats come at half of it, and
   * two missed ones make the client pull again. Short, so a pull left on a
   * consumer leader that died is replaced in ~10 s, not the default ~30 s.
   */
  pullExpiresMs: 10_000,
  /** Retry delay after a failure: doubles per delivery from the first, up to the last. */
  retryMinMs: 1_000,
  retryMaxMs: 60_000,
} as const;

/** What {@link consumeMemberRemovals} works on. */
export interface MemberRemovalDeps {
  js: JetStreamClient;
  roomKeys: KV;
  membership: MembershipView;
  logger: Logger;
  /** How old a removal must be before it is acted on (default {@link DELETE_DELAY_MS}; tests shorten it). */
  delayMs?: number;
  /** How long creating the consumer is retried at start (a stream electing a leader); default 30 s. */
  budgetMs?: number;
}

/** nats-server's `JSConsumerAlreadyExists`: a create named an existing consumer with another configuration. */
const CONSUMER_ALREADY_EXISTS = 10148;

/** The consumer's configuration: the same on every replica, so creating it is idempotent. */
export function shareDeletionConsumerConfig(): Partial<ConsumerConfig> & { name: string } {
  const { durable } = StoredConsumer.keys.shareDeletion;
  return {
    name: durable,
    durable_name: durable,
    description: "keys: delete the sealed shares of removed room members",
    // From the stream's first message: on its first creation the consumer
    // also catches removals made before it existed (the bucket keeps each
    // key's latest entries, so every current delete marker is there). No
    // filter: the stream holds only `members` keys, and a filter would put a
    // wildcard into the create subject.
    deliver_policy: DeliverPolicy.All,
    ack_policy: AckPolicy.Explicit,
    ack_wait: nanos(ShareDeletionConsumer.ackWaitMs),
    max_ack_pending: ShareDeletionConsumer.maxAckPending,
    // At least once: a removal is retried until it is done, never dropped.
    max_deliver: -1,
    // The key and the KV-Operation header say everything; the value is not needed.
    headers_only: true,
  };
}

/**
 * Creates the durable consumer, or brings an existing one to this
 * configuration. Replicas starting together race here: an identical create
 * succeeds, and a differing one (after an upgrade) is updated.
 */
export async function ensureShareDeletionConsumer(js: JetStreamClient): Promise<void> {
  const jsm = await js.jetstreamManager();
  const { stream, durable } = StoredConsumer.keys.shareDeletion;
  const config = shareDeletionConsumerConfig();
  try {
    await jsm.consumers.add(stream, config);
  } catch (err) {
    if (!(err instanceof JetStreamApiError) || err.code !== CONSUMER_ALREADY_EXISTS) throw err;
    await jsm.consumers.update(stream, durable, config);
  }
}

/**
 * Acts on every removal in `members` at least once, on one replica: a durable
 * pull consumer shared by all keys replicas delivers each delete or purge
 * marker, and it is acknowledged only after {@link deleteMemberShares}
 * returned (the shares are replaced, or the principal is a member again). A
 * removal seen while no replica ran, pending when one stopped, or whose
 * deletion failed stays unacknowledged and comes back (threat: a removed
 * member's sealed shares kept forever, opened by its agreement key if that is
 * stolen later). `stop()` ends pulling and waits for the removal in hand.
 */
export async function consumeMemberRemovals(deps: MemberRemovalDeps): Promise<{ stop(): Promise<void> }> {
  const { js, roomKeys, membership, logger } = deps;
  const delayMs = deps.delayMs ?? DELETE_DELAY_MS;
  // Within the start-up budget: on a cluster the stream may be electing a leader.
  await retry(() => ensureShareDeletionConsumer(js), {
    budgetMs: deps.budgetMs ?? 30_000,
    delayMs: (n) => Math.min(2_000, 100 * 2 ** n),
    onRetry: (err) => logger.warn({ op: "members.removals", err: (err as Error).message }, "removal consumer not created yet; retrying"),
  });
  const { stream, durable } = StoredConsumer.keys.shareDeletion;
  const consumer = await js.consumers.get(stream, durable);
  const messages = await consumer.consume({ max_messages: ShareDeletionConsumer.batch, expires: ShareDeletionConsumer.pullExpiresMs });
  const handle = async (m: JsMsg): Promise<void> => {
    const op = m.headers?.get(KvOperationHeader) ?? "";
    const key = m.subject.slice(membersPrefix.length);
    const dot = key.indexOf(".");
    // A put (an added member) or a key that names no membership: nothing to delete.
    if ((op !== "DEL" && op !== "PURGE") || !m.subject.startsWith(membersPrefix) || dot < 1) {
      m.ack();
      return;
    }
    // The rekey that follows the removal goes first; the wait is on the
    // server, so the removals behind this one are not held up. Bounded by the
    // delay in case this host's clock is behind the server's.
    const age = Date.now() - m.time.getTime();
    if (age < delayMs) {
      m.nak(Math.min(delayMs, delayMs - age));
      return;
    }
    const roomId = key.slice(0, dot);
    const principal = key.slice(dot + 1);
    m.working();
    try {
      const n = await deleteMemberShares(roomKeys, membership, roomId, principal);
      if (n > 0) logger.info({ op: "shares.delete", roomId, principal, epochs: n }, "deleted the shares of a member who left");
      m.ack();
    } catch (err) {
      const retryMs = Math.min(ShareDeletionConsumer.retryMaxMs, ShareDeletionConsumer.retryMinMs * 2 ** Math.min(20, Math.max(0, m.info.deliveryCount - 1)));
      logger.error({ op: "shares.delete", roomId, principal, retryMs, err: (err as Error).message }, "could not delete the shares of a member who left; retrying");
      m.nak(retryMs);
    }
  };
  let stopping = false;
  // A consumer deleted under the replicas (an operator, a restore) is made
  // again, from the stream's start: removals made meanwhile are not lost,
  // and the ones already done are found done again.
  void (async () => {
    for await (const s of messages.status()) {
      if (stopping || (s.type !== "consumer_deleted" && s.type !== "consumer_not_found")) continue;
      await ensureShareDeletionConsumer(js).then(
        () => logger.warn({ op: "members.removals" }, "the removal consumer was gone; made it again"),
        (err: unknown) => logger.error({ op: "members.removals", err: (err as Error).message }, "could not make the removal consumer again"),
      );
    }
  })().catch((err: unknown) => logger.error({ op: "members.removals", err: (err as Error).message }, "removal consumer status stopped"));
  const loop = (async () => {
    for await (const m of messages) {
      // Handed back at once rather than after the ack wait: another replica takes it.
      if (stopping) m.nak();
      else await handle(m);
    }
  })().catch((err: unknown) => logger.error({ op: "members.removals", err: (err as Error).message }, "removal consumer stopped"));
  return {
    async stop() {
      stopping = true;
      await messages.close();
      await loop;
    },
  };
}

const membersPrefix = `$KV.${MembershipReadBucket.members}.`;

/** The header a KV delete or purge marker carries (a put has none). */
const KvOperationHeader = "KV-Operation";
