import { expect, it } from "vitest";
import { jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { KV } from "@nats-io/kv";
import { pino } from "pino";
import { StoredConsumer } from "@unibus/contracts";
import { createIdentity, randomBytes, toBase64Url } from "@unibus/crypto";
import { membershipCopy } from "@unibus/kit";
import { createReplicatedKv, eventually, retryUntil } from "@unibus/testing";
import { connectedClusterForSuite } from "@unibus/testing/suite";
import { KeysBucket, MembershipReadBucket, epochKey } from "./records.js";
import type { EpochRecord } from "./records.js";
import { consumeMemberRemovals } from "./share-redaction.js";

// On an R3 cluster the removal consumer is as durable as the bucket it reads
// (three copies of its position), and a removal is still acted on after the
// node leading the consumer is gone.
const silent = pino({ level: "silent" });
const { stream, durable } = StoredConsumer.keys.shareDeletion;

const bus = connectedClusterForSuite(3);

it("the consumer is R3 like the bucket, and removals are acted on across a consumer-leader loss", { timeout: 120_000 }, async () => {
  // A cluster just past its meta election may still refuse a create for a moment.
  const create = (name: string): Promise<KV> => createReplicatedKv(bus.conns[0]!, name, { allow_direct: false });
  const members = await create(MembershipReadBucket.members);
  const roomKeys = await create(KeysBucket.roomKeys);
  await create(MembershipReadBucket.users);
  const roomId = "roomr3000000";
  const principals = Array.from({ length: 3 }, () => createIdentity().principal).sort();
  const memberRecord = (p: string): string => JSON.stringify({ roomId, principal: p, role: "member", addedAt: new Date().toISOString(), addedBy: p });
  // A fresh R3 stream answers puts once its raft group has a leader ("no responders" until then).
  for (const p of principals) await retryUntil(() => members.put(`${roomId}.${p}`, memberRecord(p)), { timeoutMs: 15_000, intervalMs: 100 });
  const record: EpochRecord = {
    roomId,
    epoch: 1,
    distributor: principals[0]!,
    signature: toBase64Url(randomBytes(64)),
    shares: principals.map((principal) => ({ principal, sealedShare: toBase64Url(randomBytes(120)) })),
    createdAt: new Date().toISOString(),
    logSeq: 1,
    logHead: toBase64Url(randomBytes(32)),
  };
  await retryUntil(() => roomKeys.put(epochKey(roomId, 1), JSON.stringify(record)), { timeoutMs: 15_000, intervalMs: 100 });
  const sealed = async (): Promise<string[]> =>
    (await roomKeys.get(epochKey(roomId, 1)))!
      .json<EpochRecord>()
      .shares.filter((s) => s.sealedShare !== undefined)
      .map((s) => s.principal);

  // One keys replica per node, each over its own connection and buckets.
  const opened = await Promise.all(
    bus.conns.map(async (nc) => {
      const k = new Kvm(nc);
      return { roomKeys: await k.open(KeysBucket.roomKeys), membership: { users: await k.open(MembershipReadBucket.users), members: await k.open(MembershipReadBucket.members) } };
    }),
  );
  const replicas = await Promise.all(bus.conns.map((nc, i) => consumeMemberRemovals({ js: jetstream(nc), ...opened[i]!, logger: silent, delayMs: 100 })));
  try {
    const jsm = await jetstream(bus.conns[0]!).jetstreamManager();
    // Three copies: the leader and two peers (the peer list fills in as they report).
    await eventually(() => jsm.consumers.info(stream, durable), (ci) => ci.cluster?.replicas?.length === 2, { timeoutMs: 15_000, intervalMs: 100, what: "an R3 consumer" });
    await members.delete(`${roomId}.${principals[2]!}`);
    await eventually(sealed, (s) => s.length === 2, { timeoutMs: 20_000, intervalMs: 100, what: "the first removal acted on" });

    // Stop the node leading the consumer; the replicas on the other nodes carry on.
    const leaderName = (await jsm.consumers.info(stream, durable)).cluster?.leader;
    const leader = bus.cluster.nodeIndex(leaderName);
    expect(leader).toBeGreaterThanOrEqual(0);
    await replicas[leader]!.stop();
    await bus.cluster.stopNode(leader);
    const survivor = opened[(leader + 1) % 3]!;
    await retryUntil(() => survivor.membership.members.delete(`${roomId}.${principals[1]!}`), { timeoutMs: 30_000, intervalMs: 200 });
    await eventually(
      async () => (await survivor.roomKeys.get(epochKey(roomId, 1)).catch(() => null))?.json<EpochRecord>().shares.filter((s) => s.sealedShare !== undefined).length,
      (n) => n === 1,
      { timeoutMs: 45_000, intervalMs: 200, what: "the removal after the leader loss acted on" },
    );
  } finally {
    await Promise.all(replicas.map((r) => r.stop()));
    for (const o of opened) membershipCopy(o.membership.members).stop();
  }
});
