import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Kvm } from "@nats-io/kv";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { createReplicatedKv, eventually, retryUntil, startTestCluster } from "@unibus/testing";
import type { TestCluster } from "@unibus/testing";
import { LeaderContact, LeaderContactFence, LeaderOutOfContactError, leaderInContact } from "./leader-contact.js";

const ms = (n: number): number => n * 1e6;
const peer = (activeMs: number, extra: { current?: boolean; offline?: boolean; name?: string } = {}) => ({
  current: extra.current ?? true,
  ...(extra.offline === undefined ? {} : { offline: extra.offline }),
  ...(extra.name === undefined ? {} : { name: extra.name }),
  active: ms(activeMs),
});

describe("leaderInContact", () => {
  it("a stream without peers (one replica, or one server) has nothing to lose contact with", () => {
    expect(leaderInContact({})).toBe(true);
    expect(leaderInContact({ cluster: { leader: "n1", replicas: [] } })).toBe(true);
  });

  it("counts the leader and every current peer heard from within the bound; a quorum of them is contact", () => {
    const led = (replicas: ReturnType<typeof peer>[]) => ({ cluster: { leader: "n1", replicas } });
    expect(leaderInContact(led([peer(900), peer(1_000)]))).toBe(true);
    expect(leaderInContact(led([peer(900), peer(60_000)]))).toBe(true);
    expect(leaderInContact(led([peer(LeaderContact.maxSilenceMs + 1), peer(60_000)]))).toBe(false);
    expect(leaderInContact(led([peer(10, { current: false }), peer(10, { offline: true })]))).toBe(false);
    expect(leaderInContact(led([peer(10), peer(10), peer(9_000), peer(9_000)]))).toBe(true);
    expect(leaderInContact(led([peer(10), peer(9_000), peer(9_000), peer(9_000)]))).toBe(false);
  });

  it("refuses an answer that does not come from the leader it names: no leader, or the leader among the replicas", () => {
    // A replica answering while it sees no leader lists itself too, and counts towards the quorum.
    expect(leaderInContact({ cluster: { replicas: [peer(0, { name: "n2" }), peer(10, { name: "n3" }), peer(60_000, { name: "n1", current: false })] } })).toBe(false);
    expect(leaderInContact({ cluster: { leader: "", replicas: [peer(10, { name: "n2" }), peer(10, { name: "n3" })] } })).toBe(false);
    // Nor a peer list at all (a replica whose stream is being reset answered with last sequence 1).
    expect(leaderInContact({ cluster: { replicas: [] } })).toBe(false);
    expect(leaderInContact({ cluster: {} })).toBe(false);
    // A replica answering for a leader it knows of lists that leader among the peers.
    expect(leaderInContact({ cluster: { leader: "n1", replicas: [peer(10, { name: "n1" }), peer(10, { name: "n3" })] } })).toBe(false);
    expect(leaderInContact({ cluster: { leader: "n1", replicas: [peer(10, { name: "n2" }), peer(10, { name: "n3" })] } })).toBe(true);
  });
});

/** A KV whose stream info the test scripts. */
function fakeKv(answers: Array<() => unknown>): { kv: KV; calls: () => number } {
  let n = 0;
  const kv = {
    async status() {
      const answer = answers[Math.min(n++, answers.length - 1)]!();
      return { streamInfo: { config: { name: "KV_t" }, ...(answer as object) } };
    },
  } as unknown as KV;
  return { kv, calls: () => n };
}

describe("LeaderContactFence", () => {
  it("reuses a good verdict for reuseMs, then asks again; a bad one is never reused", async () => {
    let now = 1_000;
    const good = () => ({ cluster: { leader: "n1", replicas: [peer(100), peer(100)] } });
    const bad = () => ({ cluster: { leader: "n1", replicas: [peer(9_000), peer(9_000)] } });
    const { kv, calls } = fakeKv([good, bad, bad, good]);
    const fence = new LeaderContactFence(kv, () => now);
    await fence.check();
    now += LeaderContact.reuseMs - 1;
    await fence.check();
    expect(calls()).toBe(1);
    now += 2;
    await expect(fence.check()).rejects.toBeInstanceOf(LeaderOutOfContactError);
    await expect(fence.check()).rejects.toBeInstanceOf(LeaderOutOfContactError);
    await fence.check();
    expect(calls()).toBe(4);
  });

  it("a stream info that fails is a refusal, not a pass", async () => {
    const { kv } = fakeKv([() => {
      throw new Error("timeout");
    }]);
    await expect(new LeaderContactFence(kv).check()).rejects.toThrow(/timeout/);
  });
});

describe("a leader partitioned from its peers on a real 3-node cluster", () => {
  let cluster: TestCluster;
  let conns: NatsConnection[] = [];

  beforeAll(async () => {
    cluster = await startTestCluster(3, { routeProxies: true });
    await cluster.waitForMetaLeader();
    conns = await Promise.all(cluster.servers.map((s) => s.connect()));
  }, 90_000);

  afterAll(async () => {
    await Promise.all(conns.map((nc) => nc.close().catch(() => undefined)));
    await cluster?.stop();
  });

  it("still answers leader reads after the cut, but the fence refuses it before any new leader can exist, and passes again after the heal", async () => {
    const kv = await createReplicatedKv(conns[0]!, "fence", { allow_direct: false });
    // A fresh R3 stream answers puts once its raft group has a leader ("no responders" until then).
    await retryUntil(() => kv.put("user", "active"), { timeoutMs: 15_000, intervalMs: 100 });
    const leaderName = (await kv.status()).streamInfo.cluster?.leader;
    const leader = cluster.nodeIndex(leaderName);
    expect(leader).toBeGreaterThanOrEqual(0);
    const isolated: KV = await new Kvm(conns[leader]!).open("fence", { allow_direct: false });
    const fence = new LeaderContactFence(isolated);
    await fence.check();

    const cut = Date.now();
    cluster.partition(leader);
    // The fence trips within the silence bound (+ one reuse period and a heartbeat of slack).
    const trippedAt = await eventually(
      () => fence.check().then(() => 0, (err: unknown) => (err instanceof LeaderOutOfContactError ? Date.now() - cut : 0)),
      (t) => t > 0,
      { timeoutMs: 10_000, intervalMs: 50, what: "the fence refusing the cut-off leader" },
    );
    expect(trippedAt).toBeLessThan(LeaderContact.maxSilenceMs + LeaderContact.reuseMs + 1_000);
    // Without the fence the cut-off leader would still answer: the stale path the fence closes.
    expect((await isolated.get("user"))?.string()).toBe("active");

    cluster.heal();
    await eventually(() => fence.check().then(() => true, () => false), Boolean, { timeoutMs: 60_000, intervalMs: 250, what: "the fence passing after the heal" });
  }, 120_000);
});
