import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { SigningKey } from "@unibus/crypto";
import { LeaderContact, LeaderOutOfContactError } from "@unibus/kit";
import { createReplicatedKv, eventually, retryUntil, startTestCluster } from "@unibus/testing";
import type { TestCluster } from "@unibus/testing";
import { DirectoryError } from "./errors.js";
import { WatchedDirectory } from "./store/watched-directory.js";

const logger = pino({ level: "silent" });

describe("the watched directory on a real 3-node cluster whose users leader is cut off", () => {
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

  it("refuses logins (directory unavailable) once the leader has lost its quorum, though its copy and the leader still answer", async () => {
    const alice = SigningKey.generate().principal;
    const users = await createReplicatedKv(conns[0]!, "users", { allow_direct: false });
    const rooms = await createReplicatedKv(conns[0]!, "rooms_by_member", { allow_direct: false });
    // A fresh R3 stream answers puts once its raft group has a leader ("no responders" until then).
    await retryUntil(() => users.put(alice, JSON.stringify({ principal: alice, handle: "a", role: "member", status: "active", addedAt: new Date(0).toISOString(), addedBy: alice })), { timeoutMs: 15_000, intervalMs: 100 });
    const leaderName = (await users.status()).streamInfo.cluster?.leader;
    const leader = cluster.nodeIndex(leaderName);
    expect(leader).toBeGreaterThanOrEqual(0);
    // Both buckets led by the node about to be cut off, so the refusal comes
    // from the leader-contact check and not from a fence that cannot cross the cut.
    await eventually(
      async () => {
        const now = (await rooms.status()).streamInfo.cluster?.leader;
        if (now !== leaderName) await conns[0]!.request("$JS.API.STREAM.LEADER.STEPDOWN.KV_rooms_by_member", JSON.stringify({ placement: { preferred: leaderName } })).catch(() => undefined);
        return now;
      },
      (now) => now === leaderName,
      { timeoutMs: 20_000, intervalMs: 500, what: "rooms_by_member led by the users leader" },
    );
    const ikvm = new Kvm(conns[leader]!);
    const directory = await WatchedDirectory.start(await ikvm.open("users", { allow_direct: false }), await ikvm.open("rooms_by_member", { allow_direct: false }), { logger, stallMs: 60_000 });
    try {
      await eventually(() => directory.lookup(alice), (e) => e?.user.status === "active", { timeoutMs: 10_000, what: "alice from the fenced copy" });

      const cut = Date.now();
      cluster.partition(leader);
      const refusedAfter = await eventually(
        () => directory.lookup(alice).then(() => 0, (err: unknown) => (err instanceof DirectoryError && err.cause instanceof LeaderOutOfContactError ? Date.now() - cut : 0)),
        (t) => t > 0,
        { timeoutMs: 15_000, intervalMs: 50, what: "the directory refusing behind a cut-off leader" },
      );
      // Within the silence bound and a heartbeat of slack: before any new leader can exist.
      expect(refusedAfter).toBeLessThan(LeaderContact.maxSilenceMs + 1_000);
      // The stale path the fence closes: the cut-off leader still answers a read of the old record.
      expect((await (await ikvm.open("users", { allow_direct: false })).get(alice))?.json()).toMatchObject({ status: "active" });
    } finally {
      directory.stop();
      cluster.heal();
    }
  }, 120_000);
});
