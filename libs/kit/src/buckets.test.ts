import { Writable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { BucketSetupError, openBuckets, openExistingBuckets } from "./buckets.js";

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
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split("\n")) if (line.trim() !== "") lines.push(JSON.parse(line));
      done();
    },
  });
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
    const warning = lines.find((l) => l["bucket"] === "drifted" && l["level"] === 40);
    expect(warning?.["differences"]).toEqual(["history: want 3, have 1"]);
  });

  it("fails at once, without retrying, when a standalone server cannot give the replicas asked for", async () => {
    const started = Date.now();
    await expect(openBuckets(jetstream(nc), [{ name: "replicated", replicas: 3 }], { budgetMs: 20_000 })).rejects.toBeInstanceOf(BucketSetupError);
    expect(Date.now() - started).toBeLessThan(5_000);
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

describe("openExistingBuckets", () => {
  it("waits for a bucket another service creates later, then returns it bound to the real stream", async () => {
    const { logger, lines } = capture();
    const opening = openExistingBuckets(jetstream(nc), ["late_owned"], { budgetMs: 20_000, initialDelayMs: 50, logger });
    // Create it only once the opener has observably failed at least once.
    const end = Date.now() + 10_000;
    while (!lines.some((l) => l["bucket"] === "late_owned" && l["msg"] === "bucket set-up failed; retrying")) {
      if (Date.now() > end) throw new Error("openExistingBuckets never retried");
      await new Promise((r) => setTimeout(r, 20));
    }
    const created = await new Kvm(jetstream(nc)).create("late_owned", { history: 2 });
    await created.put("k", "v");
    const { late_owned } = await opening;
    expect((await late_owned.get("k"))?.string()).toBe("v");
    expect((await late_owned.status()).history).toBe(2);
  });

  it("gives up with BucketSetupError when the bucket never appears, and never creates it", async () => {
    await expect(openExistingBuckets(jetstream(nc), ["never_made"], { budgetMs: 600, initialDelayMs: 100 })).rejects.toThrow(/bucket never_made: not ready within 600 ms/);
    const names: string[] = [];
    for await (const s of new Kvm(jetstream(nc)).list()) names.push(s.bucket);
    expect(names).not.toContain("never_made");
  });
});
