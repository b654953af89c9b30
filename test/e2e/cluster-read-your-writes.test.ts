// Read-your-writes for security state on a real 3-node cluster (docs/design.md
// "Reads that decide access"): a revoke or a room removal acknowledged while
// one replica is paused is seen by the very next login through every node,
// the paused one included the moment it resumes (when it is a lagging
// follower). One callout runs per node, connected to that node only, so each
// server's logins are decided where a replica-local read would be stale.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import type { UnibusClient } from "@unibus/sdk";
import { waitForRoomAccess } from "@unibus/sdk";
import { startTestBus } from "@unibus/testbus";
import type { TestBus } from "@unibus/testbus";
import { eventually } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";

/** Every bucket whose reads decide access or replay: none may allow direct gets. */
// The logs are written first by every users and rooms mutation (they are the
// source of truth), so a paused node must lead none of them either.
const SECURITY_BUCKETS = ["users", "users_log", "rooms", "room_log", "members", "rooms_by_member", "nonces"] as const;

describe("security reads on a 3-node cluster reflect every acknowledged write", () => {
  let bus: TestBus;
  let operator: NatsConnection;
  let nodes: TestServer[];
  const apiRequests = { direct: 0, leader: 0 };

  beforeAll(async () => {
    bus = await startTestBus({ nodes: 3, operator: true });
    nodes = bus.cluster!.servers;
    operator = await bus.operatorConnection();
    // Copies of every KV read request in the app account, from any node.
    operator.subscribe("$JS.API.DIRECT.GET.>", { callback: (_e, m) => void (m.subject.startsWith("$JS.API.DIRECT.GET.KV_") && apiRequests.direct++) });
    operator.subscribe("$JS.API.STREAM.MSG.GET.*", { callback: (_e, m) => void (m.subject.startsWith("$JS.API.STREAM.MSG.GET.KV_") && apiRequests.leader++) });
    await operator.flush();
  }, 120_000);

  afterAll(async () => {
    await bus?.stop();
  });

  const nodeName = (i: number): string => bus.cluster!.nodeNames[i]!;

  /**
   * A node to pause that only follows: not node 0 (where the services and
   * admin connect), not the meta leader, and, after stepdowns, leader of no
   * security bucket. Pausing a leader tests elections, not stale reads.
   */
  async function pausableFollower(): Promise<number> {
    const meta = await bus.cluster!.waitForMetaLeader();
    const f = [1, 2].find((n) => nodeName(n) !== meta)!;
    const jsm = await jetstreamManager(operator, { checkAPI: false });
    const deadline = Date.now() + 30_000;
    for (const bucket of SECURITY_BUCKETS) {
      // Each read asks a leader on `f` to step down; the next reads show where the lead went.
      await eventually(
        async () => {
          const leader = await jsm.streams.info(`KV_${bucket}`).then((i) => i.cluster?.leader, () => undefined);
          if (leader === nodeName(f)) await operator.request(`$JS.API.STREAM.LEADER.STEPDOWN.KV_${bucket}`, "", { timeout: 5_000 }).catch(() => undefined);
          return leader;
        },
        (leader) => leader !== undefined && leader !== nodeName(f),
        { timeoutMs: Math.max(0, deadline - Date.now()), intervalMs: 100, what: `KV_${bucket} led by another node than ${nodeName(f)}` },
      );
    }
    return f;
  }

  /**
   * Waits until every security bucket has a leader and all its replicas are
   * current: a resumed node can call an election, and a request during one
   * is refused (503, closed), which is not what these tests look at.
   */
  async function settled(): Promise<void> {
    // No account-info probe up front: right after a resume the JetStream API
    // may not answer for a few seconds, which the loop below waits out.
    const jsm = await jetstreamManager(operator, { checkAPI: false });
    const deadline = Date.now() + 30_000;
    for (const bucket of SECURITY_BUCKETS) {
      await eventually(
        () => jsm.streams.info(`KV_${bucket}`).then((i) => i.cluster, () => undefined),
        (cluster) => cluster?.leader !== undefined && cluster.replicas?.length === 2 && cluster.replicas.every((r) => r.current && r.offline !== true),
        { timeoutMs: Math.max(0, deadline - Date.now()), intervalMs: 100, what: `KV_${bucket} settled` },
      );
    }
  }

  /** Runs `during` with node `i` stopped (SIGSTOP), then resumes it whatever happens. */
  async function withPaused<T>(i: number, during: () => Promise<T>): Promise<T> {
    nodes[i]!.kill("SIGSTOP");
    try {
      return await during();
    } finally {
      nodes[i]!.kill("SIGCONT");
    }
  }

  /** A login through `node`; a refusal names the step, so a failure says which login it was. */
  async function login(identity: Parameters<TestBus["connectAs"]>[0], node: TestServer, step: string): Promise<UnibusClient> {
    try {
      return await bus.connectAs(identity, node.url);
    } catch (err) {
      throw new Error(`${step}: login through ${node.url} refused: ${(err as Error).message}`, { cause: err });
    }
  }

  /**
   * The first login through `node` that is accepted within 15 s. A refusal
   * is closed (no grant at all): around a pause the callout's directory read
   * can fail (503) and deny, and the property under test is only that no
   * accepted login carries a room it should not.
   */
  async function firstAccepted(identity: Parameters<TestBus["connectAs"]>[0], node: TestServer, step: string): Promise<UnibusClient> {
    const deadline = Date.now() + 15_000;
    for (;;) {
      try {
        return await bus.connectAs(identity, node.url);
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`${step}: every login through ${node.url} refused: ${(err as Error).message}`, { cause: err });
      }
    }
  }

  /** True when the connection may subscribe to the room (the callout granted it). */
  async function roomGranted(client: UnibusClient, roomId: string): Promise<boolean> {
    const sub = client.nc.subscribe(`unibus.room.${roomId}.m`);
    let refused = false;
    void sub.closed.then(
      (e) => void (refused = e !== undefined),
      () => void (refused = true),
    );
    await client.nc.flush();
    // The closed promise settles on a later microtask than the error that closed it.
    await new Promise((r) => setImmediate(r));
    refused ||= sub.isClosed();
    if (!sub.isClosed()) sub.unsubscribe();
    return !refused;
  }

  it("creates every security bucket R3 with direct get off", async () => {
    const jsm = await jetstreamManager(operator);
    for (const bucket of SECURITY_BUCKETS) {
      const { config } = await jsm.streams.info(`KV_${bucket}`);
      expect({ bucket, replicas: config.num_replicas, allow_direct: config.allow_direct }).toEqual({ bucket, replicas: 3, allow_direct: false });
    }
  });

  it("a revoke acknowledged while a follower is paused refuses the next login through every node", async () => {
    await settled();
    const eve = await bus.addMember("eve");
    const paused = await pausableFollower();
    // Control: before the revoke eve logs in through every node.
    for (const node of nodes) await (await bus.connectAs(eve.identity, node.url)).close();

    await withPaused(paused, async () => {
      await bus.admin.users.revoke(eve.principal);
      for (const [i, node] of nodes.entries()) {
        if (i !== paused) await expect(bus.connectAs(eve.identity, node.url)).rejects.toThrow(/authoriz/i);
      }
    });
    // Right after SIGCONT the resumed node is a follower still catching up.
    await expect(bus.connectAs(eve.identity, nodes[paused]!.url)).rejects.toThrow(/authoriz/i);
  }, 90_000);

  it("a room removal acknowledged while a follower is paused leaves the room out of the next login's grant on every node", async () => {
    await settled();
    const owner = await bus.addMember("owner");
    const guest = await bus.addMember("guest");
    const { room } = await owner.client.rooms.create("ryw", { persist: false, encrypt: false });
    // Creating the room kicks the owner so it logs in with the grant; wait for that.
    await waitForRoomAccess(owner.client, room.id);
    await owner.client.rooms.invite(room.id, guest.principal);
    // Control: once invited, a login through every node is granted the room.
    for (const node of nodes) {
      const c = await login(guest.identity, node, "control");
      await waitForRoomAccess(c, room.id);
      expect(await roomGranted(c, room.id)).toBe(true);
      await c.close();
    }

    const paused = await pausableFollower();
    await withPaused(paused, async () => {
      await owner.client.rooms.remove(room.id, guest.principal);
      for (const [i, node] of nodes.entries()) {
        if (i === paused) continue;
        const c = await firstAccepted(guest.identity, node, "while paused");
        expect(await roomGranted(c, room.id)).toBe(false);
        await c.close();
      }
    });
    // The first login the resumed node accepts must not carry the room.
    const c = await firstAccepted(guest.identity, nodes[paused]!, "after resume");
    expect(await roomGranted(c, room.id)).toBe(false);
    await c.close();
  }, 90_000);

  it("no KV read anywhere used a direct get: every read above went to a stream leader", async () => {
    await operator.flush();
    expect(apiRequests.leader).toBeGreaterThan(0);
    expect(apiRequests.direct).toBe(0);
  });
});
