import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { SigningKey, randomBytes } from "@unibus/crypto";
import { eventually, startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { sealFrame } from "./frame.js";
import { StaticRoomKeys } from "./keyring.js";
import type { RoomKeySource } from "./keyring.js";
import { FreshnessLimits, ReplayGuard } from "./replay-guard.js";
import { createRoom } from "./room.js";
import type { Room, RoomControl, RoomMessage, RoomReject } from "./room.js";

/**
 * The membership service's part, on the test server's own stream: `get`
 * reads the stream's policy and usage, `history` pages with batch direct get
 * (the service's real implementation has its own tests). Small pages, so
 * paging is exercised.
 */
function streamControl(nc: NatsConnection): RoomControl {
  return {
    async get(roomId) {
      const jsm = await jetstreamManager(nc);
      const room = { id: roomId, name: roomId, subject: `unibus.room.${roomId}`, createdBy: "", createdAt: "" };
      try {
        const info = await jsm.streams.info(`ROOM_${roomId}`);
        return { room: { ...room, policy: { persist: true, encrypt: true } }, members: [], usage: { bytes: info.state.bytes, messages: info.state.messages } };
      } catch {
        return { room: { ...room, policy: { persist: false, encrypt: true } }, members: [] };
      }
    },
    async history(req) {
      const jsm = await jetstreamManager(nc);
      const info = await jsm.streams.info(`ROOM_${req.roomId}`);
      const start = req.startSeq !== undefined ? { seq: req.startSeq } : req.startTime !== undefined ? { start_time: req.startTime } : { seq: 1 };
      const messages = [];
      if (info.state.messages > 0) {
        for await (const m of await jsm.direct.getBatch(`ROOM_${req.roomId}`, { ...start, batch: 2 })) {
          messages.push({ seq: m.seq, subject: m.subject, time: m.time.toISOString(), data: Buffer.from(m.data).toString("base64") });
        }
      }
      const last = messages.at(-1)?.seq;
      return { messages, lastSeq: info.state.last_seq, ...(last !== undefined && last < info.state.last_seq ? { nextSeq: last + 1 } : {}) };
    },
  };
}

/** Collects up to `n` items from `it` or whatever arrived after `ms`. */
async function take<T>(it: AsyncIterable<T>, n: number, ms = 1_000): Promise<T[]> {
  const out: T[] = [];
  const iter = it[Symbol.asyncIterator]();
  const deadline = Date.now() + ms;
  while (out.length < n) {
    const left = deadline - Date.now();
    if (left <= 0) break;
    const r = await Promise.race([iter.next(), new Promise<null>((res) => setTimeout(() => res(null), left))]);
    if (r === null || r.done === true) break;
    out.push(r.value);
  }
  return out;
}

describe("end-to-end room frames on a real server", () => {
  let server: TestServer;
  let nc: NatsConnection;
  /** Counters are the sender's clock in µs: live frames must be near the reader's clock. */
  const T = Date.now() * 1000;
  const alice = SigningKey.generate();
  const bob = SigningKey.generate();
  const mallory = SigningKey.generate();
  const k0 = randomBytes(32);
  const k1 = randomBytes(32);
  const keys = new StaticRoomKeys().set("r1", 0, k0).set("r1", 1, k1).set("other", 0, k0);
  const rooms: Room[] = [];
  const open = (signer: SigningKey, roomId = "r1", source = keys): Room => {
    const r = createRoom(nc, signer, roomId, source, streamControl(nc));
    rooms.push(r);
    return r;
  };
  /** A fresh reader of r1 with its own reject stream; `inject` publishes raw bytes on the room subject. */
  const reader = async (): Promise<{ msgs: AsyncIterable<RoomMessage>; rejects: AsyncIterable<RoomReject> }> => {
    const r = open(bob);
    const msgs = r.subscribe();
    await nc.flush();
    return { msgs, rejects: r.rejects() };
  };
  const inject = async (frame: Uint8Array, subject = "unibus.room.r1.m"): Promise<void> => {
    nc.publish(subject, frame);
    await nc.flush();
  };
  const frame = (over: Partial<Parameters<typeof sealFrame>[0]> = {}): Uint8Array =>
    sealFrame({ roomId: "r1", epoch: 1, key: k1, signer: alice, counter: T + 1_000, messages: [new TextEncoder().encode("hi")], ...over });

  beforeAll(async () => {
    server = await startTestServer({ jetstream: true });
    nc = await server.connect();
  });
  afterAll(async () => {
    await Promise.allSettled(rooms.map((r) => r.close()));
    await server?.stop();
  });

  it("delivers what a member publishes, authenticated as its sender and in order", async () => {
    const { msgs } = await reader();
    const a = open(alice);
    await Promise.all([a.publish("one"), a.publish({ n: 2 }), a.publish(new Uint8Array([3]))]);
    const got = await take(msgs, 3);
    expect(got.map((m) => m.sender)).toEqual([alice.principal, alice.principal, alice.principal]);
    expect(got[0]!.string()).toBe("one");
    expect(got[1]!.json()).toEqual({ n: 2 });
    expect([...got[2]!.data]).toEqual([3]);
    expect(got.map((m) => m.epoch)).toEqual([1, 1, 1]);
    expect(got[1]!.counter).toBe(got[0]!.counter + 1);
  });

  it("coalesces a burst of one event-loop turn into few frames and delivers every message", async () => {
    const { msgs } = await reader();
    let frames = 0;
    const spy = nc.subscribe("unibus.room.r1.m", { callback: () => {
        frames++;
      },
    });
    await nc.flush();
    const a = open(alice);
    const sent = Array.from({ length: 2_000 }, (_, i) => a.publish(`m${i}`));
    await Promise.all(sent);
    const got = await take(msgs, 2_000, 3_000);
    spy.unsubscribe();
    expect(got.map((m) => m.string())).toEqual(Array.from({ length: 2_000 }, (_, i) => `m${i}`));
    expect(frames).toBeLessThanOrEqual(Math.ceil(2_000 / 512) + 1);
  });

  it("a live stream mixing v1 and v2 frames, single and batched, delivers every message once and in order", async () => {
    const { msgs } = await reader();
    const enc = (t: string): Uint8Array => new TextEncoder().encode(t);
    const c = T + 50_000;
    await inject(frame({ version: 1, counter: c, messages: [enc("v1 single")] }));
    await inject(frame({ counter: c + 1, messages: [enc("v2 a"), enc("v2 b"), enc("v2 c")] }));
    await inject(frame({ version: 1, counter: c + 4, messages: [enc("v1 a"), enc("v1 b")] }));
    await inject(frame({ counter: c + 6, messages: [enc("v2 single")] }));
    const got = await take(msgs, 7);
    expect(got.map((m) => m.string())).toEqual(["v1 single", "v2 a", "v2 b", "v2 c", "v1 a", "v1 b", "v2 single"]);
    expect(got.map((m) => m.counter)).toEqual([0, 1, 2, 3, 4, 5, 6].map((i) => c + i));
  });

  it("a tampered batch delivers none of its messages", async () => {
    const { msgs, rejects } = await reader();
    const f = frame({ counter: T + 60_000, messages: Array.from({ length: 50 }, (_, i) => new TextEncoder().encode(`m${i}`)) });
    f[f.length - 200]! ^= 1;
    await inject(f);
    expect((await take(rejects, 1))[0]).toMatchObject({ reason: "bad_signature", count: 50 });
    expect(await take(msgs, 1, 200)).toEqual([]);
  });

  it("rejects a tampered frame as bad_signature and delivers nothing", async () => {
    const { msgs, rejects } = await reader();
    const f = frame();
    f[f.length - 100]! ^= 1;
    await inject(f);
    expect((await take(rejects, 1))[0]).toMatchObject({ reason: "bad_signature" });
    expect(await take(msgs, 1, 200)).toEqual([]);
  });

  it("rejects a frame signed by its sender but sealed under a wrong key as decrypt_failed", async () => {
    const { msgs, rejects } = await reader();
    await inject(frame({ key: randomBytes(32) }));
    expect((await take(rejects, 1))[0]).toMatchObject({ reason: "decrypt_failed", sender: alice.principal });
    expect(await take(msgs, 1, 200)).toEqual([]);
  });

  it("rejects a frame of another room replayed into this one as wrong_room", async () => {
    const { msgs, rejects } = await reader();
    await inject(frame({ roomId: "other", epoch: 0, key: k0 }));
    expect((await take(rejects, 1))[0]).toMatchObject({ reason: "wrong_room" });
    expect(await take(msgs, 1, 200)).toEqual([]);
  });

  it("rejects a replayed counter and delivers the original once", async () => {
    const { msgs, rejects } = await reader();
    const f = frame({ counter: T + 5_000 });
    await inject(f);
    await inject(f);
    await inject(frame({ counter: T + 5_000, messages: [new TextEncoder().encode("same counter, new text")] }));
    expect((await take(msgs, 2, 300)).map((m) => m.string())).toEqual(["hi"]);
    expect((await take(rejects, 2)).map((r) => r.reason)).toEqual(["replay", "replay"]);
  });

  it("rejects an epoch the reader holds no key of as unknown_epoch", async () => {
    const { msgs, rejects } = await reader();
    await inject(frame({ epoch: 7, key: randomBytes(32) }));
    expect((await take(rejects, 1))[0]).toMatchObject({ reason: "unknown_epoch", epoch: 7, sender: alice.principal });
    expect(await take(msgs, 1, 200)).toEqual([]);
  });

  it("accepts frames reordered within the window and rejects one older than the window", async () => {
    const { msgs, rejects } = await reader();
    const m = (s: string): Uint8Array[] => [new TextEncoder().encode(s)];
    await inject(frame({ counter: T + 20_010, messages: m("b") }));
    await inject(frame({ counter: T + 20_000, messages: m("a") }));
    await inject(frame({ counter: T + 20_005, messages: m("c") }));
    await inject(frame({ counter: T + 40_000, messages: m("d") }));
    await inject(frame({ counter: T + 20_006, messages: m("too old") }));
    expect((await take(msgs, 5, 300)).map((x) => x.string())).toEqual(["b", "a", "c", "d"]);
    expect((await take(rejects, 1))[0]).toMatchObject({ reason: "replay", counter: T + 20_006 });
  });

  it("a replayed frame from an earlier session is dropped: the replay windows are the client's, across resubscribes and room objects", async () => {
    const guard = new ReplayGuard();
    const first = createRoom(nc, bob, "r1", keys, undefined, guard);
    rooms.push(first);
    const session1 = first.subscribe();
    await nc.flush();
    const f = frame({ counter: T + 70_000, messages: [new TextEncoder().encode("once")] });
    await inject(f);
    expect((await take(session1, 1)).map((m) => m.string())).toEqual(["once"]);
    session1.stop();
    // A later subscription, on the same room object and on a new one of the same client.
    const again = first.subscribe();
    const second = createRoom(nc, bob, "r1", keys, undefined, guard);
    rooms.push(second);
    const other = second.subscribe();
    await nc.flush();
    await inject(f);
    expect(await take(again, 1, 300)).toEqual([]);
    expect(await take(other, 1, 300)).toEqual([]);
    expect((await take(first.rejects(), 1))[0]).toMatchObject({ reason: "replay", counter: T + 70_000 });
    expect((await take(second.rejects(), 1))[0]).toMatchObject({ reason: "replay", counter: T + 70_000 });
  });

  it("a replayed frame is refused from the replay window before any key lookup; a non-member's frame after it, and its counters stay unburnt", async () => {
    const guard = new ReplayGuard();
    const first = createRoom(nc, bob, "r1", keys, undefined, guard);
    rooms.push(first);
    const session = first.subscribe();
    await nc.flush();
    const f = frame({ counter: T + 80_000 });
    await inject(f);
    expect((await take(session, 1)).map((m) => m.string())).toEqual(["hi"]);
    session.stop();
    // A key source that counts lookups and knows the epoch's members (only alice).
    let lookups = 0;
    const counting: RoomKeySource = {
      current: (roomId) => keys.current(roomId),
      get: (roomId, epoch) => {
        lookups++;
        return keys.get(roomId, epoch);
      },
      members: (_roomId, epoch) => (epoch === 1 ? new Set([alice.principal]) : undefined),
    };
    const second = createRoom(nc, bob, "r1", counting, undefined, guard);
    rooms.push(second);
    const other = second.subscribe();
    await nc.flush();
    await inject(f);
    // Replay check first: the second room refuses it without asking its key source.
    expect((await take(second.rejects(), 1))[0]).toMatchObject({ reason: "replay", counter: T + 80_000 });
    expect(lookups).toBe(0);
    // Mallory holds the key but is not a member of epoch 1: dropped after the key lookup, twice,
    // because a refused frame records no counters (so it is not a replay the second time).
    const m = frame({ signer: mallory, counter: T + 90_000 });
    await inject(m);
    await inject(m);
    expect((await take(second.rejects(), 2)).map((r) => r.reason)).toEqual(["sender_not_member", "sender_not_member"]);
    expect(lookups).toBe(1);
    expect(await take(other, 1, 200)).toEqual([]);
  });

  it("a live frame whose counter is outside the 5 min freshness bound is rejected as stale, whatever the windows say", async () => {
    const { msgs, rejects } = await reader();
    const skew = FreshnessLimits.liveSkewMs * 1000;
    await inject(frame({ counter: Date.now() * 1000 - skew - 60_000_000 }));
    await inject(frame({ counter: Date.now() * 1000 + skew + 60_000_000 }));
    expect((await take(rejects, 2)).map((r) => r.reason)).toEqual(["stale", "stale"]);
    expect(await take(msgs, 1, 200)).toEqual([]);
  });

  it("subscribe(callback) delivers like the iterator, and flush() resolves once the server has every frame", async () => {
    const b = open(bob);
    const got: string[] = [];
    const sub = b.subscribe((m) => got.push(m.string()));
    const iterated = b.subscribe();
    await nc.flush();
    const a = open(alice);
    for (let i = 0; i < 50; i++) void a.publish(`f${i}`);
    await a.flush();
    const viaIterator = await take(iterated, 50, 3_000);
    expect(viaIterator.map((m) => m.string())).toEqual(Array.from({ length: 50 }, (_, i) => `f${i}`));
    expect(got).toEqual(viaIterator.map((m) => m.string()));
    sub.stop();
    iterated.stop();
  });

  it("a member holding the room key cannot forge a frame as another member", async () => {
    const { msgs, rejects } = await reader();
    // Valid AEAD (Mallory knows the key; Alice's key is in the associated data), Mallory's signature.
    const impostor = { publicKey: alice.publicKey, sign: (d: Uint8Array) => mallory.sign(d) } as unknown as SigningKey;
    await inject(frame({ signer: impostor, counter: T + 90_000 }));
    expect((await take(rejects, 1))[0]).toMatchObject({ reason: "bad_signature", sender: alice.principal });
    expect(await take(msgs, 1, 200)).toEqual([]);
  });

  it("frames of two senders and two epochs interleaved are each attributed to their own sender and replay-checked in their own window", async () => {
    const { msgs, rejects } = await reader();
    const m = (s: string): Uint8Array[] => [new TextEncoder().encode(s)];
    const c = T + 300_000;
    const aliceFirst = frame({ counter: c, messages: m("alice e1") });
    await inject(aliceFirst);
    // The same counter from another sender, then from the same sender in another epoch: other windows, both fresh.
    await inject(frame({ signer: bob, counter: c, messages: m("bob e1") }));
    await inject(frame({ epoch: 0, key: k0, counter: c, messages: m("alice e0") }));
    await inject(frame({ counter: c + 1, messages: m("alice e1 again") }));
    // Alice's first frame again, right after a frame of hers: still her epoch-1 window, still a replay.
    await inject(aliceFirst);
    await inject(frame({ signer: bob, counter: c, messages: m("bob replayed") }));
    const got = await take(msgs, 5, 300);
    expect(got.map((x) => [x.string(), x.sender, x.epoch])).toEqual([
      ["alice e1", alice.principal, 1],
      ["bob e1", bob.principal, 1],
      ["alice e0", alice.principal, 0],
      ["alice e1 again", alice.principal, 1],
    ]);
    expect(await take(rejects, 2)).toEqual([
      { reason: "replay", sender: alice.principal, epoch: 1, counter: c, count: 1 },
      { reason: "replay", sender: bob.principal, epoch: 1, counter: c, count: 1 },
    ]);
  });

  it("messages a reader holds keep their bytes while later ones arrive: small, then large, then small", async () => {
    const { msgs } = await reader();
    const a = open(alice);
    const large = randomBytes(200 * 1024);
    const it = msgs[Symbol.asyncIterator]();
    await a.publish("first small");
    const first = (await it.next()).value as RoomMessage;
    await a.publish(large);
    const second = (await it.next()).value as RoomMessage;
    await a.publish("second small");
    const third = (await it.next()).value as RoomMessage;
    expect(first.string()).toBe("first small");
    expect(Buffer.from(second.data).equals(large)).toBe(true);
    expect(third.string()).toBe("second small");
    expect(new Set([first.data.buffer, second.data.buffer, third.data.buffer]).size).toBe(3);
  });

  it("rejects garbage as malformed", async () => {
    const { rejects } = await reader();
    await inject(new TextEncoder().encode("plain text is not a frame"));
    expect((await take(rejects, 1))[0]).toEqual({ reason: "malformed" });
  });

  it("a persisted room's stream and store hold no plaintext, and history returns the messages", async () => {
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: "ROOM_p1", subjects: ["unibus.room.p1.>"], allow_direct: true });
    const pk = new StaticRoomKeys().set("p1", 0, k0);
    const a = open(alice, "p1", pk);
    const secret = "TOP-SECRET-PLAINTEXT-4711";
    await Promise.all([a.publish(secret), a.publish({ secret })]);
    await a.publish(`${secret} later`);
    await nc.flush();

    const js = jetstream(nc);
    const stream = await js.streams.get("ROOM_p1");
    let info = await stream.info();
    // Core publishes: poll (bounded) until the stream has ingested both frames.
    for (let i = 0; i < 100 && info.state.messages < 2; i++) info = await stream.info();
    expect(info.state.messages).toBe(2);
    for (let seq = 1; seq <= info.state.last_seq; seq++) {
      const m = await jsm.streams.getMessage("ROOM_p1", { seq });
      expect(Buffer.from(m!.data).includes(secret)).toBe(false);
    }
    const files: string[] = [];
    const walk = async (d: string): Promise<void> => {
      for (const e of await readdir(d, { withFileTypes: true })) {
        if (e.isDirectory()) await walk(join(d, e.name));
        else files.push(join(d, e.name));
      }
    };
    await walk(join(server.dir, "jetstream"));
    expect(files.length).toBeGreaterThan(0);
    for (const f of files) expect((await readFile(f)).includes(secret)).toBe(false);

    const b = open(bob, "p1", pk);
    const all: string[] = [];
    for await (const m of b.history()) all.push(m.string());
    expect(all).toEqual([secret, JSON.stringify({ secret }), `${secret} later`]);
    const tail: string[] = [];
    for await (const m of b.history({ since: 2 })) tail.push(m.string());
    expect(tail).toEqual([`${secret} later`]);
  });

  it("history unpacks stored batches, v1 and v2, in order", async () => {
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: "ROOM_p3", subjects: ["unibus.room.p3.>"], allow_direct: true });
    const pk = new StaticRoomKeys().set("p3", 0, k0);
    const enc = (t: string): Uint8Array => new TextEncoder().encode(t);
    const c = T + 70_000;
    const stored = (over: Partial<Parameters<typeof sealFrame>[0]>): Uint8Array => frame({ roomId: "p3", epoch: 0, key: k0, ...over });
    await inject(stored({ version: 1, counter: c, messages: [enc("old 1"), enc("old 2")] }), "unibus.room.p3.m");
    const w = open(alice, "p3", pk);
    await Promise.all(Array.from({ length: 100 }, (_, i) => w.publish(`new ${i}`)));
    await w.flush();
    await eventually(async () => (await jsm.streams.info("ROOM_p3")).state.messages, (n) => n >= 2, { what: "both frames stored" });
    const got: string[] = [];
    for await (const m of open(bob, "p3", pk).history()) got.push(m.string());
    expect(got).toEqual(["old 1", "old 2", ...Array.from({ length: 100 }, (_, i) => `new ${i}`)]);
    // Two stored frames: the 100 messages of one turn went as one v2 batch.
    const second = await jsm.streams.getMessage("ROOM_p3", { seq: 2 });
    expect(second!.data[0]).toBe(2);
    expect((await jsm.streams.info("ROOM_p3")).state.messages).toBe(2);
  });

  it("history reports frames of an epoch the reader does not hold as unknown_epoch", async () => {
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: "ROOM_p2", subjects: ["unibus.room.p2.>"], allow_direct: true });
    const writer = open(alice, "p2", new StaticRoomKeys().set("p2", 0, k0).set("p2", 1, k1));
    await writer.publish("epoch one");
    await nc.flush();
    for (let i = 0; i < 100 && (await jsm.streams.info("ROOM_p2")).state.messages < 1; i++) await nc.flush();
    const late = open(bob, "p2", new StaticRoomKeys().set("p2", 0, k0));
    const rejects = late.rejects();
    const got: RoomMessage[] = [];
    for await (const m of late.history()) got.push(m);
    expect(got).toEqual([]);
    expect((await take(rejects, 1))[0]).toMatchObject({ reason: "unknown_epoch", epoch: 1 });
  });
});
