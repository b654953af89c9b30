import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsConnection } from "@nats-io/transport-node";
import { ErrorReason, UnibusError } from "@unibus/contracts";
import { SigningKey, randomBytes } from "@unibus/crypto";
import { eventually, pauseProcess, startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { StaticRoomKeys } from "./keyring.js";
import { ReplayGuard } from "./replay-guard.js";
import { RoomLimits, createRoom } from "./room.js";
import type { PipelineLimits, RoomMessage } from "./room.js";

/** One event-loop turn: everything queued with setImmediate before it has run. */
const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

/** Tracks whether a promise settled, without awaiting it. */
function watch(p: Promise<void>): { settled: () => boolean; failed: () => unknown } {
  let settled = false;
  let failure: unknown;
  p.then(
    () => void (settled = true),
    (err: unknown) => {
      settled = true;
      failure = err;
    },
  );
  return { settled: () => settled, failed: () => failure };
}

describe("the room publisher's pipeline on a real server", () => {
  let server: TestServer;
  let nc: NatsConnection;
  const alice = SigningKey.generate();
  const bob = SigningKey.generate();
  const keys = new StaticRoomKeys().set("p1", 0, randomBytes(32)).set("p2", 0, randomBytes(32)).set("p3", 0, randomBytes(32)).set("p4", 0, randomBytes(32));
  const closers: (() => Promise<void>)[] = [];

  /** A live-only room of `roomId` for `signer` on `conn`, with the given pipeline bounds. */
  const open = (conn: NatsConnection, signer: SigningKey, roomId: string, limits: PipelineLimits = RoomLimits) => {
    const r = createRoom(conn, signer, roomId, keys, undefined, new ReplayGuard(), limits);
    closers.push(() => r.close());
    return r;
  };
  /** Collects what bob's subscription of `roomId` receives, and counts the frames on the subject. */
  const listen = async (roomId: string): Promise<{ got: string[]; frames: () => number }> => {
    const got: string[] = [];
    let frames = 0;
    open(nc, bob, roomId).subscribe((m: RoomMessage) => got.push(m.string()));
    const spy = nc.subscribe(`unibus.room.${roomId}.m`, { callback: () => void frames++ });
    closers.push(() => Promise.resolve(spy.unsubscribe()));
    await nc.flush();
    return { got, frames: () => frames };
  };

  beforeAll(async () => {
    server = await startTestServer({ jetstream: false });
    nc = await server.connect();
  });
  afterAll(async () => {
    for (const c of closers) await c().catch(() => undefined);
    await nc?.close();
    await server?.stop();
  });

  it("a lone message in an idle room is handed to the connection inside publish(); what follows in that turn coalesces behind it", async () => {
    const { got, frames } = await listen("p1");
    const a = open(nc, alice, "p1");
    // The first publish looks the key up; the room is idle again once it arrived and a turn passed.
    await a.publish("warm");
    await eventually(() => got.length, (n) => n === 1);
    await turn();
    const before = a.unconfirmedFrames;
    const lone = a.publish("lone");
    // No end-of-turn hop: the frame is already with the connection when publish() returns.
    expect(a.unconfirmedFrames).toBe(before + 1);
    const rest = Array.from({ length: 300 }, (_, i) => a.publish(`b${i}`));
    expect(a.unconfirmedFrames).toBe(before + 1);
    await Promise.all([lone, ...rest]);
    await eventually(() => got.length, (n) => n === 302);
    expect(got).toEqual(["warm", "lone", ...Array.from({ length: 300 }, (_, i) => `b${i}`)]);
    // warm, lone, then the 300 of the same turn in one frame.
    expect(frames()).toBe(3);
  });

  it("a lone message that makes a round trip due asks for it at the end of its turn, not inside publish(), and the round trips still confirm", async () => {
    const { got } = await listen("p4");
    const pubConn = await server.connect();
    closers.push(() => pubConn.close());
    // Every flush() is one PING: counted, then passed on.
    let pings = 0;
    const flush = pubConn.flush.bind(pubConn);
    pubConn.flush = () => {
      pings++;
      return flush();
    };
    // A quarter of 4 frames: every lone frame makes a round trip due.
    const a = open(pubConn, alice, "p4", { maxUnconfirmedFrames: 4, maxUnconfirmedBytes: 1024 * 1024 });
    await a.publish("warm");
    await turn();
    await eventually(() => a.unconfirmedFrames, (n) => n === 0);
    for (let i = 0; i < 10; i++) {
      const before = pings;
      const sent = a.publish(`lone${i}`);
      // The frame is with the connection, and no PING went with it.
      expect(a.unconfirmedFrames).toBe(1);
      expect(pings).toBe(before);
      await sent;
      await turn();
      expect(pings).toBe(before + 1);
      await eventually(() => a.unconfirmedFrames, (n) => n === 0);
    }
    await eventually(() => got.length, (n) => n === 11);
    expect(got).toEqual(["warm", ...Array.from({ length: 10 }, (_, i) => `lone${i}`)]);
  });

  it("keeps publish order across batches, lone messages and a pipeline far smaller than the traffic", async () => {
    const { got } = await listen("p2");
    // Two frames or 8 KiB unconfirmed at most: most batches wait for a round trip before sealing.
    const a = open(nc, alice, "p2", { maxUnconfirmedFrames: 2, maxUnconfirmedBytes: 8 * 1024 });
    const payload = "x".repeat(700);
    const expected: string[] = [];
    let maxSeen = 0;
    for (let chunk = 0; chunk < 20; chunk++) {
      let last: Promise<void> | undefined;
      const n = chunk % 3 === 0 ? 1 : 40;
      for (let i = 0; i < n; i++) {
        const body = `${chunk}/${i}/${payload}`;
        expected.push(body);
        last = a.publish(body);
        maxSeen = Math.max(maxSeen, a.unconfirmedFrames);
      }
      await last;
      maxSeen = Math.max(maxSeen, a.unconfirmedFrames);
    }
    await a.flush();
    await eventually(() => got.length, (n) => n >= expected.length, { timeoutMs: 10_000 });
    expect(got).toEqual(expected);
    // A batch may be split into frames above the bound only by the room's frame size, which these are far below.
    expect(maxSeen).toBeLessThanOrEqual(2 + 1);
  });

  it("holds a publisher at the bound while the server does not confirm, and lets it go on once it does", async () => {
    const paused = await startTestServer({ jetstream: false });
    const pubConn = await paused.connect();
    const subConn = await paused.connect();
    let stopped = false;
    try {
      const got: string[] = [];
      const reader = createRoom(subConn, bob, "p3", keys, undefined, new ReplayGuard());
      reader.subscribe((m) => got.push(m.string()));
      await subConn.flush();
      const a = createRoom(pubConn, alice, "p3", keys, undefined, new ReplayGuard(), { maxUnconfirmedFrames: 3, maxUnconfirmedBytes: 1024 * 1024 });
      await a.publish("warm");
      await eventually(() => got.length, (n) => n === 1);
      await a.flush();
      expect(a.unconfirmedFrames).toBeLessThanOrEqual(1);

      // Every server thread stopped before the first publish: the bare signal can take effect after it.
      stopped = true;
      await pauseProcess(paused.pid);
      // One message per turn, so one frame each: three fit, the rest wait for a round trip the stopped server cannot answer.
      const sent: ReturnType<typeof watch>[] = [];
      let maxSeen = 0;
      for (let i = 0; i < 8; i++) {
        sent.push(watch(a.publish(`m${i}`)));
        for (let t = 0; t < 5; t++) {
          await turn();
          maxSeen = Math.max(maxSeen, a.unconfirmedFrames);
        }
      }
      expect(maxSeen).toBeLessThanOrEqual(3);
      expect(a.unconfirmedFrames).toBe(3);
      // m0..m2 went out (warm was confirmed before the stop); m3..m7 wait, none failed.
      expect(sent.map((s) => s.settled())).toEqual([true, true, true, false, false, false, false, false]);
      expect(sent.every((s) => s.failed() === undefined)).toBe(true);

      process.kill(paused.pid, "SIGCONT");
      stopped = false;
      await eventually(() => sent.every((s) => s.settled()), (done) => done, { timeoutMs: 10_000 });
      expect(sent.every((s) => s.failed() === undefined)).toBe(true);
      await eventually(() => got.length, (n) => n === 9, { timeoutMs: 10_000 });
      expect(got).toEqual(["warm", ...Array.from({ length: 8 }, (_, i) => `m${i}`)]);
      await a.close();
      await reader.close();
    } finally {
      if (stopped) process.kill(paused.pid, "SIGCONT");
      await pubConn.close().catch(() => undefined);
      await subConn.close().catch(() => undefined);
      await paused.stop();
    }
  });

  it("a publish waiting on a round trip that can no longer come back fails to its caller instead of hanging", async () => {
    const paused = await startTestServer({ jetstream: false });
    const pubConn = await paused.connect();
    let stopped = false;
    try {
      const a = createRoom(pubConn, alice, "p3", keys, undefined, new ReplayGuard(), { maxUnconfirmedFrames: 1, maxUnconfirmedBytes: 1024 * 1024 });
      await a.publish("warm");
      await a.flush();
      // Every server thread stopped before the first publish: the bare signal can take effect after it.
      stopped = true;
      await pauseProcess(paused.pid);
      const first = watch(a.publish("fills the bound"));
      await turn();
      await turn();
      const blocked = watch(a.publish("waits"));
      for (let t = 0; t < 5; t++) await turn();
      expect(first.settled()).toBe(true);
      expect(blocked.settled()).toBe(false);
      // The connection goes away under the waiting batch: its round trip is refused, and so is the publish.
      await pubConn.close();
      await eventually(() => blocked.settled(), (done) => done, { timeoutMs: 10_000 });
      // Not sent, so the caller may send it again: a retryable connection_lost.
      expect(blocked.failed()).toBeInstanceOf(UnibusError);
      expect((blocked.failed() as UnibusError).reason).toBe(ErrorReason.ConnectionLost);
      // And a publish on the closed connection fails at once, on the lone-message path too.
      await expect(a.publish("after close")).rejects.toThrow();
    } finally {
      if (stopped) process.kill(paused.pid, "SIGCONT");
      await pubConn.close().catch(() => undefined);
      await paused.stop();
    }
  });
});
