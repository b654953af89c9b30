import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { createIdentity, nkeyAuthenticator, randomBytes, SigningKey } from "@unibus/crypto";
import { createReplicaGatewayService } from "@unibus/replica-gateway";
import type { RunningReplicaGateway } from "@unibus/replica-gateway";
import { commitNode, fetchClusterHistory, initCluster, joinNode, registerNode, replicaHandshake, signedRequest } from "@unibus/sdk";
import { Subjects } from "@unibus/contracts";
import type { ReplicaTicketReply } from "@unibus/contracts";
import { startTestBus } from "@unibus/testbus";
import type { TestBus } from "@unibus/testbus";

/** Resolves with the operation of the permission violation the server reports for `subject`; rejects after `ms`. */
async function violationFor(nc: NatsConnection, subject: string, action: () => void, ms = 10_000): Promise<string> {
  const status = nc.status();
  try {
    const seen = (async () => {
      for await (const s of status) {
        if (s.type === "error" && s.error.name === "PermissionViolationError" && (s.error as { subject?: string }).subject === subject) {
          return (s.error as { operation?: string }).operation ?? "unknown";
        }
      }
      throw new Error("status stream ended");
    })();
    action();
    let timer: NodeJS.Timeout | undefined;
    const bound = new Promise<never>((_r, reject) => {
      timer = setTimeout(() => reject(new Error(`no permission violation for ${subject} within ${ms} ms`)), ms);
    });
    try {
      return await Promise.race([seen, bound]);
    } finally {
      clearTimeout(timer);
    }
  } finally {
    (status as unknown as { stop(): void }).stop();
  }
}

describe("a node through the auth callout (bootstrap grant) and the gateway as its service user", () => {
  const psk = randomBytes(32);
  const node = SigningKey.generate();
  let bus: TestBus;
  let gateway: RunningReplicaGateway;
  let nc: NatsConnection;

  beforeAll(async () => {
    bus = await startTestBus({ bootstrapAccess: true });
    // The service user's production permissions: its subjects, its own buckets and a read of `users`.
    gateway = await createReplicaGatewayService(await bus.serviceConnection("replica-gateway"), { psk: { current: psk }, clusterName: "e2e", acceptorId: "gw-e2e", identity: SigningKey.generate(), logger: pino({ level: "silent" }) });
    nc = await bus.server.connect({ authenticator: nkeyAuthenticator(node), inboxPrefix: `_INBOX.${node.principal}`, reconnect: false });
  });

  afterAll(async () => {
    await nc?.close();
    await gateway?.stop();
    await bus?.stop();
  });

  it("completes the handshake; the cluster learns the node's principal", async () => {
    const r = await replicaHandshake(nc, { clusterName: "e2e", replicaId: "node-e2e", psk, identity: node });
    expect(r.session).toMatchObject({ principal: node.principal, replicaId: "node-e2e", acceptorId: "gw-e2e" });
    expect((await gateway.buckets.sessions.get(r.session.sessionId))?.json()).toMatchObject({ principal: node.principal });
  });

  it("may publish nowhere else under unibus.v1.replica, nor to other services", async () => {
    expect(await violationFor(nc, "unibus.v1.replica.join", () => nc.publish("unibus.v1.replica.join", "{}"))).toBe("publish");
    expect(await violationFor(nc, "unibus.v1.membership.users.list", () => nc.publish("unibus.v1.membership.users.list", "{}"))).toBe("publish");
  });

  it("a node goes ticket → register → approve → commit → join with only its bootstrap grant; the admin through the callout", async () => {
    const adminNc = bus.admin.nc;
    const adminKey = bus.adminIdentity.signingKey;
    await initCluster(adminNc, adminKey, { clusterName: "e2e" });
    const ticket = await signedRequest<ReplicaTicketReply>(adminNc, adminKey, Subjects.replicaGateway.ticket, { nodeId: "node-4" }, 5_000);
    const identity = createIdentity();
    const nodeNc = await bus.server.connect({ authenticator: nkeyAuthenticator(identity.signingKey), inboxPrefix: `_INBOX.${identity.principal}`, reconnect: false });
    try {
      const hs = await replicaHandshake(nodeNc, { clusterName: "e2e", replicaId: "node-4", psk, identity: identity.signingKey });
      const step = { identity, nodeId: "node-4", sessionId: hs.session.sessionId };
      const reg = await registerNode(nodeNc, { ...step, clusterName: "e2e", ticket: ticket.ticket });
      await signedRequest(adminNc, adminKey, Subjects.replicaGateway.approve, { nodeId: "node-4" }, 5_000);
      const committed = await commitNode(nodeNc, { ...step, clusterAgreementKey: reg.cluster.agreementKey });
      expect(Buffer.from(await joinNode(nodeNc, step)).equals(Buffer.from(committed.cuk))).toBe(true);
      expect((await fetchClusterHistory(adminNc, adminKey)).nodes.get("node-4")?.state).toBe("UP");
    } finally {
      await nodeNc.close();
    }
  });
});
