import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { eventually, logLineSink, startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { WATCH_CATCH_UP_MS, WatchedKv } from "./watched-kv.js";

let server: TestServer;
let nc: NatsConnection;

beforeAll(async () => {
  server = await startTestServer({ jetstream: true });
  nc = await server.connect();
});

afterAll(async () => {
  await nc?.close();
  await server?.stop();
});

function capture(): { logger: pino.Logger; lines: Array<Record<string, unknown>> } {
  const { sink, lines } = logLineSink();
  return { logger: pino({ level: "info" }, sink), lines };
}

describe("a watched KV cache", () => {
  it("vouches for a write committed before the lookup began", async () => {
    const kv = await new Kvm(nc).create("watched_fresh");
    const seen = new Map<string, string>();
    const watched = await WatchedKv.watch(kv, { logger: capture().logger, op: "t.watch", apply: (e) => void seen.set(e.key, e.string()) });
    try {
      for (let i = 0; i < 10; i++) {
        await kv.put(`k${i}`, `v${i}`);
        expect(await watched.caughtUp()).toBe(true);
        expect(seen.get(`k${i}`)).toBe(`v${i}`);
      }
    } finally {
      watched.stop();
    }
    expect(await watched.caughtUp()).toBe(false);
  });

  it("caughtUpTo: vouches for a sequence the caller read from the leader only once it is applied, and times out to false", async () => {
    const kv = await new Kvm(nc).create("watched_upto");
    const applied: number[] = [];
    const watched = await WatchedKv.watch(kv, {
      logger: capture().logger,
      op: "t.watch",
      apply: (e) => void applied.push(e.revision),
    });
    try {
      const rev = await kv.put("a", "1");
      expect(await watched.caughtUpTo(rev)).toBe(true);
      expect(watched.applied).toBeGreaterThanOrEqual(rev);
      expect(applied).toContain(rev);
      // A sequence the copy can never reach within the bound (nothing is written): false after the bound.
      const started = Date.now();
      expect(await watched.caughtUpTo(rev + 1)).toBe(false);
      expect(Date.now() - started).toBeGreaterThanOrEqual(WATCH_CATCH_UP_MS - 10);
      expect(watched.healthy).toBe(true);
    } finally {
      watched.stop();
    }
    expect(watched.healthy).toBe(false);
    expect(await watched.caughtUpTo(0)).toBe(false);
  });

  it("cannot vouch when the bucket cannot be asked for its last sequence: the caller reads the bucket", async () => {
    const other = await server.connect();
    const kv = await new Kvm(other).create("watched_status");
    const watched = await WatchedKv.watch(kv, { logger: capture().logger, op: "t.watch", apply: () => undefined });
    expect(await watched.caughtUp()).toBe(true);
    await other.close();
    expect(await watched.caughtUp()).toBe(false);
  });

  it("cannot vouch on a stream info that is not a leader's in contact with its quorum: the caller reads the bucket", async () => {
    const kv = await new Kvm(nc).create("watched_contact");
    let cluster: unknown;
    const scripted = {
      watch: (opts: Parameters<typeof kv.watch>[0]) => kv.watch(opts),
      async status() {
        const real = await kv.status();
        return cluster === undefined ? real : { ...real, streamInfo: { ...real.streamInfo, cluster } };
      },
    } as unknown as typeof kv;
    const watched = await WatchedKv.watch(scripted, { logger: capture().logger, op: "t.watch", apply: () => undefined });
    try {
      expect(await watched.caughtUp()).toBe(true);
      // A replica answering while it sees no leader (as a node resumed from a pause did).
      cluster = { replicas: [{ name: "n2", current: true, active: 1e7 }, { name: "n3", current: true, active: 1e7 }] };
      expect(await watched.caughtUp()).toBe(false);
      // A leader that has not heard from its peers for 6 s.
      cluster = { leader: "n1", replicas: [{ name: "n2", current: true, active: 6e9 }, { name: "n3", current: true, active: 6e9 }] };
      expect(await watched.caughtUp()).toBe(false);
      cluster = { leader: "n1", replicas: [{ name: "n2", current: true, active: 1e8 }, { name: "n3", current: true, active: 1e8 }] };
      expect(await watched.caughtUp()).toBe(true);
    } finally {
      watched.stop();
    }
  });

  it("an entry it cannot apply ends the watcher, logged once; it never vouches again", async () => {
    const kv = await new Kvm(nc).create("watched_apply");
    const { logger, lines } = capture();
    const watched = await WatchedKv.watch(kv, {
      logger,
      op: "t.watch",
      apply: (e) => {
        if (e.key === "bad") throw new Error("damaged value");
      },
    });
    await kv.put("good", "1");
    expect(await watched.caughtUp()).toBe(true);
    await kv.put("bad", "x");
    await eventually(
      () => lines.filter((l) => l["op"] === "t.watch").length,
      (n) => n > 0,
    );
    expect(lines.filter((l) => l["op"] === "t.watch")).toHaveLength(1);
    expect(await watched.caughtUp()).toBe(false);
    watched.stop();
  });
});
