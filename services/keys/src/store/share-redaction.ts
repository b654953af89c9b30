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
import type { KV, KvEntry } from "@nats-io/kv";
import { nanos } from "@nats-io/transport-node";
import { StoredConsumer } from "@unibus/contracts";
import type { Logger } from "pino";
import { fromBase64Url, sha256, toBase64Url } from "@unibus/crypto";
import { defineCounter, retry } from "@unibus/kit";
import { currentMembers } from "../access.js";
import type { MembershipView } from "../access.js";
import { MembershipReadBucket, checkEpochRecord, isRevisionConflict, listKeys, unavailable } from "./records.js";
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

/**
 * Why a stored epoch record cannot be processed as it is: permanent, so
 * retrying the removal would only repeat the finding (label values of the
 * findings counter and the `reason` of its log line).
 */
export const DamagedRecordReason = {
  /** The value is not JSON (truncated, overwritten with other bytes). */
  notJson: "not_json",
  /** JSON that fails the stored-data schema of an epoch record (damaged or forged). */
  schema: "schema",
} as const;
/** One of the {@link DamagedRecordReason} values. */
export type DamagedRecordReason = (typeof DamagedRecordReason)[keyof typeof DamagedRecordReason];

/** An epoch record a removal found damaged: left as stored, reported to the operator. */
export interface DamagedEpochRecord {
  /** Its `room_keys` key (`<roomId>.<epoch>`). */
  readonly key: string;
  readonly reason: DamagedRecordReason;
  /** What is wrong, for the log: the schema path and rule, never the stored bytes (a share may be among them). */
  readonly detail: string;
}

/** What one pass of {@link deleteMemberShares} did. */
export interface ShareDeletionResult {
  /** Epoch records rewritten with the principal's share replaced by its digest. */
  readonly changed: number;
  /** Epoch records that could not be read as records; every other one was processed. */
  readonly damaged: readonly DamagedEpochRecord[];
}

/** The stored value as an epoch record, or why it is not one. */
function parseEpochRecord(entry: KvEntry, key: string): { record: EpochRecord } | { damaged: DamagedEpochRecord } {
  let value: unknown;
  try {
    value = entry.json<unknown>();
  } catch {
    // The parser's message quotes the value, which may hold sealed shares: not logged.
    return { damaged: { key, reason: DamagedRecordReason.notJson, detail: "the value is not JSON" } };
  }
  try {
    return { record: checkEpochRecord(value, key) };
  } catch (err) {
    const cause = (err as Error).cause;
    return { damaged: { key, reason: DamagedRecordReason.schema, detail: cause instanceof Error ? cause.message : "fails the epoch record schema" } };
  }
}

/**
 * Replaces `principal`'s sealed share in every epoch of `roomId` by its
 * digest. A record that is not a valid epoch record is skipped and returned
 * as damaged (it is never rewritten: nothing in it can be trusted to
 * rewrite, and no reader serves it), so one damaged epoch does not keep the
 * share in every other epoch. Any other failure (store unavailable, a
 * compare-and-set lost {@link UPDATE_ATTEMPTS} times) throws: the caller
 * retries the whole pass, which is idempotent.
 */
export async function deleteMemberShares(roomKeys: KV, membership: MembershipView, roomId: string, principal: string): Promise<ShareDeletionResult> {
  if ((await currentMembers(membership, roomId)).includes(principal)) return { changed: 0, damaged: [] };
  let changed = 0;
  const damaged: DamagedEpochRecord[] = [];
  for (const key of await listKeys(roomKeys, `${roomId}.*`)) {
    for (let attempt = 0; ; attempt++) {
      // Out of attempts is a retry of the removal, never "done": acknowledging it would keep the share.
      if (attempt === UPDATE_ATTEMPTS) throw unavailable(new Error(`${key}: lost the compare-and-set ${UPDATE_ATTEMPTS} times`));
      const entry = await roomKeys.get(key);
      if (entry === null || entry.operation !== "PUT") break;
      const parsed = parseEpochRecord(entry, key);
      if ("damaged" in parsed) {
        damaged.push(parsed.damaged);
        break;
      }
      const { record } = parsed;
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
  return { changed, damaged };
}

/** Damaged epoch records found by share deletion, by {@link DamagedRecordReason}: each needs an operator. */
export const shareDeletionFindings = defineCounter("unibus_share_deletion_findings_total", "Damaged room_keys epoch records found while deleting a removed member's shares, by reason", ["reason"] as const);
/** Removals handed back after a failure that may pass (store unavailable, timeouts, lost compare-and-sets). */
export const shareDeletionRetries = defineCounter("unibus_share_deletion_retries_total", "Removals whose share deletion failed transiently and will be retried");

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
/** `JSConsumerCreateErrF`: the server failed to create or update it (here: its store could not be written). */
const CONSUMER_CREATE_FAILED = 10012;
/** `JSConsumerNotFoundErr`. */
const CONSUMER_NOT_FOUND = 10014;

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
 * succeeds, and a differing one (after an upgrade) is updated. A consumer the
 * server can no longer write (its state directory gone: seen on a single
 * server when a consumer deleted under running replicas was made again at
 * once, every later create or update then failing with "meta.inf.tmp: no
 * such file or directory") is deleted and made afresh, so the keys service
 * can start again; the new one starts from the stream's first message, and
 * a removal already done is found done again (at least once, never lost).
 */
export async function ensureShareDeletionConsumer(js: JetStreamClient): Promise<"ok" | "remade"> {
  const jsm = await js.jetstreamManager();
  const { stream, durable } = StoredConsumer.keys.shareDeletion;
  const config = shareDeletionConsumerConfig();
  try {
    try {
      await jsm.consumers.add(stream, config);
    } catch (err) {
      if (!(err instanceof JetStreamApiError) || err.code !== CONSUMER_ALREADY_EXISTS) throw err;
      await jsm.consumers.update(stream, durable, config);
    }
    return "ok";
  } catch (err) {
    if (!(err instanceof JetStreamApiError) || err.code !== CONSUMER_CREATE_FAILED) throw err;
    await jsm.consumers.delete(stream, durable).catch((e: unknown) => {
      if (!(e instanceof JetStreamApiError) || e.code !== CONSUMER_NOT_FOUND) throw e;
    });
    await jsm.consumers.add(stream, config);
    return "remade";
  }
}

/**
 * Acts on every removal in `members` at least once, on one replica: a durable
 * pull consumer shared by all keys replicas delivers each delete or purge
 * marker, and it is acknowledged only after {@link deleteMemberShares}
 * returned (the shares are replaced, or the principal is a member again). A
 * removal seen while no replica ran, pending when one stopped, or whose
 * deletion failed transiently stays unacknowledged and comes back (threat: a
 * removed member's sealed shares kept forever, opened by its agreement key if
 * that is stolen later). One that found damaged epoch records (done in every
 * other epoch) is counted, logged and terminated instead of retried for good.
 * `stop()` ends pulling and waits for the removal in hand.
 */
export async function consumeMemberRemovals(deps: MemberRemovalDeps): Promise<{ stop(): Promise<void> }> {
  const { js, roomKeys, membership, logger } = deps;
  const delayMs = deps.delayMs ?? DELETE_DELAY_MS;
  // Within the start-up budget: on a cluster the stream may be electing a leader.
  const made = await retry(() => ensureShareDeletionConsumer(js), {
    budgetMs: deps.budgetMs ?? 30_000,
    delayMs: (n) => Math.min(2_000, 100 * 2 ** n),
    onRetry: (err) => logger.warn({ op: "members.removals", err: (err as Error).message }, "removal consumer not created yet; retrying"),
  });
  if (made === "remade") logger.warn({ op: "members.removals" }, "the removal consumer could not be written by the server; made it afresh from the stream's start");
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
    let result: ShareDeletionResult;
    try {
      result = await deleteMemberShares(roomKeys, membership, roomId, principal);
    } catch (err) {
      // Transient (the store, a timeout, lost compare-and-sets): the same pass may succeed later.
      const retryMs = Math.min(ShareDeletionConsumer.retryMaxMs, ShareDeletionConsumer.retryMinMs * 2 ** Math.min(20, Math.max(0, m.info.deliveryCount - 1)));
      shareDeletionRetries.inc();
      logger.error({ op: "shares.delete", roomId, principal, retryMs, err: (err as Error).message }, "could not delete the shares of a member who left; retrying");
      m.nak(retryMs);
      return;
    }
    if (result.changed > 0) logger.info({ op: "shares.delete", roomId, principal, epochs: result.changed }, "deleted the shares of a member who left");
    if (result.damaged.length === 0) {
      m.ack();
      return;
    }
    // Permanent: every readable epoch is done and another delivery would
    // find the same damaged records, every 60 s for good. Reported once per
    // completed pass, then terminated, not redelivered; the damaged record
    // is refused to every reader, and its repair is the operator's.
    for (const d of result.damaged) {
      shareDeletionFindings.inc({ reason: d.reason });
      logger.error(
        { op: "shares.delete", roomId, epoch: d.key.slice(roomId.length + 1), principal, reason: d.reason, detail: d.detail },
        "damaged epoch record: the removed member's share in it was not deleted; delete the record",
      );
    }
    m.term(`damaged epoch record: ${result.damaged.map((d) => d.key).join(" ")}`.slice(0, 200));
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
