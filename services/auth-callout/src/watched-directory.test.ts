import { describe, expect, it } from "vitest";
import type { KV } from "@nats-io/kv";
import { pino } from "pino";
import { createIdentity } from "@unibus/crypto";
import { LeaderOutOfContactError } from "@unibus/kit";
import { DirectoryError } from "./errors.js";
import { FENCE_TIMEOUT_MS, WatchedDirectory } from "./store/watched-directory.js";

const logger = pino({ level: "silent" });
const alice = createIdentity().principal;
const user = { principal: alice, handle: "alice", role: "member", status: "active", addedAt: new Date(0).toISOString(), addedBy: alice };

/**
 * A bucket holding one record for alice at revision 1, replayed by its watch,
 * whose stream info comes from `status` (the leader's view of its peers).
 */
function bucket(record: unknown, status: () => Promise<unknown>): KV {
  const entry = { key: alice, operation: "PUT", revision: 1, json: () => record };
  return {
    async get() {
      return entry;
    },
    status,
    async watch() {
      let stop: () => void = () => undefined;
      const ended = new Promise<void>((r) => (stop = r));
      return {
        stop,
        async *[Symbol.asyncIterator]() {
          yield entry;
          await ended;
        },
      };
    },
  } as unknown as KV;
}

const leaderHeardPeersAgo = (silentMs: number) => async () => ({
  streamInfo: { config: { name: "KV_x" }, state: { last_seq: 1 }, cluster: { leader: "n1", replicas: [1, 2].map(() => ({ current: true, active: silentMs * 1e6 })) } },
});

async function rejection(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => undefined,
    (e: unknown) => e,
  );
}

describe("WatchedDirectory fences", () => {
  it("answers from memory once leaders in contact with their quorum vouch for the copy", async () => {
    const dir = await WatchedDirectory.start(bucket(user, leaderHeardPeersAgo(800)), bucket({ principal: alice, rooms: { r1: "owner" } }, leaderHeardPeersAgo(800)), { logger });
    try {
      const entries = await Promise.all([dir.lookup(alice), dir.lookup(alice), dir.lookup(alice)]);
      for (const e of entries) expect(e).toMatchObject({ user: { principal: alice }, rooms: { rooms: { r1: "owner" } }, revision: "1:1" });
      // Three logins arriving together share one fence.
      expect(dir.stats).toMatchObject({ fences: 1, fromMemory: 3, behind: 0, refused: 0 });
    } finally {
      dir.stop();
    }
  });

  it("refuses (directory unavailable) a batch whose users or rooms leader has lost contact with its peers, though its copy is current", async () => {
    for (const [u, r] of [
      [5_000, 800],
      [800, 5_000],
    ] as const) {
      const dir = await WatchedDirectory.start(bucket(user, leaderHeardPeersAgo(u)), bucket(null, leaderHeardPeersAgo(r)), { logger });
      try {
        const err = await rejection(dir.lookup(alice));
        expect(err).toBeInstanceOf(DirectoryError);
        expect((err as DirectoryError).cause).toBeInstanceOf(LeaderOutOfContactError);
        expect(dir.stats.fromMemory).toBe(0);
      } finally {
        dir.stop();
      }
    }
  });

  it("refuses a batch whose fence was answered by a replica that is not the leader (as a node resumed from a pause answered)", async () => {
    // Seen on a real cluster: the resumed node, its stream reset to sequence 1, answering for the new leader n1.
    const notLeader = async () => ({
      streamInfo: { config: { name: "KV_x" }, state: { last_seq: 1 }, cluster: { leader: "n1", replicas: ["n1", "n3"].map((name) => ({ name, current: true, active: 0 })) } },
    });
    const leaderless = async () => ({
      streamInfo: { config: { name: "KV_x" }, state: { last_seq: 1 }, cluster: { replicas: ["n1", "n2", "n3"].map((name) => ({ name, current: name === "n2", active: 0 })) } },
    });
    for (const answer of [notLeader, leaderless]) {
      const dir = await WatchedDirectory.start(bucket(user, answer), bucket(null, leaderHeardPeersAgo(800)), { logger });
      try {
        const err = await rejection(dir.lookup(alice));
        expect(err).toBeInstanceOf(DirectoryError);
        expect((err as DirectoryError).cause).toBeInstanceOf(LeaderOutOfContactError);
        expect(dir.stats).toMatchObject({ fromMemory: 0, refused: 1 });
      } finally {
        dir.stop();
      }
    }
  });

  it("refuses a batch whose fence is not answered in time, rather than answering from the copy", async () => {
    const never = () => new Promise<never>(() => undefined);
    const dir = await WatchedDirectory.start(bucket(user, never), bucket(null, leaderHeardPeersAgo(800)), { logger });
    try {
      const started = Date.now();
      const err = await rejection(dir.lookup(alice));
      expect(err).toBeInstanceOf(DirectoryError);
      expect(Date.now() - started).toBeGreaterThanOrEqual(FENCE_TIMEOUT_MS - 50);
      expect(dir.stats).toMatchObject({ fromMemory: 0, refused: 1 });
    } finally {
      dir.stop();
    }
  });

  it("refuses a principal whose stored record is damaged", async () => {
    const dir = await WatchedDirectory.start(bucket({ ...user, principal: createIdentity().principal }, leaderHeardPeersAgo(800)), bucket(null, leaderHeardPeersAgo(800)), { logger });
    try {
      expect(await rejection(dir.lookup(alice))).toBeInstanceOf(DirectoryError);
    } finally {
      dir.stop();
    }
  });
});

/**
 * A bucket holding one record for alice at revision 1 whose `status`
 * calls (one per fence) are answered only when the test says.
 */
function heldBucket(first: unknown) {
  const lastSeq = 1;
  const answers: Array<{ answer(): void; fail(err: Error): void; lastSeq: number }> = [];
  const queue: KvEntryLike[] = [{ key: alice, operation: "PUT", revision: 1, json: () => first }];
  let wake: () => void = () => undefined;
  let stopped = false;
  const kv = {
    status: () =>
      new Promise((resolve, reject) => {
        const seq = lastSeq;
        answers.push({
          lastSeq: seq,
          answer: () => resolve({ streamInfo: { config: { name: "KV_users" }, state: { last_seq: seq }, cluster: { leader: "n1", replicas: [] } } }),
          fail: reject,
        });
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
    /** Fences sent so far, in order. */
    fences: answers,
  };
}

interface KvEntryLike {
  key: string;
  operation: string;
  revision: number;
  json(): unknown;
}

const rooms = { principal: alice, rooms: { r1: "owner" } };
const nextTurn = () => new Promise<void>((r) => setImmediate(r));
/** A bounded wait on a condition the directory reaches within a few turns of the event loop (no timers involved). */
async function until(cond: () => boolean, what: string): Promise<void> {
  for (let turn = 0; turn < 1_000; turn++) {
    if (cond()) return;
    await nextTurn();
  }
  throw new Error(`${what}: not reached`);
}

// The scheduling itself (a lookup only answered by a fence sent after it
// arrived, the bound on fences out) is the kit's FencedCopies and tested
// with it; these check that the callout's options reach it and that a
// failed fence is the callout's refusal.
describe("WatchedDirectory fence scheduling", () => {
  it("keeps at most maxFencesInFlight fences out; lookups beyond wait together for the next free slot", async () => {
    for (const max of [1, 2]) {
      const users = heldBucket(user);
      const dir = await WatchedDirectory.start(users.kv, bucket(rooms, leaderHeardPeersAgo(800)), { logger, maxFencesInFlight: max });
      try {
        const lookups: Array<Promise<unknown>> = [];
        const leavesNow: boolean[] = [];
        // Five logins, each in its own turn of the event loop (not one socket read).
        for (let i = 0; i < 5; i++) {
          const begun = dir.begin();
          leavesNow.push(begun.leavesNow);
          lookups.push(begun.lookup(alice));
          await nextTurn();
        }
        expect(users.fences).toHaveLength(max);
        // Only a login whose fence leaves at once is told so (the callout then lets it leave before its CPU work).
        expect(leavesNow).toEqual([...Array<boolean>(max).fill(true), ...Array<boolean>(5 - max).fill(false)]);
        // The rest wait in one batch, sent when a slot frees: after all of them arrived.
        users.fences[0]!.answer();
        await until(() => users.fences.length === max + 1, "the waiting batch sent");
        for (const f of users.fences.slice(1)) f.answer();
        const entries = await Promise.all(lookups);
        expect(entries).toHaveLength(5);
        expect(dir.stats).toMatchObject({ fences: max + 1, maxInFlight: max, fromMemory: 5 });
      } finally {
        dir.stop();
      }
    }
  });

  it("fails closed when the fence fails: a begun lookup is refused, and one never read leaves no unhandled rejection", async () => {
    const users = heldBucket(user);
    const dir = await WatchedDirectory.start(users.kv, bucket(rooms, leaderHeardPeersAgo(800)), { logger });
    try {
      const used = dir.begin();
      // A login refused before its directory read (a bad nonce signature) never looks up.
      dir.begin();
      await until(() => users.fences.length === 1, "the fence sent");
      users.fences[0]!.fail(new Error("no responders"));
      const err = await rejection(used.lookup(alice));
      expect(err).toBeInstanceOf(DirectoryError);
      expect(dir.stats).toMatchObject({ fences: 1, fromMemory: 0, refused: 1 });
    } finally {
      dir.stop();
    }
  });
});
