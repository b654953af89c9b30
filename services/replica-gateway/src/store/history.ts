import type { KV, KvEntry } from "@nats-io/kv";
import { ErrorCode, ErrorReason, UnibusError } from "@unibus/contracts";
import { fromBase64Url, fromHex, latestPointerBytes, toBase64Url, verifyDetached } from "@unibus/crypto";
import type { ClusterKeys } from "@unibus/crypto";
import type { HandlerContext } from "@unibus/kit";
import { ClusterHistoryError, ClusterHistoryErrorReason, historyEntry, VerifiedClusterHistory } from "@unibus/sdk";
import type { ClusterHistoryEntry, ClusterLatest, GatewayEffect, GenesisEffect, HistoryEntryType, NodeEffect } from "@unibus/sdk";
import { isWrongLastSequence, unavailable } from "../errors.js";

/** Rounds of an append before giving up: each lost round means another replica appended first. */
const APPEND_ROUNDS = 16;

/** The key of history entry `seq`. */
export const entryKey = (seq: number): string => `e.${seq}`;
/** The key of the signed latest pointer. */
export const LATEST_KEY = "latest";

/** What {@link HistoryStore.append} asks `decide` for: the entry's type and effect, or null for "nothing to do". */
export interface HistoryAppend {
  type: HistoryEntryType;
  effect: GenesisEffect | NodeEffect | GatewayEffect;
}

async function get(kv: KV, key: string): Promise<KvEntry | null> {
  try {
    const e = await kv.get(key);
    return e === null || e.operation !== "PUT" ? null : e;
  } catch (err) {
    throw unavailable(err);
  }
}

/**
 * The cluster history in the `replica_history` bucket: entries `e.<seq>`
 * written with create (of two replicas appending at one position exactly one
 * wins, so the chain never forks), and `latest`, the head pointer signed
 * with the seed-derived history key and advanced by compare-and-set on its
 * revision. Every append is decided against the state derived from the
 * verified chain at its head, so concurrent replicas make one transition at
 * a time: the loser re-reads, decides again and gets a 409.
 */
export class HistoryStore {
  readonly #kv: KV;
  #log = new VerifiedClusterHistory();
  /** One append at a time in this process: local appends never race each other. */
  #tail: Promise<unknown> = Promise.resolve();

  constructor(kv: KV) {
    this.#kv = kv;
  }

  /** The stored latest pointer and its revision, or null before genesis. */
  async latest(): Promise<{ latest: ClusterLatest; revision: number } | null> {
    const e = await get(this.#kv, LATEST_KEY);
    if (e === null) return null;
    try {
      return { latest: e.json<ClusterLatest>(), revision: e.revision };
    } catch {
      throw new ClusterHistoryError(ClusterHistoryErrorReason.badLatest, "latest pointer is not JSON", undefined, ErrorCode.Internal);
    }
  }

  /** Stored entries from `from` on (at most `limit`), as stored: a reader verifies them itself. */
  async raw(from: number, limit: number): Promise<ClusterHistoryEntry[]> {
    const out: ClusterHistoryEntry[] = [];
    for (let seq = from; out.length < limit; seq++) {
      const e = await get(this.#kv, entryKey(seq));
      if (e === null) break;
      out.push(e.json<ClusterHistoryEntry>());
    }
    return out;
  }

  /**
   * The verified history brought up to the newest stored entry. An entry
   * past the latest pointer is one whose append crashed (or is in flight)
   * before the pointer moved: it was verified before it was stored, and it
   * is verified again here. A pointer past the chain, or one that names
   * another hash, is a truncated or forked store: refused (fail closed).
   * With `keys`, the pointer's signature is checked too.
   */
  async load(keys?: ClusterKeys): Promise<VerifiedClusterHistory> {
    const latest = await this.latest();
    const log = this.#log;
    for (;;) {
      const seq = log.length;
      const e = await get(this.#kv, entryKey(seq));
      if (e === null) break;
      // A concurrent load (another request on this replica) appended it meanwhile.
      if (log.length !== seq) continue;
      let entry: ClusterHistoryEntry;
      try {
        entry = e.json<ClusterHistoryEntry>();
      } catch {
        throw new ClusterHistoryError(ClusterHistoryErrorReason.badEntry, "entry is not JSON", log.length, ErrorCode.Internal);
      }
      log.append([entry]);
    }
    if (latest !== null) {
      const { seq } = latest.latest;
      const at = log.hashAt(seq);
      if (at === undefined) throw new ClusterHistoryError(ClusterHistoryErrorReason.truncated, `latest pointer names seq ${seq}, the chain ends at ${log.headSeq}`, undefined, ErrorCode.Internal);
      if (toBase64Url(at) !== latest.latest.hash) throw new ClusterHistoryError(ClusterHistoryErrorReason.fork, "latest pointer hash differs from the chain", seq, ErrorCode.Internal);
      const genesis = log.genesis;
      if (genesis !== undefined && keys !== undefined) {
        const pointer = latestPointerBytes(fromHex(genesis.clusterId), seq, at);
        let sig: Uint8Array;
        try {
          sig = fromBase64Url(latest.latest.signature);
        } catch {
          sig = new Uint8Array(0);
        }
        if (!verifyDetached(keys.historyKey.publicKey, pointer, sig)) {
          throw new ClusterHistoryError(ClusterHistoryErrorReason.badLatest, "latest pointer is not signed by this cluster's history key", seq, ErrorCode.Internal);
        }
      }
    }
    return log;
  }

  /** Drops the in-memory chain (tests; a replica that suspects its cache). */
  reset(): void {
    this.#log = new VerifiedClusterHistory();
  }

  /**
   * Moves the latest pointer forward to `seq` (never back), signed with the
   * history key. Compare-and-set on the pointer's revision: two replicas
   * repairing or advancing at once cannot move it backwards.
   */
  async advanceLatest(keys: ClusterKeys, log: VerifiedClusterHistory, seq: number): Promise<void> {
    const genesis = log.genesis;
    const hash = log.hashAt(seq);
    if (genesis === undefined || hash === undefined) throw new UnibusError(ErrorCode.Internal, ErrorReason.Internal, "internal error");
    for (let round = 0; round < APPEND_ROUNDS; round++) {
      const current = await this.latest();
      if (current !== null && current.latest.seq >= seq) return;
      const pointer: ClusterLatest = { seq, hash: toBase64Url(hash), signature: toBase64Url(keys.historyKey.sign(latestPointerBytes(fromHex(genesis.clusterId), seq, hash))) };
      try {
        if (current === null) await this.#kv.create(LATEST_KEY, JSON.stringify(pointer));
        else await this.#kv.update(LATEST_KEY, JSON.stringify(pointer), current.revision);
        return;
      } catch (err) {
        if (isWrongLastSequence(err)) continue;
        throw unavailable(err);
      }
    }
    throw new UnibusError(ErrorCode.Unavailable, ErrorReason.Unavailable, "the history pointer kept changing; retry", { details: { retryAfterMs: 100 } });
  }

  /**
   * Appends the caller's signed request as the next entry, once `decide`
   * (seeing the verified history at its head) says what, or throws to refuse
   * it. The transition is checked with the clients' verifier
   * before it is stored. Resolves once the entry and the pointer are stored.
   */
  append(keys: ClusterKeys, ctx: HandlerContext, decide: (log: VerifiedClusterHistory) => HistoryAppend, opts: { genesis?: boolean } = {}): Promise<{ entry: ClusterHistoryEntry; log: VerifiedClusterHistory }> {
    const run = this.#tail.then(() => this.#append(keys, ctx, decide, opts.genesis === true));
    this.#tail = run.catch(() => undefined);
    return run;
  }

  /** Runs `decide` and the verifier's checks at the current head, storing nothing: a step with side effects goes first only when the history would accept it. */
  async precheck(keys: ClusterKeys, ctx: HandlerContext, decide: (log: VerifiedClusterHistory) => HistoryAppend): Promise<void> {
    const envelope = ctx.envelope;
    if (envelope === undefined) throw new UnibusError(ErrorCode.Internal, ErrorReason.Internal, "history change without a signed request");
    const log = await this.load(keys);
    const change = decide(log);
    log.check(historyEntry({ after: log, type: change.type, body: ctx.body, envelope, effect: change.effect, at: new Date(ctx.now()).toISOString() }));
  }

  async #append(keys: ClusterKeys, ctx: HandlerContext, decide: (log: VerifiedClusterHistory) => HistoryAppend, genesis: boolean): Promise<{ entry: ClusterHistoryEntry; log: VerifiedClusterHistory }> {
    const envelope = ctx.envelope;
    if (envelope === undefined) throw new UnibusError(ErrorCode.Internal, ErrorReason.Internal, "history change without a signed request");
    for (let round = 0; round < APPEND_ROUNDS; round++) {
      // An init's keys are not the cluster's until its genesis is stored: an existing pointer is not checked against them.
      const log = await this.load(genesis ? undefined : keys);
      const change = decide(log);
      const entry = historyEntry({ after: log, type: change.type, body: ctx.body, envelope, effect: change.effect, at: new Date(ctx.now()).toISOString() });
      log.check(entry);
      try {
        await this.#kv.create(entryKey(entry.seq), JSON.stringify(entry));
      } catch (err) {
        // Another replica appended at this position first: re-read and decide again.
        if (isWrongLastSequence(err)) continue;
        throw unavailable(err);
      }
      // A concurrent load may have read it back already.
      if (log.length === entry.seq) log.append([entry]);
      await this.advanceLatest(keys, log, entry.seq);
      return { entry, log };
    }
    throw new UnibusError(ErrorCode.Unavailable, ErrorReason.Unavailable, "the cluster history kept changing; retry", { details: { retryAfterMs: 100 } });
  }
}
