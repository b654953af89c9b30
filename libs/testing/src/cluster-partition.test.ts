import { connect as tlsConnect } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestCluster } from "./cluster.js";
import type { TestCluster } from "./cluster.js";
import { eventually } from "./eventually.js";
import type { TestServer } from "./server.js";

interface Routez {
  num_routes: number;
  routes: { remote_name?: string }[];
}

async function peersOf(server: TestServer): Promise<string[]> {
  const routez = (await (await fetch(`http://127.0.0.1:${server.monitorPort}/routez`)).json()) as Routez;
  return [...new Set(routez.routes.map((r) => r.remote_name ?? "?"))].sort();
}

describe("startTestCluster with TLS routes through link proxies", () => {
  let cluster: TestCluster;
  const name = (i: number): string => cluster.nodeNames[i]!;
  beforeAll(async () => {
    cluster = await startTestCluster(3, { routeTls: true, routeProxies: true });
  }, 90_000);
  afterAll(async () => {
    await cluster?.stop();
  });

  it("routes every node to both others, only through the proxies, and forms one meta group", async () => {
    expect(cluster.links).toHaveLength(6);
    for (const [i, server] of cluster.servers.entries()) {
      await eventually(() => peersOf(server), (p) => p.length === 2, { timeoutMs: 20_000, what: `node ${i} routed to both peers` });
    }
    expect(cluster.links.every((l) => l.proxy.accepted > 0)).toBe(true);
    expect(await cluster.waitForMetaLeader()).toMatch(/-n[123]$/);
  });

  it("requires mutual TLS on every route port and refuses a peer without a node certificate", async () => {
    for (const server of cluster.servers) {
      const varz = (await (await fetch(`http://127.0.0.1:${server.monitorPort}/varz`)).json()) as { cluster: { tls_required?: boolean; tls_verify?: boolean } };
      expect(varz.cluster).toMatchObject({ tls_required: true, tls_verify: true });
    }
    // Routes speak TLS from the first byte; a peer with no certificate gets
    // the alert and never the server's INFO.
    const outcome = await new Promise<string>((resolve) => {
      const socket = tlsConnect({ host: "127.0.0.1", port: cluster.servers[0]!.clusterPort!, rejectUnauthorized: false });
      socket.on("data", (d: Buffer) => resolve(`accepted: ${d.toString().slice(0, 40)}`));
      socket.once("error", (err) => resolve(err.message));
    });
    expect(outcome).toMatch(/certificate required/);
  });

  it("partition(i) isolates node i from both peers, and heal() reconnects it", async () => {
    cluster.partition(2);
    await eventually(() => peersOf(cluster.servers[2]!), (p) => p.length === 0, { timeoutMs: 20_000, what: "n3 without routes" });
    for (const i of [0, 1]) {
      await eventually(() => peersOf(cluster.servers[i]!), (p) => p.length === 1 && !p.includes(name(2)), { timeoutMs: 20_000, what: `node ${i} keeps only its majority peer` });
    }
    cluster.heal();
    for (const [i, server] of cluster.servers.entries()) {
      await eventually(() => peersOf(server), (p) => p.length === 2, { timeoutMs: 30_000, what: `node ${i} routed again` });
    }
    expect(await cluster.waitForMetaLeader()).toMatch(/-n[123]$/);
  }, 90_000);
});
