/**
 * Whether a cluster node may drop its copy of the JetStream state (to rebuild
 * it under another key), and whether a rebuilt node holds everything again,
 * decided from every node's monitoring `/jsz`. Pure: the caller fetches the
 * views, so the same rules are tested without a cluster.
 */

/** One replica as a stream's (or the meta group's) leader reports it. */
export interface JszReplica {
  readonly name: string;
  readonly current?: boolean;
  readonly offline?: boolean;
  readonly lag?: number;
}

/** A stream in `/jsz?accounts=true&streams=true&consumers=true&config=true`. */
export interface JszStream {
  readonly name: string;
  readonly config?: { readonly num_replicas?: number };
  readonly cluster?: { readonly leader?: string; readonly replicas?: readonly JszReplica[] };
  readonly state?: { readonly messages?: number; readonly last_seq?: number };
  readonly consumer_detail?: readonly { readonly name: string; readonly config?: { readonly durable_name?: string }; readonly cluster?: { readonly leader?: string; readonly replicas?: readonly JszReplica[] } }[];
}

/** One node's `/jsz`; it does not name its server, so the caller keys views by node name. */
export interface Jsz {
  readonly meta_cluster?: { readonly leader?: string; readonly cluster_size?: number; readonly replicas?: readonly JszReplica[] };
  readonly account_details?: readonly { readonly name: string; readonly stream_detail?: readonly JszStream[] }[];
}

/** The `/jsz` query both checks need. */
export const JSZ_COPIES_QUERY = "/jsz?accounts=true&streams=true&consumers=true&config=true";

const allCurrent = (rs: readonly JszReplica[] | undefined): boolean => (rs ?? []).every((r) => r.current === true && r.offline !== true && (r.lag ?? 0) === 0);

/**
 * Every stream of every account as its leader reports it (only the leader's
 * replica list is authoritative), or why not: a stream some node lists with
 * no leader among the views.
 */
export function leaderStreams(views: ReadonlyMap<string, Jsz>): Map<string, JszStream> | string {
  const names = new Set<string>();
  const leaders = new Map<string, JszStream>();
  for (const [node, v] of views) {
    for (const acc of v.account_details ?? []) {
      for (const s of acc.stream_detail ?? []) {
        const id = `${acc.name} > ${s.name}`;
        names.add(id);
        if (s.cluster?.leader !== undefined && s.cluster.leader === node) leaders.set(id, s);
      }
    }
  }
  for (const n of names) if (!leaders.has(n)) return `${n} has no leader`;
  return leaders;
}

/**
 * Why `nodes` may not lose one copy yet, or undefined when the others hold
 * everything: every node answers, the meta group has a leader and every
 * peer current, and every stream (and durable consumer) has a replica on
 * every node, a leader, and every replica current at lag 0. Any doubt (a
 * node that does not answer, a view without leader, an R1 stream) refuses.
 */
export function rebuildBlocker(views: ReadonlyMap<string, Jsz | undefined>, nodes: readonly string[]): string | undefined {
  const answered = new Map<string, Jsz>();
  for (const n of nodes) {
    const v = views.get(n);
    if (v === undefined) return `${n}'s monitoring port does not answer`;
    answered.set(n, v);
  }
  const metaLeader = [...answered].find(([n, v]) => v.meta_cluster?.leader === n)?.[1].meta_cluster;
  if (metaLeader === undefined) return "no meta leader";
  if ((metaLeader.cluster_size ?? 0) !== nodes.length || (metaLeader.replicas ?? []).length !== nodes.length - 1 || !allCurrent(metaLeader.replicas)) return "the meta group is not current on every node";
  const leaders = leaderStreams(answered);
  if (typeof leaders === "string") return leaders;
  for (const [id, s] of leaders) {
    if ((s.config?.num_replicas ?? 0) < nodes.length) return `${id} is not R${nodes.length}`;
    if ((s.cluster?.replicas ?? []).length !== nodes.length - 1 || !allCurrent(s.cluster?.replicas)) return `${id} has a replica that is not current`;
    for (const c of s.consumer_detail ?? []) {
      if (c.config?.durable_name === undefined) continue;
      // A consumer has its own raft group and leader; only that leader's view lists its peers truthfully.
      const own = consumerAsItsLeaderSees(answered, id, c.name);
      if (own === undefined) return `durable ${c.name} of ${id} has no leader`;
      if ((own.cluster?.replicas ?? []).length !== nodes.length - 1 || !allCurrent(own.cluster?.replicas)) return `durable ${c.name} of ${id} is not current on every node`;
    }
  }
  return undefined;
}

type JszConsumer = NonNullable<JszStream["consumer_detail"]>[number];

/**
 * Consumer `name` of stream `id` (`<account> > <stream>`) in the view of the
 * node that leads it. A consumer's leader need not be its stream's: the
 * stream leader's (or any follower's) view of a consumer it does not lead
 * lists the peers as never heard from, which would refuse forever.
 */
function consumerAsItsLeaderSees(views: ReadonlyMap<string, Jsz>, id: string, name: string): JszConsumer | undefined {
  for (const [node, v] of views) {
    for (const acc of v.account_details ?? []) {
      for (const s of acc.stream_detail ?? []) {
        if (`${acc.name} > ${s.name}` !== id) continue;
        const c = s.consumer_detail?.find((d) => d.name === name);
        if (c?.cluster?.leader === node) return c;
      }
    }
  }
  return undefined;
}

/**
 * Why `node` (rebuilt) does not hold a current copy of everything yet, or
 * undefined: it sees a meta leader, and every stream the leaders report is
 * in its own view at the leader's message count and last sequence, with the
 * leader counting it current. Its own view is read, not only the leader's
 * word: a leader can count a node current before its copy lists a stream.
 */
export function catchUpBlocker(node: string, own: Jsz | undefined, views: ReadonlyMap<string, Jsz>): string | undefined {
  if (own?.meta_cluster?.leader === undefined) return "no meta leader seen by this node";
  const leaders = leaderStreams(views);
  if (typeof leaders === "string") return leaders;
  const mine = new Map<string, JszStream>();
  for (const acc of own.account_details ?? []) for (const s of acc.stream_detail ?? []) mine.set(`${acc.name} > ${s.name}`, s);
  for (const [id, s] of leaders) {
    const copy = mine.get(id);
    if (copy === undefined) return `${id} not on this node yet`;
    if (s.cluster?.leader !== node) {
      const me = (s.cluster?.replicas ?? []).find((r) => r.name === node);
      if (me === undefined || !allCurrent([me])) return `${id}: the leader does not count this node current`;
    }
    if (copy.state?.last_seq === undefined || copy.state.last_seq !== s.state?.last_seq || copy.state.messages !== s.state.messages) return `${id}: this copy is behind the leader`;
  }
  return undefined;
}
