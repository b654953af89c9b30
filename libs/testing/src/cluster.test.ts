import { Kvm } from "@nats-io/kv";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createReplicatedKv, startTestCluster } from "./cluster.js";
import { retryUntil } from "./eventually.js";
import type { TestCluster } from "./cluster.js";

describe("startTestCluster", () => {
  let cluster: TestCluster;
  beforeAll(async () => {
    cluster = await startTestCluster(3);
  }, 90_000);
  afterAll(async () => {
    await cluster?.stop();
  });

  it("forms a 3-node cluster with routes between all nodes and one JetStream meta leader", async () => {
    expect(cluster.servers).toHaveLength(3);
    expect(new Set(cluster.urls).size).toBe(3);
    for (const server of cluster.servers) {
      const routez = (await (await fetch(`http://127.0.0.1:${server.monitorPort}/routez`)).json()) as { num_routes: number };
      expect(routez.num_routes).toBeGreaterThanOrEqual(2);
    }
    const leader = await cluster.waitForMetaLeader();
    expect(cluster.nodeNames).toEqual([1, 2, 3].map((n) => `${cluster.name}-n${n}`));
    expect(cluster.nodeNames[cluster.nodeIndex(leader)]).toBe(leader);
    expect(cluster.nodeIndex(undefined)).toBe(-1);
    expect(cluster.nodeIndex("another-n1")).toBe(-1);
  });

  it("fsyncs before acknowledging on every node (sync_interval: always), as the production cluster does", async () => {
    for (const server of cluster.servers) {
      const jsz = (await (await fetch(`http://127.0.0.1:${server.monitorPort}/jsz`)).json()) as { config: { sync_always?: boolean } };
      expect(jsz.config.sync_always).toBe(true);
    }
  });

  it("an R3 KV bucket keeps accepting writes and serving reads with the meta leader's node stopped, and the node catches up", async () => {
    const nc = await cluster.connect({ maxReconnectAttempts: -1, reconnectTimeWait: 100 });
    const kv = await createReplicatedKv(nc, "chaos");
    expect((await kv.status()).replicas).toBe(3);
    // A new R3 stream elects its own leader after the create returns; until then a put meets no responders (seen at load ~12).
    await retry(() => kv.put("k", "v1"), 20_000);

    // The meta leader is the hardest node to lose: JetStream must elect a new one.
    const victim = Number(/-n(\d+)$/.exec(await cluster.waitForMetaLeader())?.[1]) - 1;
    await cluster.stopNode(victim);
    expect(cluster.servers[victim]?.running).toBe(false);
    const rev = await retry(() => kv.put("k", "v2"), 20_000);
    expect((await kv.get("k"))?.string()).toBe("v2");

    await cluster.startNode(victim);
    await cluster.waitForMetaLeader();
    const direct = await cluster.servers[victim]!.connect();
    const entry = await retry(async () => {
      const e = await new Kvm(direct).open("chaos").then((b) => b.get("k"));
      if (e?.revision !== rev) throw new Error("not caught up yet");
      return e;
    }, 20_000);
    expect(entry.string()).toBe("v2");
  }, 90_000);
});

/** Stream leader elections after a node loss take a few seconds: retry within a budget. */
function retry<T>(fn: () => Promise<T>, budgetMs: number): Promise<T> {
  return retryUntil(fn, { timeoutMs: budgetMs, intervalMs: 250 });
}
