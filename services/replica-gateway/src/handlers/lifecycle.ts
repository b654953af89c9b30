import type { KV } from "@nats-io/kv";
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import { ErrorCode, StoredBucket, UnibusError } from "@unibus/contracts";
import type {
  ReplicaApproveReply,
  ReplicaCommitReply,
  ReplicaDecommissionReply,
  ReplicaGatewayAddReply,
  ReplicaGatewayRemoveReply,
  ReplicaHistoryReply,
  ReplicaInfo,
  ReplicaInitReply,
  ReplicaJoinReply,
  ReplicaNodesReply,
  ReplicaRecoverReply,
  ReplicaRegisterReply,
  ReplicaTicketReply,
} from "@unibus/contracts";
import {
  clusterIdFromName,
  constantTimeEqual,
  deriveClusterKeys,
  fromBase64Url,
  fromHex,
  gatewayAgreementBytes,
  openSealed,
  randomBytes,
  sealTo,
  sha256,
  toBase64Url,
  toHex,
  unwrapCuk,
  wrapCuk,
} from "@unibus/crypto";
import type { AgreementKeyPair, ClusterKeys, SigningKey } from "@unibus/crypto";
import { handles } from "@unibus/kit";
import type { BucketSpec, Caller, HandlerContext } from "@unibus/kit";
import { ClusterHistoryError, ClusterHistoryErrorReason, HistoryEntryType, NodeState } from "@unibus/sdk";
import type { NodeRecord, VerifiedClusterHistory } from "@unibus/sdk";
import type { Logger } from "pino";
import { isWrongLastSequence, LifecycleReason, lifecycleError, unavailable } from "../errors.js";
import { HistoryStore } from "../store/history.js";
import { answerSeedRequests, requestSeedFromPeers } from "../seed-peers.js";

/** The lifecycle's buckets, shared by every gateway replica. */
export const LifecycleBucket = {
  /** `e.<seq>` entries (create-only) and the signed `latest` pointer. */
  history: { name: StoredBucket.replica.history, history: 1 },
  /** Views materialised from the history: `n.<nodeId>` records and `j.<joinKey>` index. */
  nodes: { name: StoredBucket.replica.nodes, history: 1 },
  /** `t.<sha256(ticket)>`: one-time registration tickets, expired by the TTL. */
  tickets: { name: StoredBucket.replica.tickets, ttl: 24 * 3600_000, history: 1 },
  /** `w.<nodeId>`: wrapped CUKs, purged on decommission. */
  cuks: { name: StoredBucket.replica.cuks, history: 1 },
} as const satisfies Record<string, BucketSpec>;

/** How long a ticket is valid. */
export const TICKET_TTL_MS = LifecycleBucket.tickets.ttl;
/** Largest lifecycle request. */
export const LIFECYCLE_MAX_PAYLOAD_BYTES = 8192;
/** Entries per history page. */
export const HISTORY_PAGE = 256;

/** What the lifecycle endpoints need. */
export interface LifecycleDeps {
  readonly nc: NatsConnection;
  /** The gateway's service identity: named in the genesis, signs seed requests and answers. */
  readonly identity: SigningKey;
  /** Per-process X25519 key the admin CLI seals the seed to (init, recover). */
  readonly agreement: AgreementKeyPair;
  /** The configured cluster name, when there is one: init must name the same. */
  readonly clusterName?: string | undefined;
  readonly history: KV;
  readonly nodes: KV;
  readonly tickets: KV;
  readonly cuks: KV;
  readonly sessions: KV;
  readonly logger: Logger;
  readonly now: () => number;
  /** How long a seed request waits for a peer. */
  readonly seedWaitMs?: number;
  /** How often a locked replica of an initialised cluster asks its peers again. */
  readonly peerRetryMs?: number;
}

interface TicketRecord {
  nodeId: string;
  expiresAt: number;
  used?: true;
}

interface SessionRecord {
  principal: string;
  replicaId: string;
  clusterId: string;
  expiresAt: string;
}

/**
 * The seed holder of one gateway replica. The seed lives only in memory:
 * a fresh replica is locked (every lifecycle step answers 503
 * `cluster_locked`, fail closed) until it gets the seed from an authenticated
 * peer or from the operator's recovery secret.
 */
export class ClusterCore {
  readonly store: HistoryStore;
  readonly deps: LifecycleDeps;
  #keys: ClusterKeys | undefined;
  #seed: Uint8Array | undefined;
  #peerAsk: Promise<boolean> | undefined;
  #lastAsk = 0;
  #sub: Subscription | undefined;
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;

  constructor(deps: LifecycleDeps) {
    this.deps = deps;
    this.store = new HistoryStore(deps.history);
  }

  get keys(): ClusterKeys | undefined {
    return this.#keys;
  }
  /** The seed, for answering an authenticated peer only. */
  get seed(): Uint8Array | undefined {
    return this.#seed;
  }

  /** Accepts a seed whose derived history key is the genesis key and under which the latest pointer verifies. */
  async unlock(seed: Uint8Array, how: string): Promise<VerifiedClusterHistory> {
    const keys = deriveClusterKeys(seed);
    const log = await this.store.load();
    const genesis = log.genesis;
    if (genesis === undefined) throw lifecycleError(ErrorCode.Conflict, LifecycleReason.noCluster, "no cluster history: run cluster init");
    if (!constantTimeEqual(fromHex(genesis.historyKey), keys.historyKey.publicKey)) throw lifecycleError(ErrorCode.Forbidden, LifecycleReason.seedMismatch, "the seed is not this cluster's");
    await this.store.load(keys);
    // An append that crashed before its pointer moved is finished here.
    if (log.headSeq >= 0) await this.store.advanceLatest(keys, log, log.headSeq);
    this.#keys = keys;
    this.#seed = seed;
    this.deps.logger.info({ op: "unlock", how, seq: log.headSeq }, "cluster seed held");
    await repairViews(this, log);
    return log;
  }

  /** Takes a seed after init wrote the genesis. */
  adopt(seed: Uint8Array, keys: ClusterKeys): void {
    this.#seed = seed;
    this.#keys = keys;
  }

  /** The keys, or 503 `cluster_locked` (and a throttled ask to the peers in the background). */
  requireKeys(): ClusterKeys {
    if (this.#keys !== undefined) return this.#keys;
    if (this.deps.now() - this.#lastAsk > 2_000) void this.askPeers().catch(() => undefined);
    throw lifecycleError(ErrorCode.Unavailable, LifecycleReason.clusterLocked, "this gateway does not hold the cluster seed yet; retry, or run cluster recover", { retryAfterMs: 1000 });
  }

  /** Asks live peers for the seed once (coalesced). True when the seed is now held. */
  askPeers(): Promise<boolean> {
    if (this.#keys !== undefined) return Promise.resolve(true);
    this.#lastAsk = this.deps.now();
    this.#peerAsk ??= (async () => {
      try {
        const log = await this.store.load();
        if (log.genesis === undefined) return false;
        const seed = await requestSeedFromPeers(this.deps, log);
        if (seed === null) return false;
        await this.unlock(seed, "peer");
        return true;
      } catch (err) {
        this.deps.logger.warn({ op: "seed.request", err: err instanceof Error ? err.message : String(err) }, "seed not recovered from peers");
        return false;
      } finally {
        this.#peerAsk = undefined;
      }
    })();
    return this.#peerAsk;
  }

  /** Starts answering peers' seed requests, and asking them while locked. */
  listen(): void {
    this.#sub = answerSeedRequests(this);
    const tick = (): void => {
      if (this.#stopped) return;
      this.#timer = setTimeout(() => {
        if (this.#keys !== undefined) return;
        void this.askPeers().finally(tick);
      }, this.deps.peerRetryMs ?? 5_000);
      this.#timer.unref();
    };
    tick();
  }

  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#sub?.unsubscribe();
  }
}

/** Writes the `nodes` views from the verified history and purges the CUKs of decommissioned nodes: start-up repair and after each change. */
export async function repairViews(core: ClusterCore, log: VerifiedClusterHistory, only?: string): Promise<void> {
  const { nodes, cuks } = core.deps;
  for (const node of log.nodes.values()) {
    if (only !== undefined && node.nodeId !== only) continue;
    await writeView(nodes, node);
    if (node.state === NodeState.decommissioned) await cuks.purge(`w.${node.nodeId}`).catch(() => undefined);
  }
  if (only !== undefined) return;
  // A view the history does not hold was never (or no longer) true: dropped.
  try {
    for await (const key of await nodes.keys()) {
      const [kind, id] = [key.slice(0, 2), key.slice(2)];
      const known = kind === "n." ? log.nodes.has(id) : kind === "j." ? log.joinKeys.has(id) : false;
      if (!known) await nodes.purge(key);
    }
  } catch (err) {
    core.deps.logger.warn({ op: "repair", err: err instanceof Error ? err.message : String(err) }, "node views not fully repaired");
  }
}

async function writeView(nodes: KV, node: NodeRecord): Promise<void> {
  try {
    await nodes.put(`n.${node.nodeId}`, JSON.stringify(node));
    await nodes.put(`j.${node.joinKey}`, JSON.stringify({ nodeId: node.nodeId }));
  } catch (err) {
    throw unavailable(err);
  }
}

function signer(caller: Caller): string {
  if (caller.anonymous) throw new UnibusError(ErrorCode.Unauthorized, "signature_missing", "request must carry a signed envelope");
  return caller.principal;
}

/** The finished handshake session `sessionId`, whose principal must be the request's signer. */
async function requireSession(core: ClusterCore, sessionId: string, principal: string, clusterId: string, nodeId: string): Promise<void> {
  let entry;
  try {
    entry = await core.deps.sessions.get(sessionId);
  } catch (err) {
    throw unavailable(err);
  }
  const denied = lifecycleError(ErrorCode.Forbidden, LifecycleReason.sessionInvalid, "no finished handshake session for this signer");
  if (entry === null || entry.operation !== "PUT") throw denied;
  const s = entry.json<SessionRecord>();
  // A session proves the PSK for one identity in this cluster; another signer cannot borrow it.
  // The session is bound to the replica id the handshake's MACs covered: one node's session cannot act for another id.
  if (s.principal !== principal || s.clusterId !== clusterId || s.replicaId !== nodeId || Date.parse(s.expiresAt) < core.deps.now()) throw denied;
}

function openSeed(core: ClusterCore, sealed: readonly { gateway: string; box: string }[]): Uint8Array {
  // Replicas of one service may share an identity: each entry for this principal is tried, and only the one sealed to this process opens.
  for (const s of sealed) {
    if (s.gateway !== core.deps.identity.principal) continue;
    let seed: Uint8Array;
    try {
      seed = openSealed(core.deps.agreement.secretKey, fromBase64Url(s.box));
    } catch {
      continue;
    }
    if (seed.byteLength !== 32) throw lifecycleError(ErrorCode.BadRequest, LifecycleReason.badSealed, "the sealed seed is not 32 bytes");
    return seed;
  }
  throw lifecycleError(ErrorCode.Conflict, LifecycleReason.wrongGateway, "no seed sealed to this gateway replica; resend", { retryAfterMs: 50 });
}

/**
 * What every node-side step starts with: the signer is the join key, the
 * cluster is unlocked, and the request carries a finished handshake session
 * of that signer for that node id in this cluster.
 */
async function nodeStep(core: ClusterCore, req: { sessionId: string; nodeId: string }, caller: Caller) {
  const joinKey = signer(caller);
  const keys = core.requireKeys();
  const log = await core.store.load(keys);
  const clusterId = clusterIdOf(log);
  await requireSession(core, req.sessionId, joinKey, clusterId, req.nodeId);
  return { joinKey, keys, log, clusterId, node: log.nodes.get(req.nodeId) };
}

function clusterIdOf(log: VerifiedClusterHistory): string {
  const g = log.genesis;
  if (g === undefined) throw lifecycleError(ErrorCode.Conflict, LifecycleReason.noCluster, "no cluster history: run cluster init");
  return g.clusterId;
}

/** The lifecycle handlers: admin ones under `replica.<verb>`, node ones under `replica.handshake.<verb>`. */
export function lifecycleHandlers(core: ClusterCore) {
  const { deps } = core;
  const base = { maxPayloadBytes: LIFECYCLE_MAX_PAYLOAD_BYTES } as const;
  const agreementSig = toHex(deps.identity.sign(gatewayAgreementBytes(deps.identity.principal, deps.agreement.publicKey)));

  const transition = async (ctx: HandlerContext, type: HistoryEntryType, nodeId: string): Promise<{ seq: number; log: VerifiedClusterHistory }> => {
    const keys = core.requireKeys();
    const done = await core.store.append(keys, ctx, () => ({ type, effect: { nodeId } }));
    await repairViews(core, done.log, nodeId);
    return { seq: done.entry.seq, log: done.log };
  };

  return {
    info: handles("replica", "info", {
      ...base,
      async handler(): Promise<ReplicaInfo> {
        const latest = await core.store.latest();
        return { principal: deps.identity.principal, agreementKey: toHex(deps.agreement.publicKey), agreementSig, initialized: latest !== null, locked: core.keys === undefined };
      },
    }),

    init: handles("replica", "init", {
      ...base,
      async handler(req, _caller, ctx): Promise<ReplicaInitReply> {
        if (deps.clusterName !== undefined && req.clusterName !== deps.clusterName) throw lifecycleError(ErrorCode.Conflict, LifecycleReason.clusterMismatch, "the gateway is configured for another cluster name");
        if (!req.gateways.includes(deps.identity.principal)) throw lifecycleError(ErrorCode.BadRequest, LifecycleReason.wrongGateway, "the gateways list must name this replica");
        const seed = openSeed(core, req.sealed);
        const keys = deriveClusterKeys(seed);
        if (toHex(keys.historyKey.publicKey) !== req.historyKey || toHex(keys.agreementPublicKey) !== req.agreementKey) {
          throw lifecycleError(ErrorCode.BadRequest, LifecycleReason.seedMismatch, "the keys named do not derive from the sealed seed");
        }
        const clusterId = toHex(clusterIdFromName(req.clusterName));
        const done = await core.store.append(keys, ctx, (log) => {
          if (log.genesis !== undefined) throw lifecycleError(ErrorCode.Conflict, LifecycleReason.clusterExists, "the cluster is already initialised");
          return { type: HistoryEntryType.genesis, effect: { clusterName: req.clusterName, clusterId, historyKey: req.historyKey, agreementKey: req.agreementKey, gateways: req.gateways } };
        }, { genesis: true });
        core.adopt(seed, keys);
        ctx.logger.info({ cluster: req.clusterName, gateways: req.gateways.length }, "cluster initialised");
        return { clusterId, seq: done.entry.seq, hash: toBase64Url(done.log.headHash) };
      },
    }),

    recover: handles("replica", "recover", {
      ...base,
      async handler(req): Promise<ReplicaRecoverReply> {
        const seed = openSeed(core, req.sealed);
        const log = await core.unlock(seed, "recovery secret");
        return { seq: log.headSeq };
      },
    }),

    history: handles("replica", "history", {
      ...base,
      async handler(req): Promise<ReplicaHistoryReply> {
        // As stored, not as this replica verified it: the reader verifies for itself.
        const latest = await core.store.latest();
        if (latest === null) throw lifecycleError(ErrorCode.NotFound, LifecycleReason.noCluster, "no cluster history: run cluster init");
        // Up to the pointer only: an entry past it is an append in flight, not yet signed for.
        const from = req.from ?? 0;
        const limit = Math.max(0, Math.min(HISTORY_PAGE, latest.latest.seq - from + 1));
        return { entries: limit === 0 ? [] : await core.store.raw(from, limit), latest: latest.latest };
      },
    }),

    ticket: handles("replica", "ticket", {
      ...base,
      async handler(req, _caller, ctx): Promise<ReplicaTicketReply> {
        const keys = core.requireKeys();
        const log = await core.store.load(keys);
        if (log.nodes.has(req.nodeId)) throw new ClusterHistoryError(ClusterHistoryErrorReason.nodeExists, `node ${req.nodeId} already exists`);
        const ticket = randomBytes(32);
        const expiresAt = ctx.now() + TICKET_TTL_MS;
        try {
          await deps.tickets.create(`t.${toHex(sha256(ticket))}`, JSON.stringify({ nodeId: req.nodeId, expiresAt } satisfies TicketRecord));
        } catch (err) {
          throw unavailable(err);
        }
        ctx.logger.info({ nodeId: req.nodeId }, "node ticket issued");
        return { nodeId: req.nodeId, ticket: toBase64Url(ticket), expiresAt: new Date(expiresAt).toISOString() };
      },
    }),

    approve: handles("replica", "approve", {
      ...base,
      async handler(req, _caller, ctx): Promise<ReplicaApproveReply> {
        const { seq } = await transition(ctx, HistoryEntryType.approve, req.nodeId);
        ctx.logger.info({ nodeId: req.nodeId, seq }, "node approved");
        return { nodeId: req.nodeId, state: NodeState.standby, seq };
      },
    }),

    decommission: handles("replica", "decommission", {
      ...base,
      async handler(req, _caller, ctx): Promise<ReplicaDecommissionReply> {
        const { seq } = await transition(ctx, HistoryEntryType.decommission, req.nodeId);
        ctx.logger.info({ nodeId: req.nodeId, seq }, "node decommissioned");
        return { nodeId: req.nodeId, state: NodeState.decommissioned, seq };
      },
    }),

    gatewayAdd: handles("replica", "gateway.add", {
      ...base,
      async handler(req, _caller, ctx): Promise<ReplicaGatewayAddReply> {
        const done = await core.store.append(core.requireKeys(), ctx, () => ({ type: HistoryEntryType.gatewayAdd, effect: { principal: req.principal } }));
        ctx.logger.info({ gateway: req.principal, seq: done.entry.seq }, "gateway listed");
        return { principal: req.principal, seq: done.entry.seq, gateways: [...done.log.gateways] };
      },
    }),

    gatewayRemove: handles("replica", "gateway.remove", {
      ...base,
      async handler(req, _caller, ctx): Promise<ReplicaGatewayRemoveReply> {
        const done = await core.store.append(core.requireKeys(), ctx, () => ({ type: HistoryEntryType.gatewayRemove, effect: { principal: req.principal } }));
        ctx.logger.info({ gateway: req.principal, seq: done.entry.seq }, "gateway no longer listed");
        return { principal: req.principal, seq: done.entry.seq, gateways: [...done.log.gateways] };
      },
    }),

    nodes: handles("replica", "nodes", {
      ...base,
      async handler(): Promise<ReplicaNodesReply> {
        const log = await core.store.load(core.requireKeys());
        return { nodes: [...log.nodes.values()].map((n) => ({ ...n })) };
      },
    }),

    register: handles("replica", "handshake.register", {
      ...base,
      async handler(req, caller, ctx): Promise<ReplicaRegisterReply> {
        const { joinKey, keys } = await nodeStep(core, req, caller);
        let ticketBytes: Uint8Array;
        try {
          ticketBytes = fromBase64Url(req.ticket);
        } catch {
          ticketBytes = new Uint8Array(0);
        }
        const ticketKey = `t.${toHex(sha256(ticketBytes))}`;
        const badTicket = lifecycleError(ErrorCode.Forbidden, LifecycleReason.ticketInvalid, "the ticket is unknown, used, expired or for another node");
        let entry;
        try {
          entry = await deps.tickets.get(ticketKey);
        } catch (err) {
          throw unavailable(err);
        }
        if (entry === null || entry.operation !== "PUT") throw badTicket;
        const ticket = entry.json<TicketRecord>();
        if (ticket.used === true || ticket.expiresAt < ctx.now() || ticket.nodeId !== req.nodeId) throw badTicket;
        const effect = { nodeId: req.nodeId, joinKey, agreementKey: req.agreementKey, agreementSig: req.agreementSig };
        // The history's rules first (join key reused, node id taken), so a refused registration does not burn the ticket.
        const decide = () => ({ type: HistoryEntryType.register, effect });
        await core.store.precheck(keys, ctx, decide);
        try {
          // Compare-and-set on the revision read: of two registrations with one ticket, one wins.
          await deps.tickets.update(ticketKey, JSON.stringify({ ...ticket, used: true }), entry.revision);
        } catch (err) {
          if (isWrongLastSequence(err)) throw badTicket;
          throw unavailable(err);
        }
        const done = await core.store.append(keys, ctx, decide);
        await repairViews(core, done.log, req.nodeId);
        const g = done.log.genesis;
        if (g === undefined) throw new UnibusError(ErrorCode.Internal, "internal", "internal error");
        ctx.logger.info({ nodeId: req.nodeId, joinKey, seq: done.entry.seq }, "node registered");
        return {
          nodeId: req.nodeId,
          state: NodeState.new,
          seq: done.entry.seq,
          cluster: { clusterName: g.clusterName, clusterId: g.clusterId, historyKey: g.historyKey, agreementKey: g.agreementKey },
        };
      },
    }),

    commit: handles("replica", "handshake.commit", {
      ...base,
      async handler(req, caller, ctx): Promise<ReplicaCommitReply> {
        const { joinKey, keys, node } = await nodeStep(core, req, caller);
        // The history's rules before anything is stored: not approved, decommissioned, someone else's node.
        const decide = () => ({ type: HistoryEntryType.commit, effect: { nodeId: req.nodeId } });
        await core.store.precheck(keys, ctx, decide);
        let cuk: Uint8Array;
        try {
          cuk = openSealed(keys.agreementSecretKey, fromBase64Url(req.sealedCuk));
        } catch {
          throw lifecycleError(ErrorCode.BadRequest, LifecycleReason.badSealed, "the sealed CUK does not open with the cluster agreement key");
        }
        if (cuk.byteLength !== 32 || node === undefined) throw lifecycleError(ErrorCode.BadRequest, LifecycleReason.badSealed, "the CUK must be 32 bytes");
        const wrapped = wrapCuk(keys.wrapKey, cuk, req.nodeId, joinKey);
        cuk.fill(0);
        try {
          await deps.cuks.put(`w.${req.nodeId}`, toBase64Url(wrapped));
        } catch (err) {
          throw unavailable(err);
        }
        const done = await core.store.append(keys, ctx, decide);
        await repairViews(core, done.log, req.nodeId);
        ctx.logger.info({ nodeId: req.nodeId, seq: done.entry.seq }, "node committed");
        return { nodeId: req.nodeId, state: NodeState.up, seq: done.entry.seq, wrappedCuk: toBase64Url(wrapped) };
      },
    }),

    join: handles("replica", "handshake.join", {
      ...base,
      // Recorded like a mutation: a replayed join is refused, not answered again.
      async handler(req, caller, ctx): Promise<ReplicaJoinReply> {
        const { joinKey, keys, node } = await nodeStep(core, req, caller);
        if (node === undefined) throw new ClusterHistoryError(ClusterHistoryErrorReason.unknownNode, `no node ${req.nodeId}`, undefined, ErrorCode.NotFound);
        if (node.joinKey !== joinKey) throw new UnibusError(ErrorCode.Forbidden, "forbidden", "not this node's join key");
        if (node.state === NodeState.decommissioned) throw new ClusterHistoryError(ClusterHistoryErrorReason.decommissioned, `node ${req.nodeId} is decommissioned`, undefined, ErrorCode.Forbidden);
        if (node.state !== NodeState.up) throw new ClusterHistoryError(ClusterHistoryErrorReason.notApproved, `node ${req.nodeId} is ${node.state}, not UP`, undefined, ErrorCode.Forbidden);
        let stored;
        try {
          stored = await deps.cuks.get(`w.${req.nodeId}`);
        } catch (err) {
          throw unavailable(err);
        }
        if (stored === null || stored.operation !== "PUT") throw new UnibusError(ErrorCode.Internal, "internal", "internal error");
        const cuk = unwrapCuk(keys.wrapKey, fromBase64Url(stored.string()), req.nodeId, joinKey);
        const sealed = sealTo(fromHex(node.agreementKey), cuk);
        cuk.fill(0);
        ctx.logger.info({ nodeId: req.nodeId }, "node joined");
        return { nodeId: req.nodeId, sealedCuk: toBase64Url(sealed) };
      },
    }),
  };
}
