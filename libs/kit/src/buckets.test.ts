import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { JetStreamApiError, jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { eventually, logLineSink, startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { BucketSetupError, isPermanentSetupError, openBuckets, openExistingBuckets } from "./buckets.js";

let server: TestServer;
let nc: NatsConnection;

beforeAll(async () => {
  server = await startTestServer({ jetstream: true });
  nc = await server.connect();
});

afterAll(async () => {
  await server?.stop();
});

function capture(): { logger: pino.Logger; lines: Array<Record<string, unknown>> } {
  const { sink, lines } = logLineSink();
  return { logger: pino({ level: "debug" }, sink), lines };
}

describe("openBuckets", () => {
  it("creates missing buckets with the requested limits", async () => {
    const { users } = await openBuckets(jetstream(nc), [{ name: "users", history: 5, ttl: 0 }], { budgetMs: 5_000 });
    const status = await users.status();
    expect(status.history).toBe(5);
    expect(status.replicas).toBe(1);
  });

  it("opens an existing bucket and warns when its settings differ from the spec", async () => {
    await new Kvm(jetstream(nc)).create("drifted", { history: 1, ttl: 0 });
    const { logger, lines } = capture();
    const { drifted } = await openBuckets(jetstream(nc), [{ name: "drifted", history: 3 }], { budgetMs: 5_000, logger });
    expect((await drifted.status()).history).toBe(1);
    const warning = lines.find((l) => l["bucket"] === "drifted" && l["level"] === 40 && "differences" in l);
    expect(warning?.["differences"]).toEqual(["history: want 3, have 1"]);
  });

  it("creates buckets with direct get off, so every read goes to the stream leader", async () => {
    const { leader_only } = await openBuckets(jetstream(nc), [{ name: "leader_only" }], { budgetMs: 5_000 });
    const jsm = await jetstream(nc).jetstreamManager();
    expect((await jsm.streams.info("KV_leader_only")).config.allow_direct).toBe(false);
    await leader_only.put("k", "v");
    const seen = await countReadRequests("KV_leader_only", async () => {
      expect((await leader_only.get("k"))?.string()).toBe("v");
    });
    expect(seen).toEqual({ direct: 0, leader: 1 });
  });

  it("switches an existing bucket that allows direct gets to leader reads, and says so", async () => {
    await new Kvm(jetstream(nc)).create("was_direct", { allow_direct: true });
    const jsm = await jetstream(nc).jetstreamManager();
    expect((await jsm.streams.info("KV_was_direct")).config.allow_direct).toBe(true);
    const { logger, lines } = capture();
    const { was_direct } = await openBuckets(jetstream(nc), [{ name: "was_direct" }], { budgetMs: 5_000, logger });
    expect((await jsm.streams.info("KV_was_direct")).config.allow_direct).toBe(false);
    expect(lines.some((l) => l["bucket"] === "was_direct" && l["msg"] === "bucket allowed direct gets from any replica; switched to leader reads")).toBe(true);
    await was_direct.put("k", "v");
    const seen = await countReadRequests("KV_was_direct", async () => {
      expect((await was_direct.get("k"))?.string()).toBe("v");
    });
    expect(seen).toEqual({ direct: 0, leader: 1 });
  });

  it("fails at once, without retrying, when a standalone server cannot give the replicas asked for", async () => {
    const started = Date.now();
    await expect(openBuckets(jetstream(nc), [{ name: "replicated", replicas: 3 }], { budgetMs: 20_000 })).rejects.toBeInstanceOf(BucketSetupError);
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it("retries a cluster's 'no suitable peers' (a peer not up yet) but not a standalone server's replica refusal", () => {
    const apiError = (err_code: number, description: string) => new JetStreamApiError({ code: 400, err_code, description });
    expect(isPermanentSetupError(apiError(10005, "no suitable peers for placement, peer offline"))).toBe(false);
    expect(isPermanentSetupError(apiError(10074, "replicas > 1 not supported in non-clustered mode"))).toBe(true);
    expect(isPermanentSetupError(apiError(10052, "stream name is invalid"))).toBe(true);
    expect(isPermanentSetupError(new Error("timeout"))).toBe(false);
  });

  it("retries within the budget while JetStream does not answer, then gives up with BucketSetupError", async () => {
    const plain = await startTestServer({ jetstream: false });
    try {
      const conn = await plain.connect();
      const { logger, lines } = capture();
      const started = Date.now();
      await expect(openBuckets(jetstream(conn, { timeout: 300 }), [{ name: "nonces" }], { budgetMs: 1_500, initialDelayMs: 100, logger })).rejects.toThrow(
        /bucket nonces: not ready within 1500 ms/,
      );
      expect(Date.now() - started).toBeLessThan(6_000);
      expect(lines.filter((l) => l["msg"] === "bucket set-up failed; retrying").length).toBeGreaterThanOrEqual(2);
    } finally {
      await plain.stop();
    }
  });
});

/** Counts the direct-get and leader-get requests `stream` receives while `fn` runs. */
async function countReadRequests(stream: string, fn: () => Promise<void>): Promise<{ direct: number; leader: number }> {
  const seen = { direct: 0, leader: 0 };
  const direct = nc.subscribe(`$JS.API.DIRECT.GET.${stream}.>`, { callback: () => void seen.direct++ });
  const directBare = nc.subscribe(`$JS.API.DIRECT.GET.${stream}`, { callback: () => void seen.direct++ });
  const leader = nc.subscribe(`$JS.API.STREAM.MSG.GET.${stream}`, { callback: () => void seen.leader++ });
  try {
    await nc.flush();
    await fn();
    await nc.flush();
  } finally {
    for (const sub of [direct, directBare, leader]) sub.unsubscribe();
  }
  return seen;
}

describe("openExistingBuckets", () => {
  it("leaves a later openBuckets in the same process able to create buckets (one process may host several services)", async () => {
    await new Kvm(jetstream(nc)).create("owned_first");
    await openExistingBuckets(jetstream(nc), ["owned_first"], { budgetMs: 5_000 });
    // Before the fix the opener's options object came back marked bind-only
    // and every later create in the process only tried to bind.
    const created = await openBuckets(jetstream(nc), [{ name: "created_after_open" }], { budgetMs: 3_000 });
    await created.created_after_open.put("k", "v");
    expect((await created.created_after_open.get("k"))?.string()).toBe("v");
  });

  it("waits for a bucket another service creates later, then returns it bound to the real stream", async () => {
    const { logger, lines } = capture();
    const opening = openExistingBuckets(jetstream(nc), ["late_owned"], { budgetMs: 20_000, initialDelayMs: 50, logger });
    // Create it only once the opener has observably failed at least once.
    await eventually(
      () => lines.some((l) => l["bucket"] === "late_owned" && l["msg"] === "bucket set-up failed; retrying"),
      (retried) => retried,
      { timeoutMs: 10_000, what: "openExistingBuckets retrying" },
    );
    const created = await new Kvm(jetstream(nc)).create("late_owned", { history: 2 });
    await created.put("k", "v");
    const { late_owned } = await opening;
    expect((await late_owned.get("k"))?.string()).toBe("v");
    expect((await late_owned.status()).history).toBe(2);
  });

  it("reads through the stream leader even while the owner's bucket still allows direct gets", async () => {
    const owned = await new Kvm(jetstream(nc)).create("owned_direct", { allow_direct: true });
    await owned.put("k", "v");
    const { owned_direct } = await openExistingBuckets(jetstream(nc), ["owned_direct"], { budgetMs: 5_000 });
    const seen = await countReadRequests("KV_owned_direct", async () => {
      expect((await owned_direct.get("k"))?.string()).toBe("v");
    });
    expect(seen).toEqual({ direct: 0, leader: 1 });
  });

  it("gives up with BucketSetupError when the bucket never appears, and never creates it", async () => {
    await expect(openExistingBuckets(jetstream(nc), ["never_made"], { budgetMs: 600, initialDelayMs: 100 })).rejects.toThrow(/bucket never_made: not ready within 600 ms/);
    const names: string[] = [];
    for await (const s of new Kvm(jetstream(nc)).list()) names.push(s.bucket);
    expect(names).not.toContain("never_made");
  });
});
