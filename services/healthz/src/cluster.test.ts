import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import type { HealthzPostureReply } from "@unibus/contracts";
import { startService } from "@unibus/kit";
import type { RunningService } from "@unibus/kit";
import { createReplicatedKv, eventually, startTestCluster } from "@unibus/testing";
import type { TestCluster } from "@unibus/testing";
import { createHealthzService } from "./service.js";
import type { RunningHealthz } from "./service.js";
import { testDependency } from "./test-dependency.js";

const silent = pino({ level: "silent" });

let cluster: TestCluster;
let nc: NatsConnection;
let dep: RunningService;
let healthz: RunningHealthz;

beforeAll(async () => {
  cluster = await startTestCluster(3);
  await cluster.waitForMetaLeader();
  nc = await cluster.connect({ maxReconnectAttempts: -1, reconnectTimeWait: 100 });
  await createReplicatedKv(nc, "hz_r3");
  dep = await startService(nc, testDependency, { logger: silent });
  healthz = await createHealthzService(nc, { logger: silent, resolveRole: async () => null }, {
    http: { host: "127.0.0.1", port: 0 },
    monitorUrls: cluster.servers.map((s) => `http://127.0.0.1:${s.monitorPort}`),
    streams: [{ bucket: "hz_r3", stream: "KV_hz_r3" }],
    services: ["hz-dep"],
    timeoutMs: 1_000,
  });
}, 120_000);

afterAll(async () => {
  await healthz?.stop();
  await dep?.stop();
  await cluster?.stop();
});

async function readyStatus(): Promise<number> {
  return (await fetch(`${healthz.httpUrl}/readyz`)).status;
}

describe("readiness of a 3-node cluster", () => {
  it("reports the cluster posture: 3 nodes, a meta leader, routes without TLS, fsync always, an R3 bucket with 3 current replicas", async () => {
    await eventually(readyStatus, (s) => s === 200, { timeoutMs: 30_000, what: "readyz 200 on a healthy cluster" });
    const p = (await (await fetch(`${healthz.httpUrl}/healthz`)).json()) as HealthzPostureReply;
    expect(p).toMatchObject({ ready: true, mode: "cluster", cluster_size: 3, tls: { client: false, route: false }, sync_policy: "always" });
    expect(cluster.nodeNames).toContain(p.meta_leader);
    expect(p.buckets).toEqual([{ name: "hz_r3", stream: "KV_hz_r3", replicas: 3, leader: expect.any(String), current: 3, ok: true }]);
  }, 60_000);

  it("/readyz is 503 with 2 of 3 nodes down (no quorum) and 200 again after they restart", async () => {
    await cluster.stopNode(1);
    await cluster.stopNode(2);
    await eventually(readyStatus, (s) => s === 503, { timeoutMs: 30_000, intervalMs: 200, what: "readyz 503 with quorum lost" });
    const body = (await (await fetch(`${healthz.httpUrl}/readyz`)).json()) as { checks: Array<{ name: string; ok: boolean }> };
    expect(body.checks.find((c) => c.name === "meta_leader")?.ok).toBe(false);
    expect(body.checks.find((c) => c.name === "bucket:hz_r3")?.ok).toBe(false);

    await cluster.startNode(1);
    await cluster.startNode(2);
    await eventually(readyStatus, (s) => s === 200, { timeoutMs: 60_000, intervalMs: 250, what: "readyz 200 after recovery" });
  }, 120_000);
});
