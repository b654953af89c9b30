import { describe, expect, it } from "vitest";
import { catchUpBlocker, rebuildBlocker } from "./copies.js";
import type { Jsz, JszReplica, JszStream } from "./copies.js";

const NODES = ["n1", "n2", "n3"];
const current = (name: string, extra: Partial<JszReplica> = {}): JszReplica => ({ name, current: true, lag: 0, ...extra });

/** A stream as `node` reports it: led by `leader`, R3, with the other two replicas as given. */
function stream(node: string, leader: string, opts: { replicas?: JszReplica[]; numReplicas?: number; last?: number; consumers?: JszStream["consumer_detail"] } = {}): JszStream {
  const others = NODES.filter((n) => n !== leader).map((n) => current(n));
  return {
    name: "KV_users",
    config: { num_replicas: opts.numReplicas ?? 3 },
    cluster: { leader, ...(node === leader ? { replicas: opts.replicas ?? others } : {}) },
    state: { messages: opts.last ?? 5, last_seq: opts.last ?? 5 },
    ...(opts.consumers === undefined ? {} : { consumer_detail: opts.consumers }),
  };
}

function view(node: string, streams: JszStream[], meta: { leader?: string; replicas?: JszReplica[] } = { leader: "n1" }): Jsz {
  const leader = meta.leader;
  return {
    meta_cluster: {
      ...(leader === undefined ? {} : { leader }),
      cluster_size: 3,
      ...(node === leader ? { replicas: meta.replicas ?? NODES.filter((n) => n !== leader).map((n) => current(n)) } : {}),
    },
    account_details: [{ name: "UNIBUS", stream_detail: streams }],
  };
}

/** Three healthy views: every stream led by n1 with both followers current. */
function healthy(overrides: { leaderStream?: Partial<Parameters<typeof stream>[2]>; meta?: { leader?: string; replicas?: JszReplica[] } } = {}): Map<string, Jsz | undefined> {
  return new Map(NODES.map((n) => [n, view(n, [stream(n, "n1", overrides.leaderStream)], overrides.meta)]));
}

describe("rebuildBlocker: a node drops its copy only while the others hold everything, current", () => {
  it("allows a rebuild when every node answers and every stream and the meta group are current on all three", () => {
    expect(rebuildBlocker(healthy(), NODES)).toBeUndefined();
  });

  it("refuses when a node's monitoring port does not answer", () => {
    const views = healthy();
    views.set("n3", undefined);
    expect(rebuildBlocker(views, NODES)).toMatch(/n3's monitoring port does not answer/);
  });

  it("refuses with no meta leader, or a meta peer that is not current", () => {
    expect(rebuildBlocker(healthy({ meta: {} }), NODES)).toBe("no meta leader");
    expect(rebuildBlocker(healthy({ meta: { leader: "n1", replicas: [current("n2"), current("n3", { current: false })] } }), NODES)).toMatch(/meta group is not current/);
  });

  it("refuses a stream below R3: its only copies may be on the node to rebuild", () => {
    expect(rebuildBlocker(healthy({ leaderStream: { numReplicas: 1, replicas: [] } }), NODES)).toMatch(/is not R3/);
  });

  it("refuses a follower that lags, is offline or not current", () => {
    for (const bad of [{ lag: 3 }, { offline: true }, { current: false }]) {
      expect(rebuildBlocker(healthy({ leaderStream: { replicas: [current("n2"), current("n3", bad)] } }), NODES)).toMatch(/replica that is not current/);
    }
  });

  it("refuses a stream that no view reports a leader for", () => {
    const views = new Map<string, Jsz | undefined>(NODES.map((n) => [n, view(n, [{ ...stream(n, "n1"), cluster: {} }])]));
    expect(rebuildBlocker(views, NODES)).toMatch(/has no leader/);
  });

  it("refuses a durable consumer not current on every node, and ignores ephemeral ones", () => {
    const lagging = [{ name: "d1", config: { durable_name: "d1" }, cluster: { leader: "n1", replicas: [current("n2"), current("n3", { lag: 1 })] } }];
    expect(rebuildBlocker(healthy({ leaderStream: { consumers: lagging } }), NODES)).toMatch(/durable d1/);
    const ephemeral = [{ name: "e1", config: {}, cluster: { leader: "n1", replicas: [] } }];
    expect(rebuildBlocker(healthy({ leaderStream: { consumers: ephemeral } }), NODES)).toBeUndefined();
  });
});

describe("rebuildBlocker: a durable consumer is judged from its own leader's view", () => {
  // As nats-server reports it: only the node leading a consumer lists its peers truthfully;
  // another node (here the stream's leader) lists them as never heard from.
  const consumerViews = (n2Replicas: JszReplica[], consumerLeader = "n2"): Map<string, Jsz | undefined> =>
    new Map(
      NODES.map((n) => {
        const replicas = n === consumerLeader ? n2Replicas : NODES.filter((p) => p !== n).map((p) => ({ name: p, current: false }));
        const consumers = [{ name: "keys_share_deletion", config: { durable_name: "keys_share_deletion" }, cluster: { leader: consumerLeader, replicas } }];
        return [n, view(n, [stream(n, "n1", { consumers })])];
      }),
    );

  it("allows a rebuild when the consumer's leader (not the stream's) counts every peer current", () => {
    expect(rebuildBlocker(consumerViews([current("n1"), current("n3")]), NODES)).toBeUndefined();
  });

  it("refuses when the consumer's leader counts a peer behind, or no view leads the consumer", () => {
    expect(rebuildBlocker(consumerViews([current("n1"), current("n3", { current: false })]), NODES)).toMatch(/durable keys_share_deletion .* not current/);
    expect(rebuildBlocker(consumerViews([current("n1"), current("n3")], "n4"), NODES)).toMatch(/durable keys_share_deletion .* has no leader/);
  });
});

describe("catchUpBlocker: a rebuilt node counts as caught up only from its own copy and the leader's word", () => {
  const peers = (last = 5, n3: JszReplica = current("n3")): Map<string, Jsz> =>
    new Map(NODES.map((n) => [n, view(n, [stream(n, "n1", { last, replicas: [current("n2"), n3] })])]));

  it("is caught up when its own copy matches the leader and the leader counts it current", () => {
    expect(catchUpBlocker("n3", view("n3", [stream("n3", "n1")]), peers())).toBeUndefined();
  });

  it("is not while it sees no meta leader or lacks a stream", () => {
    expect(catchUpBlocker("n3", view("n3", [stream("n3", "n1")], {}), peers())).toMatch(/no meta leader/);
    expect(catchUpBlocker("n3", view("n3", []), peers())).toMatch(/not on this node yet/);
    expect(catchUpBlocker("n3", undefined, peers())).toMatch(/no meta leader/);
  });

  it("is not while the leader does not count it current, or its copy is behind", () => {
    expect(catchUpBlocker("n3", view("n3", [stream("n3", "n1")]), peers(5, current("n3", { current: false })))).toMatch(/does not count this node current/);
    expect(catchUpBlocker("n3", view("n3", [stream("n3", "n1", { last: 4 })]), peers(5))).toMatch(/behind the leader/);
  });
});
