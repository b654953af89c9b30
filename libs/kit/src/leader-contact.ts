import type { KV } from "@nats-io/kv";

/**
 * Bounds of the leader-contact fence. A stream leader cut off from its
 * peers keeps answering leader reads until it notices the lost quorum and
 * steps down: 10 s in nats-server 2.15 (raft `lostQuorumInterval`). The
 * peers on the other side elect a new leader once they miss its heartbeats
 * for 4–9 s (`minElectionTimeout` 4 s; heartbeats every 1 s, so no earlier
 * than about 3 s after the cut), and from then on a revoke or a removal can
 * commit there while the old leader still serves the old record. The fence
 * refuses to trust a leader that has not heard from a quorum of its peers
 * within {@link LeaderContact.maxSilenceMs}, and reuses a good verdict for
 * at most {@link LeaderContact.reuseMs}: 2.5 s + 0.25 s stays below the 3 s
 * before any new leader can exist, so no read it lets through can miss a
 * write the other side acknowledged.
 */
export const LeaderContact = {
  /** Longest silence of a peer the leader still counts as in contact (idle peers answer every 1 s heartbeat). */
  maxSilenceMs: 2_500,
  /** How long a verdict that the leader is in contact is reused before asking again. */
  reuseMs: 250,
} as const;

/** The part of a stream's info the fence reads: the leader's view of its peers. */
export interface StreamClusterView {
  readonly cluster?: {
    readonly leader?: string;
    readonly replicas?: ReadonlyArray<{ readonly name?: string; readonly current: boolean; readonly offline?: boolean; readonly active: number }>;
  };
}

/**
 * Whether the answer came from the stream's leader and that leader heard
 * from a quorum (itself included) within `maxSilenceMs`. A stream without
 * peers (one replica, or a single server) has nothing to lose contact with.
 *
 * The answer must name a leader that is not among its replicas: nats-server
 * lists every peer but the one answering, and a replica that is not the
 * leader also answers stream info while it sees no leader, or while it is
 * the preferred peer of a group created less than 10 s ago. Such answers
 * were seen from a node just resumed after a pause, with a last sequence
 * far behind the leader's, and the quorum count alone let them through.
 */
export function leaderInContact(info: StreamClusterView, maxSilenceMs: number = LeaderContact.maxSilenceMs): boolean {
  if (info.cluster === undefined) return true;
  // nats-server names the leader in every answer from one (a single server or
  // an R1 stream names itself), so an answer naming none is not the leader's.
  const leader = info.cluster.leader;
  if (leader === undefined || leader === "") return false;
  const replicas = info.cluster.replicas ?? [];
  if (replicas.length === 0) return true;
  if (replicas.some((r) => r.name === leader)) return false;
  // `active` is nanoseconds since the leader last heard from that peer.
  const reached = replicas.filter((r) => r.current && r.offline !== true && r.active / 1e6 <= maxSilenceMs).length;
  return (reached + 1) * 2 > replicas.length + 1;
}

/** A leader that cannot vouch for its quorum: what it would answer may already be superseded. */
export class LeaderOutOfContactError extends Error {
  constructor(readonly stream: string) {
    super(`the leader of ${stream} has not heard from a quorum of its peers within ${LeaderContact.maxSilenceMs} ms`);
    this.name = "LeaderOutOfContactError";
  }
}

/**
 * Fences leader reads of one KV bucket: {@link check} resolves only while
 * the bucket's stream leader is in contact with a quorum (one stream-info
 * request, shared by concurrent callers and reused for
 * {@link LeaderContact.reuseMs}), and throws otherwise, or when the info
 * request itself fails. Run it beside the reads it vouches for.
 */
export class LeaderContactFence {
  readonly #kv: KV;
  readonly #now: () => number;
  #goodUntil = 0;
  #pending: Promise<void> | undefined;

  constructor(kv: KV, now: () => number = Date.now) {
    this.#kv = kv;
    this.#now = now;
  }

  check(): Promise<void> {
    if (this.#now() < this.#goodUntil) return Promise.resolve();
    this.#pending ??= this.#ask().finally(() => (this.#pending = undefined));
    return this.#pending;
  }

  async #ask(): Promise<void> {
    const asked = this.#now();
    const status = await this.#kv.status();
    const info = status.streamInfo as unknown as StreamClusterView;
    if (!leaderInContact(info)) {
      this.#goodUntil = 0;
      throw new LeaderOutOfContactError(status.streamInfo.config.name);
    }
    // From when it was asked, not answered: the verdict describes that moment.
    this.#goodUntil = asked + LeaderContact.reuseMs;
  }
}
