/**
 * The cluster's signed, hash-chained history (contracts/specs/replica-lifecycle.md)
 * and its verifier, shared by the gateway (before it appends), the CLI
 * (`unibus cluster history --verify`) and clients. Every node transition is
 * an entry carrying the actor's signed request; the head is named by a
 * latest pointer signed with the seed-derived history key. The threat: a
 * store, server or stale replica that serves a forked, truncated or rolled
 * back history so that a decommissioned node looks UP again, or an extra
 * gateway looks entitled to the seed.
 */
import { ErrorCode, Subjects, UnibusError } from "@unibus/contracts";
import type { ReplicaHistoryReply } from "@unibus/contracts";
import {
  clusterIdFromName,
  fromBase64Url,
  fromHex,
  isPrincipal,
  latestPointerBytes,
  nodeAgreementBytes,
  publicKeyFromPrincipal,
  sha256,
  toBase64Url,
  toHex,
  verifyDetached,
  verifyEnvelopeForBodyHash,
} from "@unibus/crypto";
import { concat, field, u64 } from "./rooms/membership-log.js";

/** One history entry, as stored under `e.<seq>` and served. */
export type ClusterHistoryEntry = ReplicaHistoryReply["entries"][number];
/** The signed latest pointer, stored under `latest`. */
export type ClusterLatest = ReplicaHistoryReply["latest"];

/** Entry types. */
export const HistoryEntryType = {
  genesis: "genesis",
  register: "node.register",
  approve: "node.approve",
  commit: "node.commit",
  decommission: "node.decommission",
  gatewayAdd: "gateway.add",
  gatewayRemove: "gateway.remove",
} as const;
/** One of the {@link HistoryEntryType} values. */
export type HistoryEntryType = (typeof HistoryEntryType)[keyof typeof HistoryEntryType];

/** The subject each entry type's request must have been signed for. */
export const HistoryEntrySubject = {
  genesis: Subjects.replicaGateway.init,
  "node.register": Subjects.replicaGateway.handshakeRegister,
  "node.approve": Subjects.replicaGateway.approve,
  "node.commit": Subjects.replicaGateway.handshakeCommit,
  "node.decommission": Subjects.replicaGateway.decommission,
  "gateway.add": Subjects.replicaGateway.gatewayAdd,
  "gateway.remove": Subjects.replicaGateway.gatewayRemove,
} as const satisfies Record<HistoryEntryType, string>;

/** Node states (a node only ever moves forward through them). */
export const NodeState = { new: "NEW", standby: "STANDBY", up: "UP", decommissioned: "DECOMMISSIONED" } as const;
/** One of the {@link NodeState} values. */
export type NodeState = (typeof NodeState)[keyof typeof NodeState];

/** Hash context of an entry; never reused. */
export const HISTORY_ENTRY_CONTEXT = "unibus-replica-history-v1";

/** Stable reasons of a {@link ClusterHistoryError}. */
export const ClusterHistoryErrorReason = {
  badEntry: "history_bad_entry",
  badSignature: "history_bad_signature",
  fork: "history_fork",
  gap: "history_gap",
  truncated: "history_truncated",
  rollback: "history_rollback",
  badLatest: "history_bad_latest",
  missing: "history_missing",
  /** A transition the state at that point does not allow (409 for the gateway's callers). */
  stateConflict: "state_conflict",
  joinKeyExists: "join_key_exists",
  nodeExists: "node_exists",
  notApproved: "not_approved",
  decommissioned: "decommissioned",
  unknownNode: "unknown_node",
  unknownGateway: "unknown_gateway",
} as const;
/** One of the {@link ClusterHistoryErrorReason} values. */
export type ClusterHistoryErrorReason = (typeof ClusterHistoryErrorReason)[keyof typeof ClusterHistoryErrorReason];

/** A history that failed verification, or a transition it does not allow. Never fall back to the server's word when thrown. */
export class ClusterHistoryError extends UnibusError {
  constructor(
    reason: ClusterHistoryErrorReason,
    message: string,
    readonly seq?: number,
    code: ErrorCode = ErrorCode.Conflict,
  ) {
    super(code, reason, `cluster history${seq === undefined ? "" : ` entry ${seq}`}: ${message}`);
    this.name = "ClusterHistoryError";
  }
}

/** The genesis effect: what the cluster is and who may hold its seed. */
export interface GenesisEffect {
  clusterName: string;
  clusterId: string;
  historyKey: string;
  agreementKey: string;
  gateways: string[];
}
/** A node transition's effect; register also names the node's keys. */
export interface NodeEffect {
  nodeId: string;
  joinKey?: string;
  agreementKey?: string;
  agreementSig?: string;
}

/** A gateway change's effect. */
export interface GatewayEffect {
  principal: string;
}

/** One node in the state derived from the chain. */
export interface NodeRecord {
  nodeId: string;
  state: NodeState;
  joinKey: string;
  agreementKey: string;
  /** Seq of its last transition. */
  seq: number;
}

/** The canonical effect text of an entry: keys in a fixed order, so the gateway and every verifier hash the same bytes. */
export function effectText(type: HistoryEntryType, effect: GenesisEffect | NodeEffect | GatewayEffect): string {
  if (type === HistoryEntryType.gatewayAdd || type === HistoryEntryType.gatewayRemove) return JSON.stringify({ principal: (effect as GatewayEffect).principal });
  if (type === HistoryEntryType.genesis) {
    const g = effect as GenesisEffect;
    return JSON.stringify({ clusterName: g.clusterName, clusterId: g.clusterId, historyKey: g.historyKey, agreementKey: g.agreementKey, gateways: [...g.gateways] });
  }
  const n = effect as NodeEffect;
  return JSON.stringify({
    nodeId: n.nodeId,
    ...(n.joinKey === undefined ? {} : { joinKey: n.joinKey }),
    ...(n.agreementKey === undefined ? {} : { agreementKey: n.agreementKey }),
    ...(n.agreementSig === undefined ? {} : { agreementSig: n.agreementSig }),
  });
}

/**
 * `sha256(field(context) ‖ u64(seq) ‖ prev(32) ‖ field(type) ‖ field(subject) ‖
 * bodyHash(32) ‖ field(signer) ‖ u64(timestamp) ‖ field(nonce) ‖
 * field(signature) ‖ field(effect))`; `at` is not hashed (server time, nobody signs it).
 */
export function historyEntryHash(e: ClusterHistoryEntry): Uint8Array {
  const prev = fromBase64Url(e.prev);
  const bodyHash = fromBase64Url(e.bodyHash);
  if (prev.byteLength !== 32 || bodyHash.byteLength !== 32) throw new RangeError("prev and bodyHash must be 32 bytes");
  return sha256(
    concat([
      field(HISTORY_ENTRY_CONTEXT),
      u64(e.seq),
      prev,
      field(e.type),
      field(e.subject),
      bodyHash,
      field(e.signer),
      u64(e.timestamp),
      field(e.nonce),
      field(e.signature),
      field(e.effect),
    ]),
  );
}

/** What {@link historyEntry} builds an entry from. */
export interface HistoryEntryInput {
  after: { length: number; headHash: Uint8Array };
  type: HistoryEntryType;
  /** The request body exactly as signed (only its hash is kept). */
  body: Uint8Array;
  envelope: { signer: string; timestamp: number; nonce: string; signature: string };
  effect: GenesisEffect | NodeEffect | GatewayEffect;
  at: string;
}

/** The next entry: the actor's signed request (by hash) and the effect, chained to the head. */
export function historyEntry(i: HistoryEntryInput): ClusterHistoryEntry {
  return {
    seq: i.after.length,
    prev: toBase64Url(i.after.headHash),
    type: i.type,
    subject: HistoryEntrySubject[i.type],
    bodyHash: toBase64Url(sha256(i.body)),
    signer: i.envelope.signer,
    timestamp: i.envelope.timestamp,
    nonce: i.envelope.nonce,
    signature: i.envelope.signature,
    effect: effectText(i.type, i.effect),
    at: i.at,
  };
}

/** A pinned head a client remembers, so a later, shorter or different history is refused. */
export interface HistoryPin {
  seq: number;
  /** Entry hash, base64url. */
  hash: string;
}

const ZERO = new Uint8Array(32);
const NODE_ID = /^[a-z0-9][a-z0-9-]{0,62}$/;
const HEX64 = /^[0-9a-f]{64}$/;

function bad(message: string, seq: number): ClusterHistoryError {
  return new ClusterHistoryError(ClusterHistoryErrorReason.badEntry, message, seq);
}

function parseEffect(e: ClusterHistoryEntry): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(e.effect);
  } catch {
    throw bad("effect is not JSON", e.seq);
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw bad("effect is not an object", e.seq);
  return v as Record<string, unknown>;
}

/**
 * A verified history, extended entry by entry. `append` checks each entry's
 * chaining, the actor's envelope signature (over the kept body hash) and
 * that the state at that point allows the transition; `checkLatest` checks a
 * latest pointer against the chain. The gateway runs the same checks before
 * it stores an entry, so a well-behaved gateway never stores one a client
 * would reject.
 */
export class VerifiedClusterHistory {
  #entries: ClusterHistoryEntry[] = [];
  #hashes: Uint8Array[] = [];
  #genesis: GenesisEffect | undefined;
  readonly #nodes = new Map<string, NodeRecord>();
  readonly #joinKeys = new Map<string, string>();
  #gateways: string[] = [];
  readonly #nonces = new Set<string>();

  /** Entries verified so far. */
  get length(): number {
    return this.#entries.length;
  }
  /** Seq of the head (-1: empty). */
  get headSeq(): number {
    return this.#entries.length - 1;
  }
  /** Hash of the head (zeros when empty). */
  get headHash(): Uint8Array {
    return this.#hashes.at(-1) ?? ZERO;
  }
  get genesis(): GenesisEffect | undefined {
    return this.#genesis;
  }
  get entries(): readonly ClusterHistoryEntry[] {
    return this.#entries;
  }
  get nodes(): ReadonlyMap<string, NodeRecord> {
    return this.#nodes;
  }
  /** The gateway principals the manifest lists now (genesis, then gateway.add/remove): the only ones a peer hands the seed to. */
  get gateways(): readonly string[] {
    return this.#gateways;
  }
  /** Join key → node id, decommissioned included: a join key is never reused. */
  get joinKeys(): ReadonlyMap<string, string> {
    return this.#joinKeys;
  }
  /** The hash of entry `seq`. */
  hashAt(seq: number): Uint8Array | undefined {
    return this.#hashes[seq];
  }

  /** Checks that `e` may be the next entry, without appending it. */
  check(e: ClusterHistoryEntry): void {
    this.#apply(e, false);
  }

  /** Verifies and appends entries in order. */
  append(entries: readonly ClusterHistoryEntry[]): void {
    for (const e of entries) this.#apply(e, true);
  }

  /**
   * Checks a latest pointer: signed by the genesis history key, naming an
   * entry of this chain, and the chain's head (nothing verified past it, nothing missing).
   */
  checkLatest(latest: ClusterLatest): void {
    const g = this.#genesis;
    if (g === undefined) throw new ClusterHistoryError(ClusterHistoryErrorReason.missing, "no genesis entry");
    let hash: Uint8Array;
    let sig: Uint8Array;
    try {
      hash = fromBase64Url(latest.hash);
      sig = fromBase64Url(latest.signature);
    } catch {
      throw new ClusterHistoryError(ClusterHistoryErrorReason.badLatest, "latest pointer is malformed");
    }
    if (!verifyDetached(fromHex(g.historyKey), latestPointerBytes(fromHex(g.clusterId), latest.seq, hash), sig)) {
      throw new ClusterHistoryError(ClusterHistoryErrorReason.badLatest, "latest pointer signature does not verify with the genesis history key");
    }
    if (latest.seq !== this.headSeq) throw new ClusterHistoryError(ClusterHistoryErrorReason.truncated, `latest pointer names seq ${latest.seq}, the chain ends at ${this.headSeq}`);
    if (toBase64Url(this.headHash) !== latest.hash) throw new ClusterHistoryError(ClusterHistoryErrorReason.fork, "latest pointer hash differs from the chain's head", latest.seq);
  }

  /** Refuses a chain shorter than, or different at, a head verified earlier. */
  checkPin(pin: HistoryPin): void {
    if (pin.seq > this.headSeq) throw new ClusterHistoryError(ClusterHistoryErrorReason.rollback, `history ends at ${this.headSeq}, below the pinned head ${pin.seq}`);
    const h = this.#hashes[pin.seq];
    if (h === undefined || toBase64Url(h) !== pin.hash) throw new ClusterHistoryError(ClusterHistoryErrorReason.fork, "entry differs from the pinned head", pin.seq);
  }

  #apply(e: ClusterHistoryEntry, commit: boolean): void {
    const seq = this.#entries.length;
    if (e.seq !== seq) throw new ClusterHistoryError(ClusterHistoryErrorReason.gap, `expected seq ${seq}, got ${e.seq}`, e.seq);
    if (e.prev !== toBase64Url(this.headHash)) throw new ClusterHistoryError(ClusterHistoryErrorReason.fork, "prev does not match the entry before", seq);
    const type = e.type;
    if (!Object.values(HistoryEntryType).includes(type)) throw bad(`unknown type ${String(e.type)}`, seq);
    if (e.subject !== HistoryEntrySubject[type]) throw bad("subject does not match the type", seq);
    let hash: Uint8Array;
    try {
      hash = historyEntryHash(e);
    } catch {
      throw bad("malformed hash fields", seq);
    }
    if (!verifyEnvelopeForBodyHash({ signer: e.signer, timestamp: e.timestamp, nonce: e.nonce, signature: e.signature }, e.subject, fromBase64Url(e.bodyHash))) {
      throw new ClusterHistoryError(ClusterHistoryErrorReason.badSignature, "actor signature does not verify", seq);
    }
    const nonceKey = `${e.signer}.${e.nonce}`;
    if (this.#nonces.has(nonceKey)) throw new ClusterHistoryError(ClusterHistoryErrorReason.badEntry, "a signed request appears twice", seq);
    const fx = parseEffect(e);
    if (e.effect !== effectText(type, fx as unknown as GenesisEffect & NodeEffect & GatewayEffect)) throw bad("effect is not canonical", seq);
    const change =
      type === HistoryEntryType.genesis
        ? this.#genesisChange(fx, seq)
        : type === HistoryEntryType.gatewayAdd || type === HistoryEntryType.gatewayRemove
          ? this.#gatewayChange(type, fx, seq)
          : this.#nodeChange(type, fx, e.signer, seq);
    if (!commit) return;
    this.#entries.push(e);
    this.#hashes.push(hash);
    this.#nonces.add(nonceKey);
    change();
  }

  #genesisChange(fx: Record<string, unknown>, seq: number): () => void {
    if (seq !== 0) throw bad("genesis after seq 0", seq);
    const { clusterName, clusterId, historyKey, agreementKey, gateways } = fx;
    if (typeof clusterName !== "string" || clusterName === "") throw bad("genesis without a cluster name", seq);
    if (clusterId !== toHex(clusterIdFromName(clusterName))) throw bad("genesis cluster id is not the name's", seq);
    if (typeof historyKey !== "string" || !HEX64.test(historyKey) || typeof agreementKey !== "string" || !HEX64.test(agreementKey)) throw bad("genesis keys malformed", seq);
    if (!Array.isArray(gateways) || gateways.length === 0 || !gateways.every((g) => typeof g === "string" && isPrincipal(g))) throw bad("genesis gateways malformed", seq);
    const g: GenesisEffect = { clusterName, clusterId, historyKey, agreementKey, gateways: gateways as string[] };
    return () => {
      this.#genesis = g;
      this.#gateways = [...g.gateways];
    };
  }

  #gatewayChange(type: HistoryEntryType, fx: Record<string, unknown>, seq: number): () => void {
    if (this.#genesis === undefined) throw new ClusterHistoryError(ClusterHistoryErrorReason.missing, "gateway entry before genesis", seq);
    const principal = fx["principal"];
    if (typeof principal !== "string" || !isPrincipal(principal)) throw bad("gateway principal malformed", seq);
    const listed = this.#gateways.includes(principal);
    if (type === HistoryEntryType.gatewayAdd) {
      if (listed) throw new ClusterHistoryError(ClusterHistoryErrorReason.stateConflict, "gateway already listed", seq);
      return () => {
        this.#gateways = [...this.#gateways, principal];
      };
    }
    if (!listed) throw new ClusterHistoryError(ClusterHistoryErrorReason.unknownGateway, "gateway not listed", seq, ErrorCode.NotFound);
    // The last listed gateway stays: with none, no replica could ever get the seed from a peer again.
    if (this.#gateways.length === 1) throw new ClusterHistoryError(ClusterHistoryErrorReason.stateConflict, "the last listed gateway cannot be removed", seq);
    return () => {
      this.#gateways = this.#gateways.filter((g) => g !== principal);
    };
  }

  #nodeChange(type: HistoryEntryType, fx: Record<string, unknown>, signer: string, seq: number): () => void {
    const g = this.#genesis;
    if (g === undefined) throw new ClusterHistoryError(ClusterHistoryErrorReason.missing, "node entry before genesis", seq);
    const nodeId = fx["nodeId"];
    if (typeof nodeId !== "string" || !NODE_ID.test(nodeId)) throw bad("node id malformed", seq);
    const node = this.#nodes.get(nodeId);
    const conflict = (reason: ClusterHistoryErrorReason, message: string, code: ErrorCode = ErrorCode.Conflict): ClusterHistoryError => new ClusterHistoryError(reason, message, seq, code);
    const to = (state: NodeState): (() => void) => () => {
      this.#nodes.set(nodeId, { ...(node as NodeRecord), state, seq });
    };
    switch (type) {
      case HistoryEntryType.register: {
        const { joinKey, agreementKey, agreementSig } = fx;
        if (typeof joinKey !== "string" || !isPrincipal(joinKey) || typeof agreementKey !== "string" || !HEX64.test(agreementKey) || typeof agreementSig !== "string") throw bad("register keys malformed", seq);
        // The join key itself signs its registration: nobody registers a key it does not hold.
        if (signer !== joinKey) throw conflict(ClusterHistoryErrorReason.badSignature, "register not signed by the join key", ErrorCode.Forbidden);
        if (!verifyDetached(publicKeyFromPrincipal(joinKey), nodeAgreementBytes(fromHex(g.clusterId), nodeId, fromHex(agreementKey)), fromHex(agreementSig))) {
          throw conflict(ClusterHistoryErrorReason.badSignature, "agreement key not signed by the join key", ErrorCode.Forbidden);
        }
        if (this.#joinKeys.has(joinKey)) throw conflict(ClusterHistoryErrorReason.joinKeyExists, "join key already registered");
        if (node !== undefined) throw conflict(ClusterHistoryErrorReason.nodeExists, `node ${nodeId} already exists`);
        return () => {
          this.#nodes.set(nodeId, { nodeId, state: NodeState.new, joinKey, agreementKey, seq });
          this.#joinKeys.set(joinKey, nodeId);
        };
      }
      case HistoryEntryType.approve:
        if (node === undefined) throw conflict(ClusterHistoryErrorReason.unknownNode, `no node ${nodeId}`, ErrorCode.NotFound);
        if (node.state !== NodeState.new) throw conflict(ClusterHistoryErrorReason.stateConflict, `node ${nodeId} is ${node.state}, not NEW`);
        return to(NodeState.standby);
      case HistoryEntryType.commit:
        if (node === undefined) throw conflict(ClusterHistoryErrorReason.unknownNode, `no node ${nodeId}`, ErrorCode.NotFound);
        if (signer !== node.joinKey) throw conflict(ClusterHistoryErrorReason.badSignature, "commit not signed by the node's join key", ErrorCode.Forbidden);
        if (node.state === NodeState.decommissioned) throw conflict(ClusterHistoryErrorReason.decommissioned, `node ${nodeId} is decommissioned`, ErrorCode.Forbidden);
        if (node.state === NodeState.new) throw conflict(ClusterHistoryErrorReason.notApproved, `node ${nodeId} is not approved`, ErrorCode.Forbidden);
        if (node.state !== NodeState.standby) throw conflict(ClusterHistoryErrorReason.stateConflict, `node ${nodeId} is ${node.state}, not STANDBY`);
        return to(NodeState.up);
      case HistoryEntryType.decommission:
        if (node === undefined) throw conflict(ClusterHistoryErrorReason.unknownNode, `no node ${nodeId}`, ErrorCode.NotFound);
        if (node.state === NodeState.decommissioned) throw conflict(ClusterHistoryErrorReason.stateConflict, `node ${nodeId} is already decommissioned`);
        return to(NodeState.decommissioned);
      default:
        throw bad(`unexpected type ${type}`, seq);
    }
  }
}

/**
 * Verifies a whole served history: every entry, the latest pointer, and
 * (when given) that it extends a head pinned earlier. When `historyKey` is
 * given (hex, from an earlier verification or the operator), the genesis must name it.
 */
export function verifyClusterHistory(entries: readonly ClusterHistoryEntry[], latest: ClusterLatest, opts: { pin?: HistoryPin; historyKey?: string } = {}): VerifiedClusterHistory {
  const h = new VerifiedClusterHistory();
  h.append(entries);
  if (h.genesis === undefined) throw new ClusterHistoryError(ClusterHistoryErrorReason.missing, "no genesis entry");
  if (opts.historyKey !== undefined && h.genesis.historyKey !== opts.historyKey) throw new ClusterHistoryError(ClusterHistoryErrorReason.fork, "genesis names another history key", 0);
  h.checkLatest(latest);
  if (opts.pin !== undefined) h.checkPin(opts.pin);
  return h;
}
