import { describe, expect, it, vi } from "vitest";
import type { MembershipRoomsLogReply } from "@unibus/contracts";
import { SigningKey, signEnvelope, toBase64Url } from "@unibus/crypto";
import { RoomLogErrorReason, RoomLogOpSubject, RoomLogs, deriveRoomId, roomLogEntryHash, verifyRoomLog } from "./membership-log.js";
import type { RoomLogEntry, RoomLogOp, RoomLogRole } from "./membership-log.js";

const enc = new TextEncoder();

/** Builds signed entries the way the membership service does, chaining each to the previous. */
class LogBuilder {
  readonly entries: RoomLogEntry[] = [];
  roomId = "";

  push(actor: SigningKey, op: RoomLogOp, body: Record<string, unknown>, effect: { target: string; role?: RoomLogRole; asAdmin?: boolean }): RoomLogEntry {
    const subject = RoomLogOpSubject[op];
    const bytes = enc.encode(JSON.stringify(op === "create" ? body : { roomId: this.roomId, ...body }));
    const env = signEnvelope(actor, subject, bytes);
    if (op === "create") this.roomId = deriveRoomId(env.signature);
    const prev = this.entries.at(-1);
    const entry: RoomLogEntry = {
      seq: this.entries.length,
      prev: toBase64Url(prev === undefined ? new Uint8Array(32) : roomLogEntryHash(prev)),
      roomId: this.roomId,
      op,
      subject,
      body: toBase64Url(bytes),
      signer: env.signer,
      timestamp: env.timestamp,
      nonce: env.nonce,
      signature: env.signature,
      target: effect.target,
      ...(effect.role === undefined ? {} : { role: effect.role }),
      ...(effect.asAdmin === true ? { actorRole: "admin" as const } : {}),
      at: new Date().toISOString(),
    };
    this.entries.push(entry);
    return entry;
  }

  create(owner: SigningKey): this {
    this.push(owner, "create", { name: "r", policy: { persist: false, encrypt: true } }, { target: owner.principal, role: "owner" });
    return this;
  }

  invite(actor: SigningKey, who: string, role: RoomLogRole = "member", asAdmin = false): this {
    this.push(actor, "invite", role === "member" ? { principal: who } : { principal: who, role }, { target: who, role, asAdmin });
    return this;
  }

  remove(actor: SigningKey, who: string): this {
    this.push(actor, "remove", { principal: who }, { target: who });
    return this;
  }

  leave(actor: SigningKey): this {
    this.push(actor, "leave", {}, { target: actor.principal });
    return this;
  }
}

/** The reason of the RoomLogError `fn` throws. */
function reasonOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return (err as { reason?: string }).reason;
  }
  return undefined;
}

async function asyncReason(p: Promise<unknown>): Promise<string | undefined> {
  return p.then(
    () => undefined,
    (err: unknown) => (err as { reason?: string }).reason,
  );
}

const owner = SigningKey.generate();
const bob = SigningKey.generate();
const carol = SigningKey.generate();
const admin = SigningKey.generate();

describe("membership log verification", () => {
  it("replays create, invite, role change, removal and leave into the membership at every position", () => {
    const b = new LogBuilder().create(owner).invite(owner, bob.principal).invite(owner, carol.principal, "owner").remove(carol, bob.principal).leave(carol);
    const log = verifyRoomLog(b.roomId, b.entries);
    expect(log.headSeq).toBe(4);
    expect([...log.members]).toEqual([[owner.principal, "owner"]]);
    expect([...log.membersAt(2)].sort()).toEqual([[bob.principal, "member"], [carol.principal, "owner"], [owner.principal, "owner"]].sort());
    expect(log.membersAt(3).has(bob.principal)).toBe(false);
    expect(toBase64Url(log.hashAt(4)!)).toBe(toBase64Url(roomLogEntryHash(b.entries[4]!)));
  });

  it("refuses an entry whose actor signature does not verify", () => {
    const b = new LogBuilder().create(owner).invite(owner, bob.principal);
    const forged = { ...b.entries[1]!, signature: b.entries[0]!.signature };
    expect(reasonOf(() => verifyRoomLog(b.roomId, [b.entries[0]!, forged]))).toBe(RoomLogErrorReason.badSignature);
  });

  it("refuses an invite by a member who is not an owner, and by an admin nobody pinned", () => {
    const b = new LogBuilder().create(owner).invite(owner, bob.principal).invite(bob, carol.principal);
    expect(reasonOf(() => verifyRoomLog(b.roomId, b.entries))).toBe(RoomLogErrorReason.unauthorized);
    const a = new LogBuilder().create(owner).invite(admin, carol.principal, "member", true);
    expect(reasonOf(() => verifyRoomLog(a.roomId, a.entries))).toBe(RoomLogErrorReason.unauthorized);
    expect(verifyRoomLog(a.roomId, a.entries, { trustedAdmins: [admin.principal] }).members.has(carol.principal)).toBe(true);
  });

  it("refuses a leave by a non-member and a removal of a non-member", () => {
    const b = new LogBuilder().create(owner).leave(bob);
    expect(reasonOf(() => verifyRoomLog(b.roomId, b.entries))).toBe(RoomLogErrorReason.unauthorized);
    const r = new LogBuilder().create(owner).remove(owner, bob.principal);
    expect(reasonOf(() => verifyRoomLog(r.roomId, r.entries))).toBe(RoomLogErrorReason.badEntry);
  });

  it("refuses a gap, a broken chain, and entry 0 that is not the creation", () => {
    const b = new LogBuilder().create(owner).invite(owner, bob.principal).invite(owner, carol.principal);
    expect(reasonOf(() => verifyRoomLog(b.roomId, [b.entries[0]!, b.entries[2]!]))).toBe(RoomLogErrorReason.gap);
    const rechained = { ...b.entries[2]!, seq: 1 };
    expect(reasonOf(() => verifyRoomLog(b.roomId, [b.entries[0]!, rechained]))).toBe(RoomLogErrorReason.fork);
    const noCreate = { ...b.entries[1]!, seq: 0, prev: toBase64Url(new Uint8Array(32)) };
    expect(reasonOf(() => verifyRoomLog(b.roomId, [noCreate]))).toBe(RoomLogErrorReason.missing);
  });

  it("refuses server-assigned fields that disagree with the signed request (tampered target, role, room)", () => {
    const b = new LogBuilder().create(owner).invite(owner, bob.principal);
    expect(reasonOf(() => verifyRoomLog(b.roomId, [b.entries[0]!, { ...b.entries[1]!, target: carol.principal }]))).toBe(RoomLogErrorReason.badEntry);
    expect(reasonOf(() => verifyRoomLog(b.roomId, [b.entries[0]!, { ...b.entries[1]!, role: "owner" }]))).toBe(RoomLogErrorReason.badEntry);
    // Creation replayed as another room's: the id follows from the creator's signature.
    expect(reasonOf(() => verifyRoomLog("ffffffffffffffffffffffff", [{ ...b.entries[0]!, roomId: "ffffffffffffffffffffffff" }]))).toBe(RoomLogErrorReason.badEntry);
  });

  it("refuses an op that is not one of the log's (an inherited name too) or relabelled as another, naming the entry", () => {
    const b = new LogBuilder().create(owner).invite(owner, bob.principal);
    for (const op of ["toString", "constructor", "__proto__", "remove"]) {
      const forged = { ...b.entries[1]!, op } as unknown as RoomLogEntry;
      let caught: unknown;
      try {
        verifyRoomLog(b.roomId, [b.entries[0]!, forged]);
      } catch (err) {
        caught = err;
      }
      expect(caught).toMatchObject({ reason: RoomLogErrorReason.badEntry, seq: 1 });
    }
  });

  it("refuses a signed invite replayed after the removal it preceded", () => {
    const b = new LogBuilder().create(owner).invite(owner, bob.principal).remove(owner, bob.principal);
    const log = verifyRoomLog(b.roomId, b.entries);
    const replay = { ...b.entries[1]!, seq: 3, prev: toBase64Url(log.headHash) };
    expect(reasonOf(() => log.append([replay]))).toBe(RoomLogErrorReason.replayed);
    expect(log.headSeq).toBe(2);
  });
});

describe("RoomLogs (fetch, cache, refuse rollback and fork)", () => {
  /** A fake service answering pages of `entries` (which a test may swap). */
  function server(b: LogBuilder): { fetch: (roomId: string, from: number, limit: number) => Promise<MembershipRoomsLogReply>; entries: RoomLogEntry[] } {
    const s = {
      entries: [...b.entries],
      fetch: (roomId: string, from: number, limit: number): Promise<MembershipRoomsLogReply> =>
        Promise.resolve({ roomId, headSeq: s.entries.length - 1, entries: s.entries.slice(from, from + limit) }),
    };
    return s;
  }

  it("syncs page by page, then only what is new", async () => {
    const b = new LogBuilder().create(owner).invite(owner, bob.principal).invite(owner, carol.principal);
    const s = server(b);
    const asked: number[] = [];
    const logs = new RoomLogs((r, from, limit) => (asked.push(from), s.fetch(r, from, limit)), { pageSize: 2 });
    expect((await logs.sync(b.roomId)).headSeq).toBe(2);
    b.remove(owner, carol.principal);
    s.entries = [...b.entries];
    expect((await logs.sync(b.roomId)).members.has(carol.principal)).toBe(false);
    // Page 2 is asked from the first unseen entry; the next sync from the verified head again.
    expect(asked).toEqual([0, 2, 2]);
  });

  it("refuses a rollback (a shorter log) and a fork (a verified entry replaced)", async () => {
    const b = new LogBuilder().create(owner).invite(owner, bob.principal).invite(owner, carol.principal);
    const s = server(b);
    const logs = new RoomLogs(s.fetch);
    await logs.sync(b.roomId);
    s.entries = s.entries.slice(0, 2);
    expect(await asyncReason(logs.sync(b.roomId))).toBe(RoomLogErrorReason.rollback);
    const other = new LogBuilder();
    other.roomId = b.roomId;
    other.entries.push(b.entries[0]!, b.entries[1]!);
    other.invite(owner, SigningKey.generate().principal);
    s.entries = other.entries;
    expect(await asyncReason(logs.sync(b.roomId))).toBe(RoomLogErrorReason.fork);
  });

  it("refuses a log that ends before a signed position, and a head pinned by an earlier process that is gone", async () => {
    const b = new LogBuilder().create(owner).invite(owner, bob.principal);
    const s = server(b);
    expect(await asyncReason(new RoomLogs(s.fetch).sync(b.roomId, 5))).toBe(RoomLogErrorReason.gap);
    const pinned = new Map<string, { seq: number; hash: string }>();
    const heads = { get: (r: string) => pinned.get(r), set: (r: string, h: { seq: number; hash: string }) => void pinned.set(r, h) };
    await new RoomLogs(s.fetch, { heads }).sync(b.roomId);
    expect(pinned.get(b.roomId)?.seq).toBe(1);
    s.entries = s.entries.slice(0, 1);
    expect(await asyncReason(new RoomLogs(s.fetch, { heads }).sync(b.roomId))).toBe(RoomLogErrorReason.rollback);
  });
});

describe("RoomLogs: pages asked ahead", () => {
  function roomOf(members: number): LogBuilder {
    const b = new LogBuilder().create(owner);
    for (let i = 0; i < members; i++) b.invite(owner, SigningKey.generate().principal);
    return b;
  }
  const page = (b: LogBuilder, entries: readonly RoomLogEntry[], from: number, limit: number): MembershipRoomsLogReply => ({ roomId: b.roomId, headSeq: entries.length - 1, entries: entries.slice(from, from + limit) });

  it("asks a cold log's pages ahead and applies them in order however they arrive", async () => {
    const b = roomOf(9);
    const asked: number[] = [];
    const waiting: (() => void)[] = [];
    let wake: (() => void) | undefined;
    /** Resolves once `n` pages have been asked (the fetch itself tells). */
    const askedCount = (n: number): Promise<void> => (asked.length >= n ? Promise.resolve() : new Promise((resolve) => (wake = () => asked.length >= n && resolve())));
    const logs = new RoomLogs(
      (_r, from, limit) => {
        asked.push(from);
        // Held until answered below, last-asked first.
        const answer = new Promise<MembershipRoomsLogReply>((resolve) => waiting.push(() => resolve(page(b, b.entries, from, limit))));
        wake?.();
        return answer;
      },
      { pageSize: 3 },
    );
    const synced = logs.sync(b.roomId);
    await askedCount(2);
    expect(asked).toEqual([0, 3]);
    waiting.splice(0).reverse().forEach((answer) => answer());
    await askedCount(4);
    waiting.splice(0).reverse().forEach((answer) => answer());
    const log = await synced;
    expect(log.headSeq).toBe(9);
    expect(log.members.size).toBe(10);
    expect(asked).toEqual([0, 3, 6, 9]);
  });

  it("a page that cannot be read fails the sync and keeps what verified before it; a later sync goes on from there", async () => {
    const b = roomOf(7);
    let broken = true;
    const asked: number[] = [];
    const logs = new RoomLogs(
      (_r, from, limit) => {
        asked.push(from);
        return broken && from === 4 ? Promise.reject(new Error("store unavailable")) : Promise.resolve(page(b, b.entries, from, limit));
      },
      { pageSize: 2 },
    );
    await expect(logs.sync(b.roomId)).rejects.toThrow("store unavailable");
    expect(logs.cached(b.roomId)?.headSeq).toBe(3);
    broken = false;
    expect((await logs.sync(b.roomId)).headSeq).toBe(7);
  });

  it("a page with a bad signature fails the sync at that entry; nothing after it is applied", async () => {
    const b = roomOf(7);
    const entries = b.entries.map((e) => ({ ...e }));
    entries[5] = { ...entries[5]!, signature: entries[6]!.signature };
    const logs = new RoomLogs((_r, from, limit) => Promise.resolve(page(b, entries, from, limit)), { pageSize: 2 });
    expect(await asyncReason(logs.sync(b.roomId))).toBe(RoomLogErrorReason.badSignature);
    expect(logs.cached(b.roomId)?.headSeq).toBe(4);
  });

  it("a page's batch check (on the pool past 64 entries) answers as verifyEnvelope does: a swapped signature, a second spelling of one and a bad nonce each fail at their entry", async () => {
    const b = roomOf(150);
    const sig = b.entries[100]!.signature;
    // The last character carries 2 bits and 4 that must be zero: another one with the same 2 bits decodes to the same bytes.
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const respelled = sig.slice(0, -1) + alphabet[alphabet.indexOf(sig.at(-1)!) ^ 1]!;
    // Read by another principal (every entry verified), and by the owner who signed them (its own entries checked by signing again).
    for (const own of [undefined, owner]) {
      for (const tampered of [{ signature: b.entries[101]!.signature }, { signature: respelled }, { nonce: b.entries[100]!.nonce.toUpperCase() }]) {
        const entries = b.entries.map((e, i) => (i === 100 ? { ...e, ...tampered } : e));
        const logs = new RoomLogs((_r, from, limit) => Promise.resolve(page(b, entries, from, limit)), own === undefined ? {} : { own });
        expect(await asyncReason(logs.sync(b.roomId))).toBe(RoomLogErrorReason.badSignature);
        expect(logs.cached(b.roomId)?.headSeq).toBe(99);
      }
    }
    const logs = new RoomLogs((_r, from, limit) => Promise.resolve(page(b, b.entries, from, limit)));
    expect((await logs.sync(b.roomId)).headSeq).toBe(150);
  });

  it("the owner's own entries are checked by signing them again, a co-owner's by verifying: the same log, the same answer", async () => {
    // The owner creates and invites 99 and a co-owner (carol), who invites 50 more.
    const b = roomOf(99).invite(owner, carol.principal, "owner");
    for (let i = 0; i < 50; i++) b.invite(carol, SigningKey.generate().principal);
    const spy = vi.spyOn(owner, "isOwnSignature");
    try {
      const logs = new RoomLogs((_r, from, limit) => Promise.resolve(page(b, b.entries, from, limit)), { own: owner });
      const log = await logs.sync(b.roomId);
      expect(log.headSeq).toBe(150);
      expect(log.members.size).toBe(151);
      // Asked once for each entry the owner signed (none from the verified-once cache: fresh statements), never for carol's.
      expect(spy.mock.results.length).toBe(101);
      expect(spy.mock.results.every((r) => r.value === true)).toBe(true);
      // A reader without the owner's key makes the same log of the same entries.
      const other = await new RoomLogs((_r, from, limit) => Promise.resolve(page(b, b.entries, from, limit))).sync(b.roomId);
      expect([...other.members].sort()).toEqual([...log.members].sort());
    } finally {
      spy.mockRestore();
    }
  });

  it("a page asked ahead that is never needed cannot fail the sync, nor one older than the entries verified since; a fresh rollback still does", async () => {
    const short = roomOf(1);
    const logs = new RoomLogs((_r, from, limit) => (from === 0 ? Promise.resolve(page(short, short.entries, from, limit)) : Promise.reject(new Error("never needed"))), { pageSize: 4 });
    expect((await logs.sync(short.roomId)).headSeq).toBe(1);

    // The page asked ahead is answered from before the log grew (empty, a lower head); the first from after.
    const b = roomOf(3);
    const before = b.entries.slice(0, 2);
    b.invite(owner, SigningKey.generate().principal).invite(owner, SigningKey.generate().principal);
    const asked: number[] = [];
    const grown = new RoomLogs(
      (_r, from, limit) => {
        asked.push(from);
        return Promise.resolve(asked.length === 2 ? page(b, before, from, limit) : page(b, b.entries, from, limit));
      },
      { pageSize: 2 },
    );
    expect((await grown.sync(b.roomId)).headSeq).toBe(5);
    // The old answer dropped, pages 2 and 4 are asked again.
    expect(asked).toEqual([0, 2, 4, 2, 4]);

    // Asked again after entry 3 verified, a head of 1 is the service going back.
    const lying = new RoomLogs((_r, from, limit) => Promise.resolve(from === 0 ? page(b, b.entries, from, limit) : { roomId: b.roomId, headSeq: 1, entries: [] }), { pageSize: 4 });
    expect(await asyncReason(lying.sync(b.roomId))).toBe(RoomLogErrorReason.rollback);
  });

  it("a service that serves shorter pages than asked is followed to its head", async () => {
    const b = roomOf(8);
    const asked: number[] = [];
    const logs = new RoomLogs(
      (_r, from) => {
        asked.push(from);
        return Promise.resolve(page(b, b.entries, from, 2));
      },
      { pageSize: 3 },
    );
    expect((await logs.sync(b.roomId)).headSeq).toBe(8);
    expect(asked.slice(0, 3)).toEqual([0, 3, 2]);
  });
});

describe("membership log vectors (contracts/vectors/membership-log.json)", () => {
  it("entry hashes, the derived room id and the membership after each entry match the independent generator", async () => {
    const { readFile } = await import("node:fs/promises");
    const v = JSON.parse(await readFile(new URL("../../../../contracts/vectors/membership-log.json", import.meta.url), "utf8")) as { roomId: string; entries: RoomLogEntry[]; hashes: string[]; membersAfter: string[][] };
    expect(deriveRoomId(v.entries[0]!.signature)).toBe(v.roomId);
    expect(v.entries.map((e) => Buffer.from(roomLogEntryHash(e)).toString("hex"))).toEqual(v.hashes);
    const log = verifyRoomLog(v.roomId, v.entries);
    expect(v.membersAfter.map((_, i) => [...log.membersAt(i).keys()].sort())).toEqual(v.membersAfter);
  });
});
