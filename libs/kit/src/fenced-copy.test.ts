import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Kvm } from "@nats-io/kv";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { ErrorCode, StoredBucket, memberKey } from "@unibus/contracts";
import { SigningKey } from "@unibus/crypto";
import { controllableKv, eventually, startTestServer, storedUser } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { FenceBatcher, FencedCopy, FencedCopyBehindError } from "./fenced-copy.js";
import { LeaderOutOfContactError } from "./leader-contact.js";
import { membershipCopy, requireMember, roleResolver, roomMembers, roomRole } from "./membership-view.js";

const logger = pino({ level: "silent" });
const ROOM = "room0000000001";

function deferred<T>(): { promise: Promise<T>; resolve(v: T): void; reject(e: unknown): void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => ((resolve = res), (reject = rej)));
  return { promise, resolve, reject };
}

describe("FenceBatcher: a check is only satisfied by a fence sent after it arrived", () => {
  it("checks that arrive while a fence is out wait for the next fence, which is sent after them", async () => {
    // One logical clock for arrivals and sends: each fence answers with the time it was sent.
    let clock = 0;
    const answers: Array<ReturnType<typeof deferred<number>>> = [];
    const batcher = new FenceBatcher<number>(() => {
      const d = deferred<number>();
      const sentAt = ++clock;
      answers.push(d);
      return d.promise.then(() => sentAt);
    });
    const check = (): { arrivedAt: number; fence: Promise<number> } => ({ arrivedAt: ++clock, fence: batcher.next() });

    const first = [check(), check(), check()];
    await Promise.resolve();
    expect(answers).toHaveLength(1);
    // Arrive while the first fence is out: it must not answer them.
    const second = [check(), check()];
    answers[0]!.resolve(0);
    await eventually(() => answers.length, (n) => n === 2, { what: "the second fence sent" });
    const third = [check()];
    answers[1]!.resolve(0);
    await eventually(() => answers.length, (n) => n === 3, { what: "the third fence sent" });
    answers[2]!.resolve(0);

    for (const c of [...first, ...second, ...third]) expect(await c.fence).toBeGreaterThan(c.arrivedAt);
    // Three fences for six checks: concurrent checks share one.
    expect(batcher.stats).toEqual({ fences: 3, waiters: 6, maxInFlight: 1 });
  });

  it("a failed fence refuses its whole batch, and the next check sends a new one", async () => {
    let calls = 0;
    const batcher = new FenceBatcher<number>(async () => {
      calls++;
      if (calls === 1) throw new Error("no answer");
      return calls;
    });
    const refused = await Promise.allSettled([batcher.next(), batcher.next()]);
    expect(refused.map((r) => r.status)).toEqual(["rejected", "rejected"]);
    expect(await batcher.next()).toBe(2);
  });

  it("an ask that throws instead of rejecting refuses its batch too, and frees its slot", async () => {
    let calls = 0;
    const batcher = new FenceBatcher<number>(() => {
      if (++calls === 1) throw new Error("thrown");
      return Promise.resolve(calls);
    });
    await expect(batcher.next()).rejects.toThrow("thrown");
    expect(await batcher.next()).toBe(2);
  });
});

function memberRecord(principal: string): string {
  return JSON.stringify({ roomId: ROOM, principal, role: "member", addedAt: new Date(0).toISOString(), addedBy: principal });
}

describe("the fenced copy on nats-server", () => {
  let server: TestServer;
  let nc: NatsConnection;
  let users: KV;
  let members: KV;

  beforeAll(async () => {
    server = await startTestServer({ jetstream: true });
    nc = await server.connect();
    const kvm = new Kvm(nc);
    users = await kvm.create("users", { allow_direct: false });
    members = await kvm.create("members", { allow_direct: false });
  });

  afterAll(async () => {
    await nc?.close();
    await server?.stop();
  });

  it("the server offers no read-after-write get to build on: min_last_seq is refused by a leader get and ignored by a direct get", async () => {
    await users.put("probe", "x");
    const last = (await users.status()).streamInfo.state.last_seq;
    const leaderGet = await nc.request("$JS.API.STREAM.MSG.GET.KV_users", JSON.stringify({ last_by_subj: "$KV.users.probe", min_last_seq: last + 100 }));
    expect(leaderGet.json<{ message?: unknown; error?: { err_code: number } }>()).toMatchObject({ error: { err_code: 10025 } });
    const direct = await new Kvm(nc).create("direct_probe", { allow_direct: true });
    await direct.put("k", "stale-or-not");
    const directGet = await nc.request("$JS.API.DIRECT.GET.KV_direct_probe.$KV.direct_probe.k", JSON.stringify({ min_last_seq: 1_000 }));
    // Data, though the stream is far below 1,000: the option is not checked.
    expect(directGet.string()).toBe("stale-or-not");
  });

  it("answers a revoke acknowledged before the read, though the watch lags the writer by 200 ms per entry", async () => {
    const alice = SigningKey.generate().principal;
    const lagging = controllableKv(users, 200);
    const copy = new FencedCopy(lagging.kv, { op: "test.users", logger });
    try {
      await users.put(alice, JSON.stringify(storedUser(alice, "active")));
      await eventually(() => copy.get(alice).catch(() => null), (r) => r !== null, { what: "alice in the copy" });
      for (let i = 0; i < 3; i++) {
        await users.put(alice, JSON.stringify(storedUser(alice, i % 2 === 0 ? "revoked" : "active")));
        const record = await copy.get(alice);
        expect((JSON.parse(new TextDecoder().decode(record!.value)) as { status: string }).status).toBe(i % 2 === 0 ? "revoked" : "active");
      }
      await users.delete(alice);
      expect(await copy.get(alice)).toBeNull();
      expect(copy.stats.fromMemory).toBeGreaterThanOrEqual(4);
    } finally {
      copy.stop();
    }
  });

  it("refuses while its watch is stalled behind the fence, never answering the old record, and answers once it catches up", async () => {
    const bob = SigningKey.generate().principal;
    const c = controllableKv(users);
    const copy = new FencedCopy(c.kv, { op: "test.users", logger, stallMs: 60_000 });
    try {
      await users.put(bob, JSON.stringify(storedUser(bob, "active")));
      await eventually(() => copy.get(bob).catch(() => null), (r) => r !== null, { what: "bob in the copy" });
      c.stall();
      await users.put(bob, JSON.stringify(storedUser(bob, "revoked")));
      await expect(copy.get(bob)).rejects.toBeInstanceOf(FencedCopyBehindError);
      expect(copy.stats).toMatchObject({ behind: 1, refused: 0 });
      c.release();
      const record = await eventually(() => copy.get(bob).catch(() => null), (r) => r !== null, { what: "the copy answering again" });
      expect((JSON.parse(new TextDecoder().decode(record!.value)) as { status: string }).status).toBe("revoked");
    } finally {
      c.release();
      copy.stop();
    }
  });

  it("refuses a fence answered by a leader out of contact, by a replica naming no leader, or not answered in time", async () => {
    const c = controllableKv(users);
    const copy = new FencedCopy(c.kv, { op: "test.users", logger, fenceTimeoutMs: 200 });
    try {
      await copy.get("anyone");
      const real = await users.status();
      const peer = (activeMs: number, name: string) => ({ name, current: true, active: activeMs * 1e6 });
      c.info(async () => ({ ...real, streamInfo: { ...real.streamInfo, cluster: { leader: "n1", replicas: [peer(6_000, "n2"), peer(6_000, "n3")] } } }));
      await expect(copy.get("anyone")).rejects.toBeInstanceOf(LeaderOutOfContactError);
      c.info(async () => ({ ...real, streamInfo: { ...real.streamInfo, cluster: { replicas: [peer(10, "n2"), peer(10, "n3")] } } }));
      await expect(copy.get("anyone")).rejects.toBeInstanceOf(LeaderOutOfContactError);
      c.info(() => new Promise(() => undefined));
      await expect(copy.get("anyone")).rejects.toThrow(/not answered within 200 ms/);
      expect(copy.stats.refused).toBe(3);
      c.info(undefined);
      expect(await copy.get("anyone")).toBeNull();
    } finally {
      copy.stop();
    }
  });

  it("lists a group's live keys behind the same fence: a removal acknowledged before the listing is never in it", async () => {
    const room = "room0000000042";
    const keys = [0, 1, 2].map(() => memberKey(room, SigningKey.generate().principal)).sort();
    const lagging = controllableKv(members, 100);
    const copy = new FencedCopy(lagging.kv, { op: "test.members", logger, stallMs: 60_000, group: (k) => k.slice(0, Math.max(0, k.indexOf("."))) });
    try {
      for (const k of keys) await members.put(k, "{}");
      expect((await copy.keysIn(room)).sort()).toEqual(keys);
      await members.delete(keys[0]!);
      expect((await copy.keysIn(room)).sort()).toEqual(keys.slice(1));
      await members.purge(keys[1]!);
      expect(await copy.keysIn(room)).toEqual([keys[2]]);
      // Behind its fence: refused, never the list from before the removal.
      lagging.stall();
      await members.delete(keys[2]!);
      await expect(copy.keysIn(room)).rejects.toBeInstanceOf(FencedCopyBehindError);
      lagging.release();
      expect(await eventually(() => copy.keysIn(room).catch(() => null), (r) => r !== null, { what: "the copy answering again" })).toEqual([]);
    } finally {
      lagging.release();
      copy.stop();
    }
    // A copy without groups refuses rather than answering "no keys".
    const plain = new FencedCopy(users, { op: "test.users", logger });
    try {
      await expect(plain.keysIn(room)).rejects.toThrow(/groups no keys/);
    } finally {
      plain.stop();
    }
  });

  it("roomMembers lists a room from the members copy its access checks read: 503 when it cannot vouch, never a short list", async () => {
    const room = "room0000000043";
    const [dave, erin] = [SigningKey.generate().principal, SigningKey.generate().principal];
    await members.put(memberKey(room, dave), "{}");
    await members.put(memberKey(room, erin), "{}");
    await members.delete(memberKey(room, dave));
    expect(await roomMembers(members, room)).toEqual([erin]);
    // The same copy serves the role checks: no second watch of the bucket.
    const fences = membershipCopy(members).fences;
    await Promise.all([roomMembers(members, room), roomRole(members, room, erin).catch(() => null)]);
    expect(membershipCopy(members).fences - fences).toBe(1);
    const c = controllableKv(members);
    const out = Object.assign(c.kv, { bucket: StoredBucket.membership.members });
    const real = await members.status();
    c.info(async () => ({ ...real, streamInfo: { ...real.streamInfo, cluster: { leader: "n1", replicas: [{ name: "n2", current: true, active: 6e9 }, { name: "n3", current: true, active: 6e9 }] } } }));
    await expect(roomMembers(out, room)).rejects.toMatchObject({ code: ErrorCode.Unavailable });
    membershipCopy(out).stop();
  });

  it("the membership view answers from the fenced copy: 503 when it cannot vouch, never 'not a member' or a role", async () => {
    const carol = SigningKey.generate().principal;
    await users.put(carol, JSON.stringify(storedUser(carol, "active")));
    await members.put(memberKey(ROOM, carol), memberRecord(carol));
    const resolve = roleResolver(users);
    expect(await eventually(() => resolve(carol).catch(() => null), (r) => r !== null, { what: "carol's role" })).toBe("member");
    expect(await eventually(() => roomRole(members, ROOM, carol).catch(() => null), (r) => r !== null, { what: "carol's room role" })).toBe("member");

    await users.put(carol, JSON.stringify(storedUser(carol, "revoked")));
    await members.delete(memberKey(ROOM, carol));
    expect(await resolve(carol)).toBeNull();
    await expect(requireMember(members, ROOM, carol)).rejects.toMatchObject({ code: ErrorCode.Forbidden });

    // A members leader out of contact with its quorum: 503, not "not a member".
    const c = controllableKv(members);
    const real = await members.status();
    c.info(async () => ({ ...real, streamInfo: { ...real.streamInfo, cluster: { leader: "n1", replicas: [{ name: "n2", current: true, active: 6e9 }, { name: "n3", current: true, active: 6e9 }] } } }));
    await expect(roomRole(c.kv, ROOM, carol)).rejects.toMatchObject({ code: ErrorCode.Unavailable });
  });
});
