import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsConnection } from "@nats-io/transport-node";
import { Kvm } from "@nats-io/kv";
import type { KV } from "@nats-io/kv";
import { pino } from "pino";
import { CalloutLease, StoredBucket } from "@unibus/contracts";
import { SigningKey } from "@unibus/crypto";
import { LeaseBarrier } from "@unibus/membership";
import { eventually, startTestServer, storedUser } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";

const logger = pino({ level: "silent" });

interface Answer {
  status: string | null;
  fromLease: boolean;
  leaseHeld: boolean;
}

describe("a callout replica frozen (SIGSTOP) past its lease, then resumed", () => {
  const alice = SigningKey.generate().principal;
  let server: TestServer;
  let nc: NatsConnection;
  let users: KV;
  let child: ChildProcess | undefined;

  beforeAll(async () => {
    server = await startTestServer();
    nc = await server.connect();
    const kvm = new Kvm(nc);
    users = await kvm.create(StoredBucket.membership.users, { allow_direct: false });
    await kvm.create(StoredBucket.membership.roomsByMember, { allow_direct: false });
    await users.put(alice, JSON.stringify(storedUser(alice, "active")));
    child = spawn(process.execPath, ["--import", "tsx", fileURLToPath(new URL("./lease-replica-child.ts", import.meta.url))], { stdio: ["pipe", "pipe", "inherit"] });
    child.stdin!.end(JSON.stringify({ url: server.url }));
    const [line] = (await once(child.stdout!, "data")) as [Buffer];
    expect(line.toString()).toContain("ready");
  });

  afterAll(async () => {
    if (child !== undefined && child.exitCode === null) {
      child.kill("SIGCONT");
      child.kill("SIGKILL");
    }
    await nc?.close();
    await server?.stop();
  });

  const lookup = async (): Promise<Answer> => (await nc.request("test.replica.lookup", alice, { timeout: 10_000 })).json<Answer>();

  it("waits its lease out for a revoke, and on resuming answers nothing from memory", async () => {
    // Answered from memory under the lease while it runs.
    await eventually(lookup, (a) => a.status === "active" && a.fromLease, { what: "a lookup answered under the lease" });
    // Its users watch stops applying anything: from here only the lease could
    // make it answer "active" after the revoke.
    await nc.request("test.replica.stall", "", { timeout: 5_000 });
    child!.kill("SIGSTOP");
    try {
      const barrier = new LeaseBarrier(nc, { logger });
      const started = performance.now();
      const seq = await users.put(alice, JSON.stringify(storedUser(alice, "revoked")));
      await barrier.settle({ users: seq });
      const waited = performance.now() - started;
      barrier.stop();
      // Frozen, it cannot answer the barrier: the write waited for its lease to end, no longer than a lease.
      expect(barrier.stats).toMatchObject({ answered: 0, waitedOut: 1 });
      expect(waited).toBeLessThan(CalloutLease.durationMs + 1_000);
    } finally {
      child!.kill("SIGCONT");
    }
    // The first request it handles after resuming: its lease ran out while
    // it was frozen (the monotonic clock ran on), so it takes a fence, and
    // its stalled copy is refused behind it; never "active" from memory.
    const first = await lookup();
    expect(first.fromLease).toBe(false);
    expect(first.status).not.toBe("active");
    expect(first.leaseHeld).toBe(false);
  }, 60_000);
});
