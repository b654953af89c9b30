import { Writable } from "node:stream";
import { afterAll, beforeAll, expect, it } from "vitest";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { eventually, startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { WatchedKv } from "./watched-kv.js";

let server: TestServer;
let nc: NatsConnection;
let kv: KV;

beforeAll(async () => {
  server = await startTestServer({ jetstream: true });
  nc = await server.connect();
  kv = await new Kvm(jetstream(nc)).create("watched", { history: 1, allow_direct: false });
});

afterAll(async () => {
  await nc?.close();
  await server?.stop();
});

it("a watcher whose consumer is gone is replaced: the copy catches up with a write made meanwhile, never vouching for a stale copy", async () => {
  await kv.put("a", "1");
  const copy = new Map<string, string>();
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split("\n")) if (line.trim() !== "") lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  // 1 s to call a stall, well before nats.js's own ordered-consumer reset
  // (two missed 5 s heartbeats), so the recovery seen here is the replacement.
  const watch = new WatchedKv(kv, {
    headersOnly: false,
    op: "watched.watch",
    fallback: "reading the bucket directly",
    logger: pino({ level: "warn" }, sink),
    stallMs: 1_000,
    reset: () => copy.clear(),
    apply: (e) => (e.operation === "PUT" ? copy.set(e.key, e.string()) : copy.delete(e.key)),
  });
  try {
    await watch.start();
    await eventually(() => watch.caughtUp(), (ok) => ok, { what: "first catch-up" });
    expect([...copy]).toEqual([["a", "1"]]);

    // The stall seen after a node loss, made on purpose: the consumer under
    // the watch disappears, so nothing more is delivered to it.
    const jsm = await jetstreamManager(nc);
    for await (const c of jsm.consumers.list("KV_watched")) await jsm.consumers.delete("KV_watched", c.name);
    await kv.put("b", "2");
    // Never vouches while it misses "b": every answer is either behind (false) or complete.
    await eventually(
      async () => {
        const ok = await watch.caughtUp();
        if (ok) expect(copy.get("b")).toBe("2");
        return ok;
      },
      (ok) => ok,
      { timeoutMs: 4_000, intervalMs: 100, what: "the replaced watcher caught up" },
    );
    expect([...copy].sort()).toEqual([["a", "1"], ["b", "2"]]);
    expect(lines.some((l) => l.op === "watched.watch" && l.msg === "watcher stalled; starting a new one")).toBe(true);
  } finally {
    watch.stop();
  }
});
