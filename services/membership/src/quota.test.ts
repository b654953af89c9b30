import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsConnection } from "@nats-io/transport-node";
import { DiscardPolicy, jetstreamManager } from "@nats-io/jetstream";
import type { JetStreamManager } from "@nats-io/jetstream";
import { pino } from "pino";
import { ErrorCode, UnibusError } from "@unibus/contracts";
import type { MembershipRoomsCreateRequest } from "@unibus/contracts";
import { SigningKey, randomBytes } from "@unibus/crypto";
import { RoomPublishReason, StaticRoomKeys, connect } from "@unibus/sdk";
import type { UnibusClient } from "@unibus/sdk";
import { eventually, rejectionOf, startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { noKicks } from "./kick.js";
import { DefaultRoomQuotaConfig, QuotaReason, loadRoomQuotaConfig, resolveRoomQuota } from "./quota.js";
import type { RoomQuotaConfig } from "./quota.js";
import { roomStreamName } from "./store/records.js";
import { createMembershipService } from "./service.js";
import type { RunningMembershipService } from "./service.js";

const silent = pino({ level: "silent" });

const rejection = (p: Promise<unknown>): Promise<UnibusError> => rejectionOf(p, UnibusError);

const quotas: RoomQuotaConfig = {
  defaults: { maxBytes: 1024 * 1024, maxMsgs: 1000, maxMsgSize: 128 * 1024, maxAgeSeconds: 3600 },
  ceilings: { maxBytes: 8 * 1024 * 1024, maxMsgs: 10_000, maxMsgSize: 512 * 1024, maxAgeSeconds: 86_400 },
};

describe("quota config from the environment", () => {
  it("uses the built-in defaults and ceilings when nothing is set", () => {
    expect(loadRoomQuotaConfig({})).toEqual(DefaultRoomQuotaConfig);
  });

  it("reads defaults and ceilings, and lowers a built-in default to a lower ceiling", () => {
    const cfg = loadRoomQuotaConfig({ UNIBUS_ROOM_MAX_MSGS: "50", UNIBUS_ROOM_CEILING_MAX_BYTES: "4096" });
    expect(cfg.defaults.maxMsgs).toBe(50);
    expect(cfg.ceilings.maxBytes).toBe(4096);
    expect(cfg.defaults.maxBytes).toBe(4096);
  });

  it.each([["UNIBUS_ROOM_MAX_BYTES", "0"], ["UNIBUS_ROOM_MAX_BYTES", "-5"], ["UNIBUS_ROOM_MAX_AGE_SECONDS", "1e9"], ["UNIBUS_ROOM_CEILING_MAX_MSGS", "99999999999999999999"], ["UNIBUS_ROOM_MAX_MSG_SIZE", "1 MiB"]])(
    "refuses to start with %s=%s",
    (name, value) => {
      expect(() => loadRoomQuotaConfig({ [name]: value })).toThrow(RangeError);
    },
  );

  it("refuses a default above its ceiling", () => {
    expect(() => loadRoomQuotaConfig({ UNIBUS_ROOM_MAX_MSGS: "100", UNIBUS_ROOM_CEILING_MAX_MSGS: "10" })).toThrow(/above/);
  });

  it("refuses a quota on a room without a stream", () => {
    expect(() => resolveRoomQuota(quotas, { maxMsgs: 1 }, false)).toThrow(expect.objectContaining({ code: ErrorCode.BadRequest, reason: QuotaReason.needsPersist }));
    expect(resolveRoomQuota(quotas, undefined, false)).toBeUndefined();
  });
});

describe("room quotas on a real server", () => {
  let server: TestServer;
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  let svc: RunningMembershipService;
  const bootKey = SigningKey.generate();
  const adminKey = SigningKey.generate();
  const ownerKey = SigningKey.generate();
  const clients: UnibusClient[] = [];
  let owner: UnibusClient;

  beforeAll(async () => {
    server = await startTestServer({ jetstream: true });
    nc = await server.connect();
    jsm = await jetstreamManager(nc);
    svc = await createMembershipService(nc, { logger: silent, kicker: noKicks, bootstrapPrincipal: bootKey.principal, quotas });
    const [boot, admin] = await Promise.all([connect({ url: server.url, identity: bootKey }), connect({ url: server.url, identity: adminKey })]);
    owner = await connect({ url: server.url, identity: ownerKey });
    clients.push(boot, admin, owner);
    await boot.admin.bootstrap(adminKey.principal, "root");
    await admin.users.add(ownerKey.principal, "olga", "member");
  });

  afterAll(async () => {
    await Promise.allSettled(clients.map((c) => c.close()));
    await svc?.stop();
    await server?.stop();
  });

  const persisted = { persist: true, encrypt: true };

  async function roomStreams(): Promise<string[]> {
    const names: string[] = [];
    for await (const name of jsm.streams.names()) if (name.startsWith("ROOM_")) names.push(name);
    return names.sort();
  }

  it("gives a persisted room created without a quota the configured defaults, with discard=new", async () => {
    const { room, quota } = await owner.rooms.create("defaults", persisted);
    expect(quota).toEqual(quotas.defaults);
    const { config } = await jsm.streams.info(roomStreamName(room.id));
    expect(config).toMatchObject({ max_bytes: 1024 * 1024, max_msgs: 1000, max_msg_size: 128 * 1024, max_age: 3600 * 1e9, discard: DiscardPolicy.New });
  });

  it("applies an owner's override within the ceilings, the other fields taking the defaults", async () => {
    const { room, quota } = await owner.rooms.create("override", persisted, { quota: { maxBytes: 8 * 1024 * 1024, maxAgeSeconds: 60 } });
    expect(quota).toEqual({ ...quotas.defaults, maxBytes: 8 * 1024 * 1024, maxAgeSeconds: 60 });
    const { config } = await jsm.streams.info(roomStreamName(room.id));
    expect(config).toMatchObject({ max_bytes: 8 * 1024 * 1024, max_msgs: 1000, max_msg_size: 128 * 1024, max_age: 60 * 1e9 });
  });

  it("refuses a quota above a ceiling with 403 quota_above_ceiling and writes nothing", async () => {
    const streamsBefore = await roomStreams();
    const roomsBefore = await svc.store.listRoomIds();
    for (const over of [{ maxBytes: 8 * 1024 * 1024 + 1 }, { maxMsgs: 10_001 }, { maxMsgSize: 1024 * 1024 }, { maxAgeSeconds: 86_401 }]) {
      const err = await rejection(owner.rooms.create("greedy", persisted, { quota: over }));
      expect(err).toMatchObject({ code: ErrorCode.Forbidden, reason: QuotaReason.aboveCeiling, details: { path: `/quota/${Object.keys(over)[0]}` } });
    }
    expect(await roomStreams()).toEqual(streamsBefore);
    expect(await svc.store.listRoomIds()).toEqual(roomsBefore);
  });

  it("answers 400 to malformed, oversize or schema-violating quotas, and to a quota on a live-only room, writing nothing", async () => {
    const streamsBefore = await roomStreams();
    const roomsBefore = await svc.store.listRoomIds();
    const bad: unknown[] = [
      { maxBytes: "1048576" },
      { maxBytes: 1.5 },
      { maxBytes: -1 },
      { maxBytes: 0 },
      { maxMsgs: 0 },
      { maxMsgSize: 10 },
      { maxAgeSeconds: 0 },
      { maxBytes: 2 ** 60 },
      { maxBytes: 1024, unlimited: true },
      [1, 2],
      null,
      "big",
    ];
    for (const quota of bad) {
      const err = await rejection(owner.rooms.create("bad", persisted, { quota: quota as MembershipRoomsCreateRequest["quota"] }));
      expect(err.code, JSON.stringify(quota)).toBe(ErrorCode.BadRequest);
    }
    const live = await rejection(owner.rooms.create("live", { persist: false, encrypt: true }, { quota: { maxMsgs: 10 } }));
    expect(live).toMatchObject({ code: ErrorCode.BadRequest, reason: QuotaReason.needsPersist });
    expect(await roomStreams()).toEqual(streamsBefore);
    expect(await svc.store.listRoomIds()).toEqual(roomsBefore);
  });

  it("rooms.get reports the stream's quota and usage; a live-only room has neither", async () => {
    const { room } = await owner.rooms.create("usage", persisted, { quota: { maxMsgs: 10 } });
    const empty = await owner.rooms.get(room.id);
    expect(empty.quota).toEqual({ ...quotas.defaults, maxMsgs: 10 });
    expect(empty.usage).toEqual({ bytes: 0, messages: 0 });
    nc.publish(`${room.subject}.m`, new Uint8Array(100));
    const used = await eventually(() => owner.rooms.get(room.id), (r) => r.usage?.messages === 1);
    expect(used.usage?.messages).toBe(1);
    expect(used.usage?.bytes).toBeGreaterThan(100);
    expect(Date.parse(used.usage?.oldestAt ?? "")).toBeGreaterThan(Date.now() - 60_000);
    const live = await owner.rooms.create("live", { persist: false, encrypt: true });
    expect(live.quota).toBeUndefined();
    const got = await owner.rooms.get(live.room.id);
    expect(got.quota).toBeUndefined();
    expect(got.usage).toBeUndefined();
  });

  it("a full room answers room_full to the sender through the SDK, keeps its history, and other rooms keep working", async () => {
    const full = await owner.rooms.create("tiny", persisted, { quota: { maxMsgs: 3 } });
    const other = await owner.rooms.create("roomy", persisted);
    const keys = new StaticRoomKeys().set(full.room.id, 0, randomBytes(32)).set(other.room.id, 0, randomBytes(32));
    const room = owner.room(full.room.id, keys);
    const next = owner.room(other.room.id, keys);
    try {
      for (let i = 0; i < 3; i++) await room.publish(`m${i}`);
      // Stored (observed through rooms.get, as the SDK sees it) before the next publish.
      expect((await eventually(() => owner.rooms.get(full.room.id), (r) => r.usage?.messages === 3)).usage?.messages).toBe(3);
      const err = await rejection(room.publish("one too many"));
      expect(err).toMatchObject({ code: ErrorCode.PayloadTooLarge, reason: RoomPublishReason.roomFull });
      // discard=new: the stored history is intact, the refused frame is not in it.
      const kept: string[] = [];
      for await (const m of room.history()) kept.push(m.string());
      expect(kept).toEqual(["m0", "m1", "m2"]);
      await next.publish("still fine");
      expect((await eventually(() => owner.rooms.get(other.room.id), (r) => r.usage?.messages === 1)).usage?.messages).toBe(1);
      expect((await owner.rooms.get(full.room.id)).usage?.messages).toBe(3);
    } finally {
      await Promise.allSettled([room.close(), next.close()]);
    }
  });

  it("rooms.history bounds a page by bytes: frames of 300 KB come one per page, chained by nextSeq", async () => {
    const { room } = await owner.rooms.create("big frames", persisted, { quota: { maxMsgSize: 512 * 1024 } });
    for (let i = 0; i < 3; i++) nc.publish(`${room.subject}.m`, new Uint8Array(300_000).fill(i));
    await eventually(() => owner.rooms.get(room.id), (r) => r.usage?.messages === 3);
    const sizes: number[] = [];
    let startSeq: number | undefined = 1;
    let pages = 0;
    while (startSeq !== undefined) {
      const page = await owner.rooms.history({ roomId: room.id, startSeq });
      pages++;
      sizes.push(...page.messages.map((m) => Buffer.from(m.data, "base64").byteLength));
      startSeq = page.nextSeq;
    }
    expect(sizes).toEqual([300_000, 300_000, 300_000]);
    expect(pages).toBe(3);
  });

  it("the SDK splits a burst into frames within the room's max_msg_size and refuses a message that cannot fit", async () => {
    const small = await owner.rooms.create("small frames", persisted, { quota: { maxMsgSize: 4096 } });
    const keys = new StaticRoomKeys().set(small.room.id, 0, randomBytes(32));
    const room = owner.room(small.room.id, keys);
    try {
      // 20 × 1000 bytes coalesce into one 20 KB frame by default; the room takes 4 KiB at most.
      await Promise.all(Array.from({ length: 20 }, () => room.publish(new Uint8Array(1000))));
      const read = async (): Promise<number[]> => {
        const got: number[] = [];
        for await (const m of room.history()) got.push(m.data.byteLength);
        return got;
      };
      const got = await eventually(read, (g) => g.length === 20);
      expect(got).toEqual(Array.from({ length: 20 }, () => 1000));
      const stored = (await owner.rooms.get(small.room.id)).usage?.messages ?? 0;
      expect(stored).toBeGreaterThanOrEqual(5);
      const err = await rejection(room.publish(new Uint8Array(5000)));
      expect(err).toMatchObject({ code: ErrorCode.PayloadTooLarge, reason: RoomPublishReason.messageTooLarge });
      expect((await owner.rooms.get(small.room.id)).usage?.messages).toBe(stored);
    } finally {
      await room.close();
    }
  });
});
