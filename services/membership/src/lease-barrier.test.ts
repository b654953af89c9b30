import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { KV } from "@nats-io/kv";
import { pino } from "pino";
import { CalloutLease, StoredBucket, leaseBarrierSubject } from "@unibus/contracts";
import { counterValue, startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { LeaseBarrier, leaseBarrierMetrics } from "./store/lease-barrier.js";

const logger = pino({ level: "silent" });
const LEASES = StoredBucket.authCallout.leases;

describe("membership's lease barrier after a directory write (real nats-server)", () => {
  let server: TestServer;
  let nc: NatsConnection;

  beforeAll(async () => {
    server = await startTestServer();
    nc = await server.connect();
  });

  afterAll(async () => {
    await nc?.close();
    await server?.stop();
  });

  async function registry(): Promise<KV> {
    return new Kvm(nc).create(LEASES, { allow_direct: false });
  }

  async function dropRegistry(): Promise<void> {
    await (await jetstreamManager(nc)).streams.delete(`KV_${LEASES}`);
  }

  it("no registry bucket (no callout ever leased): no wait, nothing asked", async () => {
    const barrier = new LeaseBarrier(nc, { logger });
    try {
      const started = performance.now();
      await barrier.settle({ users: 5 });
      expect(performance.now() - started).toBeLessThan(500);
      expect(barrier.stats).toEqual({ settled: 1, answered: 0, waitedOut: 0, registryUnread: 0 });
    } finally {
      barrier.stop();
    }
  });

  it("a listed replica that answers: the write waits for its answer, which names the write's sequences", async () => {
    const kv = await registry();
    const seen: unknown[] = [];
    const sub = nc.subscribe(leaseBarrierSubject("r1"), {
      callback: (_err, msg) => {
        seen.push(msg.json());
        msg.respond(JSON.stringify({ applied: true }));
      },
    });
    await kv.put("r1", JSON.stringify({ replica: "r1", barrier: leaseBarrierSubject("r1"), durationMs: CalloutLease.durationMs }));
    const barrier = new LeaseBarrier(nc, { logger });
    const before = { writes: await counterValue(leaseBarrierMetrics.settled), answered: await counterValue(leaseBarrierMetrics.outcomes, { result: "answered" }) };
    try {
      const started = performance.now();
      await barrier.settle({ rooms_by_member: 42 });
      expect(performance.now() - started).toBeLessThan(1_000);
      expect(seen).toEqual([{ users: 0, rooms_by_member: 42 }]);
      expect(barrier.stats).toMatchObject({ answered: 1, waitedOut: 0 });
      // The same in /metrics.
      expect(await counterValue(leaseBarrierMetrics.settled)).toBe(before.writes + 1);
      expect(await counterValue(leaseBarrierMetrics.outcomes, { result: "answered" })).toBe(before.answered + 1);
    } finally {
      sub.unsubscribe();
      barrier.stop();
      await dropRegistry();
    }
  });

  it("a listed replica that does not answer: the write waits its lease out once; a record unchanged for a lease's length costs nothing", async () => {
    const kv = await registry();
    // A short lease, so the test waits it out quickly; nobody answers its barrier.
    await kv.put("gone", JSON.stringify({ replica: "gone", barrier: leaseBarrierSubject("gone"), durationMs: 400 }));
    const barrier = new LeaseBarrier(nc, { logger });
    try {
      const started = performance.now();
      await barrier.settle({ users: 1 });
      const waited = performance.now() - started;
      expect(waited).toBeGreaterThanOrEqual(390);
      expect(waited).toBeLessThan(2_000);
      expect(barrier.stats).toMatchObject({ answered: 0, waitedOut: 1 });
      const again = performance.now();
      await barrier.settle({ users: 2 });
      expect(performance.now() - again).toBeLessThan(300);
      expect(barrier.stats.waitedOut).toBe(1);
      // Renewed (a new revision): waited for again.
      await kv.put("gone", JSON.stringify({ replica: "gone", barrier: leaseBarrierSubject("gone"), durationMs: 400 }));
      const renewed = performance.now();
      await barrier.settle({ users: 3 });
      expect(performance.now() - renewed).toBeGreaterThanOrEqual(390);
    } finally {
      barrier.stop();
      await dropRegistry();
    }
  });

  it("a record that does not parse may still be a lease: the longest lease is waited out", async () => {
    const kv = await registry();
    await kv.put("odd", "not json");
    const barrier = new LeaseBarrier(nc, { logger, maxLeaseMs: 400 });
    try {
      const started = performance.now();
      await barrier.settle({ users: 1 });
      expect(performance.now() - started).toBeGreaterThanOrEqual(390);
    } finally {
      barrier.stop();
      await dropRegistry();
    }
  });

  it("a registry that cannot be read (its fence fails): the write is not refused but waits the longest lease out", async () => {
    await registry();
    const barrier = new LeaseBarrier(nc, { logger, maxLeaseMs: 600 });
    try {
      await barrier.settle({ users: 1 });
      expect(barrier.stats.registryUnread).toBe(0);
      // The bucket goes away under the open copy: its fence now fails.
      await dropRegistry();
      const unreadBefore = await counterValue(leaseBarrierMetrics.outcomes, { result: "registry_unread" });
      const started = performance.now();
      await barrier.settle({ users: 2 });
      expect(performance.now() - started).toBeGreaterThanOrEqual(590);
      expect(barrier.stats.registryUnread).toBe(1);
      expect(await counterValue(leaseBarrierMetrics.outcomes, { result: "registry_unread" })).toBe(unreadBefore + 1);
    } finally {
      barrier.stop();
    }
  });
});
