// A bucket whose stream has no leader must be answered with a coded refusal,
// not silence. On a real 3-node cluster the keys service keeps `room_keys` on
// one node (one replica), that node is killed, and a client with the default
// request timeout asks for its share: the leader read can never succeed, and
// the service must say so (503) before the client gives up. With the
// JetStream default of 5 s per call the refusal came just after the client's
// own 5 s, so `unibus check --cluster --chaos` saw "the bus service did not
// answer in time" for as long as the node stayed down.
import { performance } from "node:perf_hooks";
import { jetstreamManager } from "@nats-io/jetstream";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createKeysService } from "@unibus/keys";
import type { RunningKeysService } from "@unibus/keys";
import { ErrorCode, UnibusError, connect, prepareRoomKeys } from "@unibus/sdk";
import type { UnibusClient } from "@unibus/sdk";
import { startTestBus } from "@unibus/testbus";
import type { TestBus } from "@unibus/testbus";
import { eventually } from "@unibus/testing";

/** The client's default request timeout (the SDK's), the bound the refusal must beat. */
const CLIENT_TIMEOUT_MS = 5_000;

describe("a leaderless bucket on a 3-node cluster", () => {
  let bus: TestBus;
  let keys: RunningKeysService | undefined;
  let client: UnibusClient | undefined;

  beforeAll(async () => {
    bus = await startTestBus({ nodes: 3, cluster: { routeTls: true }, operator: true });
  }, 120_000);

  afterAll(async () => {
    await client?.close();
    await keys?.stop();
    await bus?.stop();
  });

  it("keys answers shares.get with 503 within the client's timeout while room_keys has no replica left", async () => {
    const cluster = bus.cluster!;
    const logger = pino({ level: "silent" });
    // A first keys service places the one-replica buckets; the node holding
    // `room_keys` is the victim, and the service under test is pinned to another.
    const placing = await createKeysService(await bus.serviceConnection("keys"), { logger });
    const { room } = await bus.admin.rooms.create("leaderless", { persist: false, encrypt: true });
    await prepareRoomKeys(bus.admin, bus.adminIdentity, room.id);
    await placing.stop();
    const jsm = await jetstreamManager(await bus.operatorConnection());
    const info = await jsm.streams.info("KV_room_keys");
    expect(info.config.num_replicas).toBe(1);
    const victim = cluster.nodeIndex(info.cluster?.leader);
    expect(victim).toBeGreaterThanOrEqual(0);
    const survivor = cluster.servers[(victim + 1) % 3]!;
    keys = await createKeysService(await bus.serviceConnection("keys", survivor), { logger });
    client = await connect({ url: survivor.url, identity: bus.adminIdentity });
    // Served while the node is up: the refusal below is the outage, nothing else.
    expect((await client.keys.getShare(room.id)).roomId).toBe(room.id);

    await cluster.crashNode(victim);
    // The three-replica buckets the request also reads re-elect within
    // seconds; wait for a leader of each so only `room_keys` is missing.
    const survivorJsm = await jetstreamManager(await bus.serviceConnection("membership", survivor), { checkAPI: false });
    for (const stream of ["KV_users", "KV_members"]) {
      await eventually(() => survivorJsm.streams.info(stream).then((i) => i.cluster?.leader, () => undefined), (l) => l !== undefined && l !== info.cluster?.leader, {
        timeoutMs: 30_000,
        intervalMs: 100,
        what: `${stream} has a leader`,
      });
    }

    const answeredMs: number[] = [];
    for (let ask = 0; ask < 3; ask++) {
      const t0 = performance.now();
      const err = await client.keys.getShare(room.id).then(
        () => new Error("answered with a share from a stream with no replica"),
        (e: unknown) => e,
      );
      const ms = performance.now() - t0;
      expect(err, String(err)).toBeInstanceOf(UnibusError);
      expect((err as UnibusError).code).toBe(ErrorCode.Unavailable);
      expect(ms).toBeLessThan(CLIENT_TIMEOUT_MS);
      answeredMs.push(Math.round(ms));
    }
    console.info(`shares.get refused with 503 after ${answeredMs.join(", ")} ms (client timeout ${CLIENT_TIMEOUT_MS} ms)`);
  }, 120_000);
});
