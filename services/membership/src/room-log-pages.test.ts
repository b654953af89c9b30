import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { KV } from "@nats-io/kv";
import type { Msg, NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { ErrorCode, ErrorReason, UnibusError } from "@unibus/contracts";
import { SigningKey } from "@unibus/crypto";
import { openBuckets, serviceJetStream } from "@unibus/kit";
import { connect } from "@unibus/sdk";
import type { UnibusClient } from "@unibus/sdk";
import { eventually, rejectionOf, startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { noKicks } from "./kick.js";
import { createMembershipService } from "./service.js";
import { isKvPut } from "./store/membership-store.js";
import { MembershipBucket } from "./store/records.js";
import type { RunningMembershipService } from "./service.js";
import { LOG_PAGE_MAX, RoomLogStore, roomLogKey } from "./store/room-log.js";

// The page read of `rooms.log` (RoomLogStore.page): what it returns for
// every shape of stored log. Entries here are stand-ins written straight to
// the bucket: the store serves them unverified (clients verify the chain),
// so only their `seq` and order matter.

const silent = pino({ level: "silent" });

let server: TestServer;
let nc: NatsConnection;
let kv: KV;
let store: RoomLogStore;

const put = (roomId: string, seq: number): Promise<number> => kv.create(roomLogKey(roomId, seq), JSON.stringify({ seq, roomId, pad: "x".repeat(200) }));
const seqs = (page: { entries: { seq: number }[] }): number[] => page.entries.map((e) => e.seq);
const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);

beforeAll(async () => {
  server = await startTestServer({ jetstream: true });
  nc = await server.connect();
  ({ room_log: kv } = await openBuckets(serviceJetStream(nc), [{ name: MembershipBucket.roomLog, replicas: 1 }], { budgetMs: 10_000 }));
  store = new RoomLogStore(kv, nc);
  // Two rooms written interleaved, so each page's consumer skips the other room's entries.
  for (let seq = 0; seq < 600; seq++) {
    await put("roomlong1", seq);
    if (seq < 40 && seq !== 20) await put("roomgap01", seq);
  }
});

afterAll(async () => {
  await nc?.close();
  await server?.stop();
});

describe("RoomLogStore.page", () => {
  it("reads long pages in order and stops at the head on the last one", async () => {
    const first = await store.page("roomlong1", 0, 512);
    expect(first.headSeq).toBe(599);
    expect(seqs(first)).toEqual(range(0, 511));
    const last = await store.page("roomlong1", 512, 512);
    expect(last.headSeq).toBe(599);
    expect(seqs(last)).toEqual(range(512, 599));
    expect(seqs(await store.page("roomlong1", 599, 512))).toEqual([599]);
    // Short ranges are leader gets, with the same answer.
    expect(seqs(await store.page("roomlong1", 590, 10))).toEqual(range(590, 599));
    expect(seqs(await store.page("roomlong1", 100, 17))).toEqual(range(100, 116));
  });

  it("bounds an oversize page to the schema's maximum", async () => {
    const page = await store.page("roomlong1", 0, 10_000);
    expect(page.entries).toHaveLength(LOG_PAGE_MAX);
    expect(seqs(page)).toEqual(range(0, LOG_PAGE_MAX - 1));
  });

  it("ends a page before a missing entry, and a page that starts at one is empty", async () => {
    const page = await store.page("roomgap01", 0, 100);
    expect(page.headSeq).toBe(39);
    expect(seqs(page)).toEqual(range(0, 19));
    expect(await store.page("roomgap01", 20, 100)).toEqual({ headSeq: 39, entries: [] });
    expect(seqs(await store.page("roomgap01", 21, 100))).toEqual(range(21, 39));
  });

  it("answers an empty page past the head and for a room with no log", async () => {
    expect(await store.page("roomlong1", 600, 512)).toEqual({ headSeq: 599, entries: [] });
    expect(await store.page("roomlong1", 10_000, 20)).toEqual({ headSeq: 599, entries: [] });
    expect(await store.page("roomnolog", 0, 512)).toEqual({ headSeq: -1, entries: [] });
  });

  it("a page read while entries are appended is whole up to the head it read", async () => {
    for (let seq = 0; seq < 100; seq++) await put("roomgrows", seq);
    let appended = 100;
    const writing = (async () => {
      for (; appended < 400; appended++) await put("roomgrows", appended);
    })();
    let lastHead = -1;
    let reads = 0;
    while (appended < 400 || reads < 5) {
      const page = await store.page("roomgrows", 0, 512);
      // Never past the head it read, never short of it, never out of order.
      expect(page.headSeq).toBeGreaterThanOrEqual(lastHead);
      expect(seqs(page)).toEqual(range(0, Math.min(page.headSeq, 511)));
      const tail = await store.page("roomgrows", 50, 30);
      expect(seqs(tail)).toEqual(range(50, Math.min(tail.headSeq, 79)));
      lastHead = page.headSeq;
      reads++;
    }
    await writing;
    expect(reads).toBeGreaterThanOrEqual(5);
    expect((await store.page("roomgrows", 0, 512)).headSeq).toBe(399);
  });

  it("a damaged entry fails the page with a coded error, never a partial page", async () => {
    for (let seq = 0; seq < 30; seq++) await (seq === 10 ? kv.create(roomLogKey("roombroken", seq), "{not json") : put("roombroken", seq));
    const err = await rejectionOf(store.page("roombroken", 0, 30), UnibusError);
    expect(err.reason).toBe(ErrorReason.CorruptRecord);
    // The first entry is read by a get, not the page's consumer: the same answer.
    expect((await rejectionOf(store.page("roombroken", 10, 30), UnibusError)).reason).toBe(ErrorReason.CorruptRecord);
    expect(seqs(await store.page("roombroken", 0, 10))).toEqual(range(0, 9));
  });

  it("leaves no consumer behind once its pages are answered", async () => {
    await Promise.all([store.page("roomlong1", 0, 512), store.page("roomlong1", 512, 512), store.page("roomgap01", 0, 100)]);
    const jsm = await jetstreamManager(nc);
    await eventually(
      async () => (await jsm.streams.info(`KV_${MembershipBucket.roomLog}`)).state.consumer_count,
      (n) => n === 0,
      { what: "page consumers deleted" },
    );
  });
});

describe("rooms.log access comes before any read", () => {
  let svc: RunningMembershipService;
  let owner: UnibusClient;
  let outsider: UnibusClient;
  let roomId = "";
  const bootKey = SigningKey.generate();
  const adminKey = SigningKey.generate();
  const ownerKey = SigningKey.generate();
  const outsiderKey = SigningKey.generate();
  const guests = Array.from({ length: 20 }, () => SigningKey.generate());

  beforeAll(async () => {
    svc = await createMembershipService(nc, { logger: silent, kicker: noKicks, bootstrapPrincipal: bootKey.principal });
    const boot = await connect({ url: server.url, identity: bootKey });
    await boot.admin.bootstrap(adminKey.principal, "root");
    await boot.close();
    const admin = await connect({ url: server.url, identity: adminKey });
    try {
      await admin.users.add(ownerKey.principal, "owner", "member");
      await admin.users.add(outsiderKey.principal, "outsider", "member");
      await Promise.all(guests.map((g, i) => admin.users.add(g.principal, `g${i}`, "member")));
    } finally {
      await admin.close();
    }
    owner = await connect({ url: server.url, identity: ownerKey });
    outsider = await connect({ url: server.url, identity: outsiderKey });
    ({ room: { id: roomId } } = await owner.rooms.create("paged", { persist: false, encrypt: true }));
    for (const g of guests) await owner.rooms.invite(roomId, g.principal);
  });

  afterEach(() => {
    vi.restoreAllMocks();
  });

  afterAll(async () => {
    await Promise.allSettled([owner?.close(), outsider?.close()]);
    await svc?.stop();
  });

  it("refuses a caller who is not a member without reading the log", async () => {
    const reads = vi.spyOn(RoomLogStore.prototype, "page");
    expect((await rejectionOf(outsider.rooms.log(roomId, 0, 512), UnibusError)).code).toBe(ErrorCode.Forbidden);
    expect(reads).not.toHaveBeenCalled();
    // A member's page is read through the same path, as one consumer page past the first entry.
    const page = await owner.rooms.log(roomId, 0, 512);
    expect(reads).toHaveBeenCalledTimes(1);
    expect(page.headSeq).toBe(guests.length);
    expect(seqs(page)).toEqual(range(0, guests.length));
    expect((await owner.roomLogs.sync(roomId)).members.size).toBe(guests.length + 1);
  });

  it("refuses a page larger than the schema allows without reading the log", async () => {
    const reads = vi.spyOn(RoomLogStore.prototype, "page");
    const err = await rejectionOf(owner.rooms.log(roomId, 0, LOG_PAGE_MAX + 1), UnibusError);
    expect(err.code).toBe(ErrorCode.BadRequest);
    expect(reads).not.toHaveBeenCalled();
  });
});

describe("isKvPut (how a page tells an entry from a delete or purge marker)", () => {
  it("tells puts (with or without stored headers, empty or not) from delete and purge markers, as the KV-Operation header says", async () => {
    const scratch = await new Kvm(jetstream(nc)).create("kv_put_test", { history: 5 });
    await scratch.create("a", "{}"); // stored with Nats-Expected-Last-Subject-Sequence
    await scratch.put("b", "{}");
    await scratch.put("c", "{}");
    await scratch.put("d", ""); // an empty put
    await scratch.delete("b");
    await scratch.purge("c"); // a rollup: c's put is gone, its marker stays
    const consumer = await jetstream(nc).consumers.get("KV_kv_put_test");
    const msgs: Msg[] = [];
    for await (const m of await consumer.fetch({ max_messages: (await consumer.info()).num_pending })) msgs.push(m as unknown as Msg);
    expect(msgs.map((m) => m.subject.split(".").at(-1))).toEqual(["a", "b", "d", "b", "c"]);
    expect(msgs[0]!.headers?.get("Nats-Expected-Last-Subject-Sequence")).toBe("0");
    expect(msgs.map((m) => m.headers?.get("KV-Operation") ?? "")).toEqual(["", "", "", "DEL", "PURGE"]);
    expect(msgs.map(isKvPut)).toEqual([true, true, true, false, false]);
  });
});
