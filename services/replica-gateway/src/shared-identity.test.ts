import { afterAll, beforeAll, expect, it } from "vitest";
import type { NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { SigningKey } from "@unibus/crypto";
import { discoverGateways, initCluster } from "@unibus/sdk";
import { eventually, startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { createReplicaGatewayService } from "./service.js";
import type { RunningReplicaGateway } from "./service.js";

// Replicas of one service share its identity file in `unibus up` and compose:
// the seed must still reach each process, and peers must still answer.
const admin = SigningKey.generate();
const shared = SigningKey.generate();
let server: TestServer;
const conns: NatsConnection[] = [];
const gateways: RunningReplicaGateway[] = [];

beforeAll(async () => {
  server = await startTestServer({ jetstream: true });
  for (let i = 0; i < 2; i++) {
    const nc = await server.connect();
    conns.push(nc);
    gateways.push(await createReplicaGatewayService(nc, { logger: pino({ level: "silent" }), clusterName: "shared", identity: shared, resolveRole: async (p) => (p === admin.principal ? "admin" : null), peerRetryMs: 100, seedWaitMs: 300 }));
  }
});

afterAll(async () => {
  for (const g of gateways) await g.stop();
  for (const nc of conns) await nc.close();
  await server?.stop();
});

it("two replicas with one identity: discovery finds both processes, the genesis names the principal once, both end up holding the seed", async () => {
  const adminNc = await server.connect({ inboxPrefix: `_INBOX.${admin.principal}` });
  conns.push(adminNc);
  expect(await discoverGateways(adminNc)).toHaveLength(2);
  const result = await initCluster(adminNc, admin, { clusterName: "shared" });
  expect(result.gateways).toEqual([shared.principal]);
  await eventually(() => gateways.every((g) => g.core.keys !== undefined), (ok) => ok, { timeoutMs: 10_000 });
});
