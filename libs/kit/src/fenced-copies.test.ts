import { describe, expect, it } from "vitest";
import type { KV, KvEntry } from "@nats-io/kv";
import { pino } from "pino";
import { FencedCopies, FencedCopyBehindError } from "./fenced-copy.js";
import type { FencedView } from "./fenced-copy.js";
import { LeaderOutOfContactError } from "./leader-contact.js";

const logger = pino({ level: "silent" });

/** A peer as the leader sees it: heard `silentMs` ago. */
const peer = (name: string, silentMs: number) => ({ name, current: true, active: silentMs * 1e6 });
/** A leader that heard both peers 800 ms ago: in contact. */
const inContact = { leader: "n1", replicas: [peer("n2", 800), peer("n3", 800)] };

interface Fence {
  /** The leader's last sequence when the fence was sent. */
  readonly lastSeq: number;
  answer(): void;
  fail(err: Error): void;
}

/**
 * A bucket under the test's hand (the pure logic of the fence, not NATS:
 * the real server is in fenced-copy.test.ts). Each `status` call (one per
 * fence) reads the leader's last sequence as it is sent, and is answered at
 * once with `cluster` unless `hold` is set, then when the test says;
 * `ack` is a write the leader acknowledged, which the watch applies only
 * on `apply` (a copy lagging its leader until then).
 */
function fakeBucket(stream: string, opts: { hold?: boolean } = {}) {
  let lastSeq = 0;
  const fences: Fence[] = [];
  const queue: KvEntry[] = [];
  let wake: () => void = () => undefined;
  let stopped = false;
  const state = { cluster: inContact as unknown, hold: opts.hold === true };
  const entry = (key: string, value: unknown, revision: number): KvEntry =>
    ({ key, operation: "PUT", revision, value: new TextEncoder().encode(JSON.stringify(value)), json: () => value }) as unknown as KvEntry;
  const kv = {
    status: () =>
      new Promise((resolve, reject) => {
        const seq = lastSeq;
        const fence: Fence = {
          lastSeq: seq,
          answer: () => resolve({ streamInfo: { config: { name: stream }, state: { last_seq: seq }, cluster: state.cluster } }),
          fail: reject,
        };
        fences.push(fence);
        if (!state.hold) fence.answer();
      }),
    async watch() {
      return {
        stop: () => {
          stopped = true;
          wake();
        },
        async *[Symbol.asyncIterator]() {
          while (!stopped) {
            const e = queue.shift();
            if (e !== undefined) yield e;
            else await new Promise<void>((r) => (wake = r));
          }
        },
      };
    },
  } as unknown as KV;
  return {
    kv,
    state,
    /** Fences sent so far, in order. */
    fences,
    /** The leader acknowledges a write: fences sent from now read its sequence; the copy has not applied it yet. */
    ack(key: string, value: unknown): KvEntry {
      return entry(key, value, ++lastSeq);
    },
    apply(e: KvEntry): void {
      queue.push(e);
      wake();
    },
    /** A write acknowledged and applied by the watch. */
    put(key: string, value: unknown): void {
      this.apply(this.ack(key, value));
    },
  };
}

type Buckets = { users: { status: string; revision: number }; rooms: string[] };

/** Copies of two fake buckets, each record held as its parsed value and revision. */
function copiesOf(users: ReturnType<typeof fakeBucket>, rooms: ReturnType<typeof fakeBucket>, maxFencesInFlight?: number, fenceTimeoutMs?: number) {
  return new FencedCopies<Buckets>(
    {
      users: { kv: users.kv, op: "test.users", hold: (e) => ({ status: e.json<{ status: string }>().status, revision: e.revision }) },
      rooms: { kv: rooms.kv, op: "test.rooms", hold: (e) => e.json<string[]>() },
    },
    { logger, ...(maxFencesInFlight !== undefined ? { maxFencesInFlight } : {}), ...(fenceTimeoutMs !== undefined ? { fenceTimeoutMs } : {}) },
  );
}

const both = (key: string) => (view: FencedView<Buckets>) => ({ user: view.get("users", key), rooms: view.get("rooms", key) });

async function rejection(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => undefined,
    (e: unknown) => e,
  );
}

const nextTurn = () => new Promise<void>((r) => setImmediate(r));
/** A bounded wait on a condition the copies reach within a few turns of the event loop (no timers involved). */
async function until(cond: () => boolean, what: string): Promise<void> {
  for (let turn = 0; turn < 1_000; turn++) {
    if (cond()) return;
    await nextTurn();
  }
  throw new Error(`${what}: not reached`);
}

function settledFlag(p: Promise<unknown>): { settled: boolean } {
  const flag = { settled: false };
  p.then(
    () => (flag.settled = true),
    () => (flag.settled = true),
  );
  return flag;
}

describe("FencedCopies: several buckets answered from memory only behind one fence", () => {
  it("answers from memory once every bucket's leader, in contact with its quorum, vouches; reads arriving together share one fence", async () => {
    const users = fakeBucket("KV_users");
    const rooms = fakeBucket("KV_rooms");
    users.put("alice", { status: "active" });
    rooms.put("alice", ["r1"]);
    const copies = copiesOf(users, rooms);
    try {
      const reads = await Promise.all([copies.read(both("alice")), copies.read(both("alice")), copies.read(both("bob"))]);
      expect(reads).toEqual([
        { user: { status: "active", revision: 1 }, rooms: ["r1"] },
        { user: { status: "active", revision: 1 }, rooms: ["r1"] },
        { user: null, rooms: null },
      ]);
      // One stream info per bucket for the three reads.
      expect([users.fences.length, rooms.fences.length]).toEqual([1, 1]);
      expect(copies.stats).toEqual({ fences: 1, maxInFlight: 1, fromMemory: 3, behind: 0, refused: 0, held: 0 });
    } finally {
      copies.stop();
    }
  });

  it("refuses the whole batch when either leader is out of contact, is not the leader, or names none, though both copies are current", async () => {
    const bad = {
      "heard its peers 5 s ago": { leader: "n1", replicas: [peer("n2", 5_000), peer("n3", 5_000)] },
      // Seen on a real cluster: a node resumed from a pause answering for the new leader n1, which it lists among its replicas.
      "answered by a replica that is not the leader": { leader: "n1", replicas: [peer("n1", 0), peer("n3", 0)] },
      "names no leader": { replicas: [peer("n1", 0), peer("n2", 0), peer("n3", 0)] },
    };
    for (const [why, cluster] of Object.entries(bad)) {
      for (const which of ["users", "rooms"] as const) {
        const buckets = { users: fakeBucket("KV_users"), rooms: fakeBucket("KV_rooms") };
        buckets.users.put("alice", { status: "active" });
        buckets[which].state.cluster = cluster;
        const copies = copiesOf(buckets.users, buckets.rooms);
        try {
          const err = await rejection(copies.read(both("alice")));
          expect(err, `${which} ${why}`).toBeInstanceOf(LeaderOutOfContactError);
          expect(copies.stats).toMatchObject({ fromMemory: 0, refused: 1 });
        } finally {
          copies.stop();
        }
      }
    }
  });

  it("refuses a batch whose fence is not answered within the bound, rather than answering from the copy", async () => {
    const users = fakeBucket("KV_users");
    const rooms = fakeBucket("KV_rooms", { hold: true });
    users.put("alice", { status: "active" });
    const copies = copiesOf(users, rooms, undefined, 100);
    try {
      const started = Date.now();
      expect(await rejection(copies.read(both("alice")))).toMatchObject({ message: expect.stringMatching(/test\.rooms: fence not answered within 100 ms/) as unknown });
      expect(Date.now() - started).toBeGreaterThanOrEqual(90);
      expect(copies.stats).toMatchObject({ fromMemory: 0, refused: 1 });
    } finally {
      copies.stop();
    }
  });

  it("refuses while a copy stays behind its fence past the catch-up bound, and answers the newer record once it applies it", async () => {
    const users = fakeBucket("KV_users");
    const rooms = fakeBucket("KV_rooms");
    users.put("alice", { status: "active" });
    const copies = copiesOf(users, rooms);
    try {
      expect(await copies.read(both("alice"))).toMatchObject({ user: { status: "active" } });
      const revoke = users.ack("alice", { status: "revoked" });
      const err = await rejection(copies.read(both("alice")));
      expect(err).toBeInstanceOf(FencedCopyBehindError);
      expect(copies.stats).toMatchObject({ fromMemory: 1, behind: 1, refused: 0 });
      users.apply(revoke);
      expect(await copies.read(both("alice"))).toMatchObject({ user: { status: "revoked" } });
    } finally {
      copies.stop();
    }
  });

  it("hands the copies out only while the read runs: a view kept for later cannot read unfenced", async () => {
    const users = fakeBucket("KV_users");
    const rooms = fakeBucket("KV_rooms");
    users.put("alice", { status: "active" });
    const copies = copiesOf(users, rooms);
    try {
      let kept: FencedView<Buckets> | undefined;
      await copies.read((view) => (kept = view));
      expect(() => kept!.get("users", "alice")).toThrow(/after its read returned/);
    } finally {
      copies.stop();
    }
  });
});

describe("FencedCopies fence scheduling", () => {
  it("never answers a read from a fence sent before it arrived: a revoke acknowledged while a fence was out is never read as active", async () => {
    const users = fakeBucket("KV_users", { hold: true });
    const rooms = fakeBucket("KV_rooms");
    users.put("alice", { status: "active" });
    const copies = copiesOf(users, rooms, 2);
    try {
      const before = copies.begin().read(both("alice"));
      await until(() => users.fences.length === 1, "the first fence sent");
      // The revoke is acknowledged while that fence is out; the copy has not applied it yet.
      const revoke = users.ack("alice", { status: "revoked" });
      const after = copies.begin().read(both("alice"));
      const afterDone = settledFlag(after);
      // A second fence goes out at once for the read that arrived after the first was sent.
      await until(() => users.fences.length === 2, "a second fence sent while the first is out");
      expect(users.fences.map((f) => f.lastSeq)).toEqual([1, 2]);
      users.fences[0]!.answer();
      // Arrived before the revoke: may be answered from the copy as it was.
      expect(await before).toMatchObject({ user: { status: "active" } });
      await nextTurn();
      // The first fence's answer (sequence 1) must not decide the later read: the copy still holds the active record.
      expect(afterDone.settled).toBe(false);
      users.fences[1]!.answer();
      users.apply(revoke);
      expect(await after).toMatchObject({ user: { status: "revoked" } });
      expect(copies.stats).toMatchObject({ fences: 2, maxInFlight: 2, fromMemory: 2, behind: 0, refused: 0 });
    } finally {
      copies.stop();
    }
  });

  it("keeps at most maxFencesInFlight fences out; reads beyond wait together for the next free slot, and only a read whose fence leaves at once is told so", async () => {
    for (const max of [1, 2]) {
      const users = fakeBucket("KV_users", { hold: true });
      const rooms = fakeBucket("KV_rooms");
      users.put("alice", { status: "active" });
      const copies = copiesOf(users, rooms, max);
      try {
        const reads: Array<Promise<unknown>> = [];
        const leavesNow: boolean[] = [];
        // Five reads, each in its own turn of the event loop (not one socket read).
        for (let i = 0; i < 5; i++) {
          const begun = copies.begin();
          leavesNow.push(begun.leavesNow);
          reads.push(begun.read(both("alice")));
          await nextTurn();
        }
        expect(users.fences).toHaveLength(max);
        expect(leavesNow).toEqual([...Array<boolean>(max).fill(true), ...Array<boolean>(5 - max).fill(false)]);
        // The rest wait in one batch, sent when a slot frees: after all of them arrived.
        users.fences[0]!.answer();
        await until(() => users.fences.length === max + 1, "the waiting batch sent");
        for (const f of users.fences.slice(1)) f.answer();
        expect(await Promise.all(reads)).toHaveLength(5);
        expect(copies.stats).toMatchObject({ fences: max + 1, maxInFlight: max, fromMemory: 5 });
      } finally {
        copies.stop();
      }
    }
  });

  it("fails closed when the fence fails: a begun read is refused, and one never read leaves no unhandled rejection", async () => {
    const users = fakeBucket("KV_users", { hold: true });
    const rooms = fakeBucket("KV_rooms");
    users.put("alice", { status: "active" });
    const copies = copiesOf(users, rooms);
    try {
      const used = copies.begin();
      // A caller that gives up before its read (a login refused on its signature) never reads.
      copies.begin();
      await until(() => users.fences.length === 1, "the fence sent");
      users.fences[0]!.fail(new Error("no responders"));
      expect(await rejection(used.read(both("alice")))).toMatchObject({ message: "no responders" });
      expect(copies.stats).toMatchObject({ fences: 1, fromMemory: 0, refused: 1 });
      // The next read sends a new fence.
      const next = copies.read(both("alice"));
      await until(() => users.fences.length === 2, "a new fence sent");
      users.fences[1]!.answer();
      expect(await next).toMatchObject({ user: { status: "active" } });
    } finally {
      copies.stop();
    }
  });
});
