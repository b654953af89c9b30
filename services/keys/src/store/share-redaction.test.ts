import { rm } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AckPolicy, JetStreamApiCodes, JetStreamApiError, jetstream } from "@nats-io/jetstream";
import type { JetStreamClient } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { nanos } from "@nats-io/transport-node";
import { pino } from "pino";
import type { Logger } from "pino";
import { StoredConsumer } from "@unibus/contracts";
import { createIdentity, randomBytes, toBase64Url } from "@unibus/crypto";
import { membershipCopy } from "@unibus/kit";
import { counterValue, eventually, startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import type { MembershipView } from "../access.js";
import { KeysBucket, MembershipReadBucket, epochKey } from "./records.js";
import type { EpochRecord } from "./records.js";
import {
  DamagedRecordReason,
  ShareDeletionConsumer,
  consumeMemberRemovals,
  ensureShareDeletionConsumer,
  shareDeletionConsumerConfig,
  shareDeletionFindings,
  shareDeletionRetries,
} from "./share-redaction.js";

// Share deletion runs from a durable consumer of the `members` stream: each
// removal is acted on at least once, by one replica, across restarts and
// failed writes (threat: a removed member's sealed shares kept forever).
const silent = pino({ level: process.env.DBG ? "debug" : "silent" });
/** Short, so the suite does not wait out the production 2 s; the delay itself has its own test. */
const DELAY_MS = 150;
const { stream, durable } = StoredConsumer.keys.shareDeletion;

let server: TestServer;
let nc: NatsConnection;
let nc2: NatsConnection;
let js: JetStreamClient;
let members: KV;
let roomKeys: KV;
let view: MembershipView;
let roomCount = 0;

beforeAll(async () => {
  server = await startTestServer({ jetstream: true });
  nc = await server.connect();
  nc2 = await server.connect();
  js = jetstream(nc);
  const kvm = new Kvm(js);
  members = await kvm.create(MembershipReadBucket.members);
  roomKeys = await kvm.create(KeysBucket.roomKeys);
  view = { users: await kvm.create(MembershipReadBucket.users), members };
});

afterAll(async () => {
  membershipCopy(members).stop();
  await nc2?.close();
  await server?.stop();
});

/** A `members` value of the stored schema. */
const memberRecord = (roomId: string, principal: string): string => JSON.stringify({ roomId, principal, role: "member", addedAt: new Date().toISOString(), addedBy: principal });

/** A room whose members each hold a sealed share in `epochs` stored epochs. */
async function seedRoom(size: number, epochs = 2): Promise<{ roomId: string; principals: string[] }> {
  const roomId = `room${String(++roomCount).padStart(12, "0")}`;
  const principals = Array.from({ length: size }, () => createIdentity().principal).sort();
  for (const p of principals) await members.put(`${roomId}.${p}`, memberRecord(roomId, p));
  for (let epoch = 1; epoch <= epochs; epoch++) {
    const record: EpochRecord = {
      roomId,
      epoch,
      distributor: principals[0]!,
      signature: toBase64Url(randomBytes(64)),
      shares: principals.map((principal) => ({ principal, sealedShare: toBase64Url(randomBytes(120)) })),
      createdAt: new Date().toISOString(),
      logSeq: epoch,
      logHead: toBase64Url(randomBytes(32)),
    };
    await roomKeys.put(epochKey(roomId, epoch), JSON.stringify(record));
  }
  return { roomId, principals };
}

/** Whose shares are still sealed, per epoch. */
async function sealed(roomId: string, epochs = 2): Promise<string[][]> {
  const out: string[][] = [];
  for (let epoch = 1; epoch <= epochs; epoch++) {
    const rec = (await roomKeys.get(epochKey(roomId, epoch)))!.json<EpochRecord>();
    out.push(rec.shares.filter((s) => s.sealedShare !== undefined).map((s) => s.principal));
  }
  return out;
}

/** The consumer has nothing delivered-but-unacknowledged and nothing left to deliver. */
async function drained(): Promise<void> {
  const jsm = await js.jetstreamManager();
  await eventually(
    () => jsm.consumers.info(stream, durable),
    (ci) => ci.num_pending === 0 && ci.num_ack_pending === 0 && ci.num_redelivered === 0,
    { timeoutMs: 15_000, intervalMs: 50, what: "the removal consumer to acknowledge everything" },
  );
}

/** `roomKeys` as one replica sees it: counts its reads and writes, and fails the first `failures` writes (with `failure`). */
function wrappedRoomKeys(failures = 0, failure: () => Error = () => new Error("injected store failure")): { kv: KV; writes: string[]; reads: string[]; failed: number } {
  const state = { kv: roomKeys, writes: [] as string[], reads: [] as string[], failed: 0 };
  state.kv = new Proxy(roomKeys, {
    get(target, prop, receiver) {
      if (prop === "get") {
        return (key: string) => {
          state.reads.push(key);
          return target.get(key);
        };
      }
      if (prop !== "update") return Reflect.get(target, prop, receiver) as unknown;
      return async (key: string, value: string, revision: number) => {
        if (state.failed < failures) {
          state.failed++;
          throw failure();
        }
        const rev = await target.update(key, value, revision);
        state.writes.push(key);
        return rev;
      };
    },
  });
  return state;
}

/** A logger whose lines the test reads (pino's JSON, one object per line). */
function capturingLogger(): { logger: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level: "info" }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
  return { logger, lines };
}

describe("share deletion is at least once", () => {
  it("a removal made while no keys service runs is acted on when one starts; the others' shares stay", async () => {
    const { roomId, principals } = await seedRoom(3);
    const [alice, bob, carol] = principals as [string, string, string];
    await members.delete(`${roomId}.${bob}`);
    await members.purge(`${roomId}.${carol}`);
    const running = await consumeMemberRemovals({ js, roomKeys, membership: view, logger: silent, delayMs: DELAY_MS });
    try {
      await eventually(() => sealed(roomId), (s) => s.every((e) => e.length === 1), { timeoutMs: 15_000, intervalMs: 50, what: "bob's and carol's shares deleted" });
      expect(await sealed(roomId)).toEqual([[alice], [alice]]);
      const rec = (await roomKeys.get(epochKey(roomId, 1)))!.json<EpochRecord>();
      expect(rec.shares.find((s) => s.principal === bob)?.shareDigest).toMatch(/^[A-Za-z0-9_-]{43}$/);
      await drained();
    } finally {
      await running.stop();
    }
  });

  it("a removal whose deletion failed when the service stopped is acted on by the next start", async () => {
    const { roomId, principals } = await seedRoom(2);
    // The first run's store is down: it cannot act, so it never acknowledges.
    const down = wrappedRoomKeys(Number.MAX_SAFE_INTEGER);
    const first = await consumeMemberRemovals({ js, roomKeys: down.kv, membership: view, logger: silent, delayMs: DELAY_MS });
    await members.delete(`${roomId}.${principals[1]!}`);
    await eventually(() => down.failed, (n) => n > 0, { timeoutMs: 10_000, intervalMs: 20, what: "the first run to fail its write" });
    await first.stop();
    expect(await sealed(roomId)).toEqual([principals, principals]);
    const up = wrappedRoomKeys();
    const second = await consumeMemberRemovals({ js, roomKeys: up.kv, membership: view, logger: silent, delayMs: DELAY_MS });
    try {
      await eventually(() => sealed(roomId), (s) => s.every((e) => e.length === 1 && e[0] === principals[0]), { timeoutMs: 15_000, intervalMs: 50, what: "the failed removal acted on" });
      expect(down.writes).toEqual([]);
      expect(up.writes.sort()).toEqual([epochKey(roomId, 1), epochKey(roomId, 2)]);
      await drained();
    } finally {
      await second.stop();
    }
  });

  it("a deletion that fails on a store error is not acknowledged: it is retried, then done", async () => {
    const { roomId, principals } = await seedRoom(2);
    const store = wrappedRoomKeys(1);
    const running = await consumeMemberRemovals({ js, roomKeys: store.kv, membership: view, logger: silent, delayMs: DELAY_MS });
    try {
      await members.delete(`${roomId}.${principals[0]!}`);
      await eventually(() => sealed(roomId), (s) => s.every((e) => e.length === 1 && e[0] === principals[1]), { timeoutMs: 15_000, intervalMs: 50, what: "the shares deleted after a retry" });
      expect(store.failed).toBe(1);
      // Both epochs written once: the failed write left epoch 1 sealed, the retry did it and then epoch 2.
      expect([...store.writes].sort()).toEqual([epochKey(roomId, 1), epochKey(roomId, 2)]);
      await drained();
    } finally {
      await running.stop();
    }
  });

  it("a member re-added before its removal is processed keeps its shares", async () => {
    const { roomId, principals } = await seedRoom(2);
    await members.delete(`${roomId}.${principals[1]!}`);
    await members.put(`${roomId}.${principals[1]!}`, memberRecord(roomId, principals[1]!));
    const store = wrappedRoomKeys();
    const running = await consumeMemberRemovals({ js, roomKeys: store.kv, membership: view, logger: silent, delayMs: DELAY_MS });
    try {
      await members.delete(`${roomId}.${principals[0]!}`);
      // The later removal is done, so the consumer has passed the earlier one too.
      await eventually(() => sealed(roomId), (s) => s.every((e) => e.length === 1), { timeoutMs: 15_000, intervalMs: 50, what: "the later removal done" });
      await drained();
      expect(await sealed(roomId)).toEqual([[principals[1]!], [principals[1]!]]);
    } finally {
      await running.stop();
    }
  });

  it("two replicas share the removals: every one is done, each share replaced once", async () => {
    const rooms = await Promise.all(Array.from({ length: 4 }, () => seedRoom(4)));
    const stores = [wrappedRoomKeys(), wrappedRoomKeys()];
    const replicas = await Promise.all(
      [js, jetstream(nc2)].map((j, i) => consumeMemberRemovals({ js: j, roomKeys: stores[i]!.kv, membership: view, logger: silent, delayMs: DELAY_MS })),
    );
    try {
      for (const { roomId, principals } of rooms) for (const p of principals.slice(1)) await members.delete(`${roomId}.${p}`);
      for (const { roomId, principals } of rooms) {
        await eventually(() => sealed(roomId), (s) => s.every((e) => e.length === 1 && e[0] === principals[0]), { timeoutMs: 20_000, intervalMs: 50, what: `room ${roomId} down to its first member` });
      }
      await drained();
      // 4 rooms × 3 removed × 2 epochs: a second delivery of a removal finds nothing sealed and writes nothing.
      const ours = new Set(rooms.map((r) => r.roomId));
      const writes = [...stores[0]!.writes, ...stores[1]!.writes].filter((k) => ours.has(k.slice(0, k.indexOf("."))));
      expect(writes).toHaveLength(24);
    } finally {
      await Promise.all(replicas.map((r) => r.stop()));
    }
  });

  it("a removal is acted on only once it is older than the delay (the rekey goes first)", async () => {
    const { roomId, principals } = await seedRoom(2, 1);
    const delayMs = 1_000;
    const store = wrappedRoomKeys();
    const written: number[] = [];
    const timed = new Proxy(store.kv, {
      get(target, prop, receiver) {
        if (prop !== "update") return Reflect.get(target, prop, receiver) as unknown;
        return async (...args: Parameters<KV["update"]>) => {
          written.push(Date.now());
          return target.update(...args);
        };
      },
    });
    const running = await consumeMemberRemovals({ js, roomKeys: timed, membership: view, logger: silent, delayMs });
    try {
      const removedAt = Date.now();
      await members.delete(`${roomId}.${principals[0]!}`);
      await eventually(() => sealed(roomId, 1), (s) => s[0]!.length === 1, { timeoutMs: 15_000, intervalMs: 50, what: "the delayed removal done" });
      // The server stamps the marker after removedAt: the write cannot come earlier than the delay after it.
      expect(written[0]! - removedAt).toBeGreaterThanOrEqual(delayMs - 50);
      await drained();
    } finally {
      await running.stop();
    }
  });
});

describe("a damaged epoch record is a finding, not a retry loop", () => {
  it("the member's shares in every other epoch are deleted, each damaged record reported once, the removal not redelivered", async () => {
    const { roomId, principals } = await seedRoom(3, 4);
    const [alice, bob, carol] = principals as [string, string, string];
    // Epoch 2 cut short (not JSON), epoch 3 without its signature (fails the
    // schema); both still hold bob's sealed share in their bytes.
    const raw2 = new TextDecoder().decode((await roomKeys.get(epochKey(roomId, 2)))!.value);
    const rec3 = (await roomKeys.get(epochKey(roomId, 3)))!.json<EpochRecord>();
    const bobShares = [raw2, JSON.stringify(rec3)].map((r) => (JSON.parse(r) as EpochRecord).shares.find((s) => s.principal === bob)!.sealedShare!);
    const truncated = raw2.slice(0, raw2.indexOf(bobShares[0]!) + bobShares[0]!.length);
    const { signature: _dropped, ...unsigned } = rec3;
    await roomKeys.put(epochKey(roomId, 2), truncated);
    await roomKeys.put(epochKey(roomId, 3), JSON.stringify(unsigned));
    const before = { notJson: await counterValue(shareDeletionFindings, { reason: "not_json" }), schema: await counterValue(shareDeletionFindings, { reason: "schema" }), retries: await counterValue(shareDeletionRetries) };
    const { logger, lines } = capturingLogger();
    // The first pass fails on a store error (transient): retried, and only the completed pass reports.
    const store = wrappedRoomKeys(1);
    const running = await consumeMemberRemovals({ js, roomKeys: store.kv, membership: view, logger, delayMs: DELAY_MS });
    try {
      await members.delete(`${roomId}.${bob}`);
      const findings = (): Record<string, unknown>[] => lines.filter((l) => l["op"] === "shares.delete" && l["reason"] !== undefined);
      await eventually(() => findings().length, (n) => n >= 2, { timeoutMs: 15_000, intervalMs: 50, what: "the damaged records reported" });
      // Terminated: nothing of it left to deliver or acknowledge, so the server has nothing to redeliver.
      await drained();
      const after = (epoch: number): Promise<string> => roomKeys.get(epochKey(roomId, epoch)).then((e) => new TextDecoder().decode(e!.value));
      const open = async (epoch: number): Promise<string[]> => JSON.parse(await after(epoch)).shares.filter((s: { sealedShare?: string }) => s.sealedShare !== undefined).map((s: { principal: string }) => s.principal);
      expect(await open(1)).toEqual([alice, carol]);
      expect(await open(4)).toEqual([alice, carol]);
      // The damaged records are left as they were, never rewritten from bytes that cannot be checked.
      expect(await after(2)).toBe(truncated);
      expect(JSON.parse(await after(3))).toEqual(unsigned);
      expect(store.failed).toBe(1);
      expect(await counterValue(shareDeletionRetries)).toBe(before.retries + 1);
      expect(findings().map((l) => [l["level"], l["roomId"], l["epoch"], l["principal"], l["reason"]]).sort()).toEqual([
        [50, roomId, "2", bob, DamagedRecordReason.notJson],
        [50, roomId, "3", bob, DamagedRecordReason.schema],
      ]);
      expect(String(findings().find((l) => l["epoch"] === "3")!["detail"])).toMatch(/signature/);
      expect(await counterValue(shareDeletionFindings, { reason: "not_json" })).toBe(before.notJson + 1);
      expect(await counterValue(shareDeletionFindings, { reason: "schema" })).toBe(before.schema + 1);
      // Two passes read the damaged records at most (the failed one may have), and no line carries a share.
      expect(store.reads.filter((k) => k === epochKey(roomId, 2)).length).toBeLessThanOrEqual(2);
      const logged = JSON.stringify(lines);
      for (const share of bobShares) expect(logged).not.toContain(share);
    } finally {
      await running.stop();
    }
  });

  it("a compare-and-set lost on every attempt is retried, never acknowledged with the share kept", async () => {
    const { roomId, principals } = await seedRoom(2, 1);
    const conflict = (): Error => new JetStreamApiError({ code: 400, err_code: JetStreamApiCodes.StreamWrongLastSequence, description: "wrong last sequence" });
    // Five lost compare-and-sets: the first pass gives up on epoch 1 (transient), the next one writes it.
    const store = wrappedRoomKeys(5, conflict);
    const before = await counterValue(shareDeletionRetries);
    const running = await consumeMemberRemovals({ js, roomKeys: store.kv, membership: view, logger: silent, delayMs: DELAY_MS });
    try {
      await members.delete(`${roomId}.${principals[1]!}`);
      await eventually(() => sealed(roomId, 1), (s) => s[0]!.length === 1 && s[0]![0] === principals[0], { timeoutMs: 15_000, intervalMs: 50, what: "the share deleted after the conflicts" });
      await drained();
      expect(store.failed).toBe(5);
      expect(store.writes).toEqual([epochKey(roomId, 1)]);
      expect(await counterValue(shareDeletionRetries)).toBe(before + 1);
    } finally {
      await running.stop();
    }
  });
});

describe("the durable consumer", () => {
  it("is made again when it is deleted under a running replica, and removals go on", async () => {
    const running = await consumeMemberRemovals({ js, roomKeys, membership: view, logger: silent, delayMs: DELAY_MS });
    try {
      const jsm = await js.jetstreamManager();
      const before = (await jsm.consumers.info(stream, durable)).created;
      await jsm.consumers.delete(stream, durable);
      const { roomId, principals } = await seedRoom(2);
      await members.delete(`${roomId}.${principals[1]!}`);
      await eventually(() => sealed(roomId), (s) => s.every((e) => e.length === 1 && e[0] === principals[0]), { timeoutMs: 30_000, intervalMs: 100, what: "a removal made after the consumer was deleted acted on" });
      expect((await jsm.consumers.info(stream, durable)).created).not.toBe(before);
    } finally {
      await running.stop();
    }
  });

  it("is created idempotently and brought back to its configuration when it differs", async () => {
    await ensureShareDeletionConsumer(js);
    await ensureShareDeletionConsumer(jetstream(nc2));
    const jsm = await js.jetstreamManager();
    await jsm.consumers.update(stream, durable, { ack_wait: nanos(5_000), max_ack_pending: 1_000 });
    expect((await jsm.consumers.info(stream, durable)).config.max_ack_pending).toBe(1_000);
    await ensureShareDeletionConsumer(js);
    const { config } = await jsm.consumers.info(stream, durable);
    const want = shareDeletionConsumerConfig();
    expect(config).toMatchObject({ durable_name: durable, ack_policy: AckPolicy.Explicit, headers_only: true, max_ack_pending: ShareDeletionConsumer.maxAckPending, ack_wait: want.ack_wait, max_deliver: -1 });
    expect((await jsm.consumers.list(stream).next()).filter((c) => c.config.durable_name !== undefined).map((c) => c.name)).toEqual([durable]);
  });

  it("is made afresh when the server can no longer write it, and removals go on", async () => {
    // The state a consumer deleted under running replicas and made again at
    // once was left in on a single server (its directory gone, every create
    // or update failing): reproduced by removing the directory.
    await ensureShareDeletionConsumer(js);
    const jsm = await js.jetstreamManager();
    await rm(join(server.dir, "jetstream", "jetstream", "$G", "streams", stream, "obs", durable), { recursive: true, force: true });
    const broken = await jsm.consumers.add(stream, shareDeletionConsumerConfig()).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(broken).toBeInstanceOf(JetStreamApiError);
    expect((broken as JetStreamApiError).code).toBe(10012);
    expect(await ensureShareDeletionConsumer(js)).toBe("remade");
    expect(await ensureShareDeletionConsumer(jetstream(nc2))).toBe("ok");
    const running = await consumeMemberRemovals({ js, roomKeys, membership: view, logger: silent, delayMs: DELAY_MS });
    try {
      const { roomId, principals } = await seedRoom(2);
      await members.delete(`${roomId}.${principals[1]!}`);
      await eventually(() => sealed(roomId), (s) => s.every((e) => e.length === 1 && e[0] === principals[0]), { timeoutMs: 30_000, intervalMs: 100, what: "a removal acted on by the remade consumer" });
    } finally {
      await running.stop();
    }
  });
});
