// rooms.list of the caller's own rooms, and the revoke's room sweep, read
// the caller's grants from the fenced copy of `rooms_by_member`, on a real
// nats-server. The handler's store sees that bucket through a proxy whose
// get always fails and whose watch can lag, stall or lose its fence: a list
// that read past the copy, or answered without its fence, fails here.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { Kvm } from "@nats-io/kv";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { ErrorCode, ErrorReason } from "@unibus/contracts";
import type { MembershipRoomsGetReply } from "@unibus/contracts";
import { SigningKey } from "@unibus/crypto";
import { membershipCopy } from "@unibus/kit";
import type { HandlerContext, SignedCaller } from "@unibus/kit";
import { controllableKv, eventually, startTestServer } from "@unibus/testing";
import type { ControllableKv, TestServer } from "@unibus/testing";
import type { MembershipDeps } from "./deps.js";
import { grantMembership, revokeMembership, roomHandlers } from "./handlers/rooms.js";
import { userHandlers } from "./handlers/users.js";
import type { ConnectionKicker } from "./kick.js";
import { roomSubject } from "./store/records.js";
import type { MemberRecord, RoomRecord, RoomRole, UserRecord } from "./store/records.js";
import { MembershipStore } from "./store/membership-store.js";

const silent = pino({ level: "silent" });
const at = new Date(0).toISOString();
const ctx: HandlerContext = { subject: "unibus.v1.membership.rooms.list", logger: silent, now: Date.now, payload: new Uint8Array(0), body: new Uint8Array(0) };
const noKick: ConnectionKicker = {
  kick: async () => ({ connections: 0, kicked: 0, failed: 0 }),
  kickLater: () => ({ connections: 0, kicked: 0, failed: 0, deferred: true }),
  close: () => undefined,
};

let server: TestServer;
let nc: NatsConnection;
/** The writer's store: real buckets, as another replica that acknowledges changes. */
let writer: MembershipStore;
let grants: KV;
let members: KV;
/** The handlers' view of `members`: no lag, but its fence can be refused. */
let proxiedMembers: ControllableKv;
/** The handlers' store. */
let reader: MembershipStore;
/** The handlers' view of `rooms_by_member`. */
let proxied: ControllableKv;
let list: (req: { cursor?: string; limit?: number; all?: boolean }, principal: string) => Promise<{ rooms: { room: RoomRecord; role?: RoomRole }[]; next_cursor?: string }>;
let deleted: string[];
let revoke: (principal: string) => Promise<unknown>;

let roomSerial = 0;
async function newRoom(owner: string): Promise<string> {
  const id = `room${String(++roomSerial).padStart(8, "0")}`;
  const room: RoomRecord = { id, name: `r${roomSerial}`, subject: roomSubject(id), policy: { persist: false, encrypt: true }, createdBy: owner, createdAt: at };
  await writer.createRoom(room);
  await grantMembership(writer, id, owner, "owner", owner, at);
  return id;
}

/**
 * `principal`'s list once the copy has caught up with the set-up writes (a
 * burst of them lags past the fence's catch-up bound, which is refused).
 */
function settled(principal: string): ReturnType<typeof list> {
  return eventually(() => list({}, principal).catch(() => null), (r) => r !== null, { what: "the copy caught up with the set-up" }) as ReturnType<typeof list>;
}

const ids = (page: { rooms: { room: RoomRecord }[] }): string[] => page.rooms.map((r) => r.room.id);

beforeAll(async () => {
  server = await startTestServer({ jetstream: true });
  nc = await server.connect();
  const kvm = new Kvm(nc);
  const [users, rooms, membersKv] = await Promise.all(["users", "rooms", "members"].map((b) => kvm.create(b, { allow_direct: false })));
  members = membersKv!;
  grants = await kvm.create("rooms_by_member", { allow_direct: false });
  writer = new MembershipStore({ users: users!, rooms: rooms!, members, roomsByMember: grants }, nc);
  // Each entry reaches the handlers' copy 100 ms after it was acknowledged.
  proxied = controllableKv(grants, 100);
  membershipCopy(proxied.kv, silent);
  proxiedMembers = controllableKv(members);
  membershipCopy(proxiedMembers.kv, silent);
  reader = new MembershipStore({ users: users!, rooms: rooms!, members: proxiedMembers.kv, roomsByMember: proxied.kv }, nc);
  const deps = {
    store: reader,
    kicker: noKick,
    consumers: {
      async deleteAll(roomId: string) {
        deleted.push(roomId);
        return 0;
      },
    },
  } as unknown as MembershipDeps;
  const spec = roomHandlers(deps).list;
  list = (req, principal) => {
    const caller: SignedCaller = { anonymous: false, principal, publicKey: new Uint8Array(32), role: "member" };
    return spec.handler(req, caller, ctx) as ReturnType<typeof list>;
  };
  const revokeSpec = userHandlers(deps).revoke;
  const adminCaller: SignedCaller = { anonymous: false, principal: SigningKey.generate().principal, publicKey: new Uint8Array(32), role: "admin" };
  revoke = (principal) => revokeSpec.handler({ principal }, adminCaller, ctx);
});

beforeEach(() => {
  deleted = [];
  proxied.info(undefined);
  proxied.release();
  proxiedMembers.info(undefined);
});

afterAll(async () => {
  membershipCopy(proxied.kv).stop();
  membershipCopy(proxiedMembers.kv).stop();
  await nc?.close();
  await server?.stop();
});

describe("rooms.list (own rooms) from the fenced grant copy", () => {
  it("never lists a room whose removal was acknowledged before the request, though the copy lags the writer by 100 ms per entry", async () => {
    const p = SigningKey.generate().principal;
    const [a, b, c] = [await newRoom(p), await newRoom(p), await newRoom(SigningKey.generate().principal)];
    await grantMembership(writer, c, p, "member", p, at);
    expect(await settled(p)).toEqual({
      rooms: [
        { room: expect.objectContaining({ id: a }), role: "owner" },
        { room: expect.objectContaining({ id: b }), role: "owner" },
        { room: expect.objectContaining({ id: c }), role: "member" },
      ],
    });
    for (let round = 0; round < 3; round++) {
      expect(await revokeMembership(writer, b, p)).not.toBeNull();
      expect(ids(await list({}, p))).toEqual([a, c]);
      // The same fence brings a grant acknowledged just before the list.
      await grantMembership(writer, b, p, "member", p, at);
      expect(await list({}, p)).toMatchObject({ rooms: [{ room: { id: a } }, { room: { id: b }, role: "member" }, { room: { id: c } }] });
    }
    expect(await revokeMembership(writer, c, p)).not.toBeNull();
    expect(ids(await list({}, p))).toEqual([a, b]);
  });

  it("a page costs one fence, however many rooms it holds", async () => {
    const p = SigningKey.generate().principal;
    for (let i = 0; i < 12; i++) await newRoom(p);
    await settled(p);
    const copy = membershipCopy(proxied.kv);
    const before = copy.fences;
    expect((await list({}, p)).rooms).toHaveLength(12);
    expect(copy.fences - before).toBe(1);
  });

  it("pages by id as before: a cursor after the last id listed, a removed room skipped without using the page", async () => {
    const p = SigningKey.generate().principal;
    const mine: string[] = [];
    for (let i = 0; i < 6; i++) mine.push(await newRoom(p));
    await settled(p);
    const first = await list({ limit: 2 }, p);
    expect(ids(first)).toEqual(mine.slice(0, 2));
    expect(first.next_cursor).toBe(`r${mine[1]}`);
    // Removed between pages: the next page holds the two rooms after it.
    await revokeMembership(writer, mine[2]!, p);
    const second = await list({ limit: 2, cursor: first.next_cursor! }, p);
    expect(ids(second)).toEqual([mine[3], mine[4]]);
    expect(second.next_cursor).toBe(`r${mine[4]}`);
    const last = await list({ limit: 2, cursor: second.next_cursor! }, p);
    expect(last).toEqual({ rooms: [{ room: expect.objectContaining({ id: mine[5] }), role: "owner" }] });
    // A principal with no grant record lists nothing.
    expect(await list({}, SigningKey.generate().principal)).toEqual({ rooms: [] });
  });

  it("a fence the leader does not answer is 503 unavailable, never a list", async () => {
    const p = SigningKey.generate().principal;
    await newRoom(p);
    await settled(p);
    proxied.info(() => Promise.reject(new Error("no stream leader")));
    await expect(list({}, p)).rejects.toMatchObject({ code: ErrorCode.Unavailable, reason: ErrorReason.Unavailable });
    proxied.info(undefined);
    expect((await list({}, p)).rooms).toHaveLength(1);
  });

  it("a copy stalled behind its fence is 503 unavailable, never the list from before the removal", async () => {
    const p = SigningKey.generate().principal;
    const [a, b] = [await newRoom(p), await newRoom(p)];
    expect(ids(await settled(p))).toEqual([a, b]);
    proxied.stall();
    await revokeMembership(writer, a, p);
    await expect(list({}, p)).rejects.toMatchObject({ code: ErrorCode.Unavailable });
    proxied.release();
    expect(ids(await settled(p))).toEqual([b]);
  });

  it("a damaged grant record, or one naming another principal, is 500 corrupt_record", async () => {
    const p = SigningKey.generate().principal;
    await grants.put(p, JSON.stringify({ principal: p, rooms: { room00000001: "superuser" } }));
    await expect(list({}, p)).rejects.toMatchObject({ code: ErrorCode.Internal, reason: ErrorReason.CorruptRecord });
    await grants.put(p, "{not json");
    await expect(list({}, p)).rejects.toMatchObject({ code: ErrorCode.Internal, reason: ErrorReason.CorruptRecord });
    const other = SigningKey.generate().principal;
    await grants.put(p, JSON.stringify({ principal: other, rooms: {} }));
    await expect(list({}, p)).rejects.toMatchObject({ code: ErrorCode.Internal, reason: ErrorReason.CorruptRecord });
  });

  it("all: true stays admin only, refused before any read", async () => {
    const p = SigningKey.generate().principal;
    proxied.info(() => Promise.reject(new Error("no stream leader")));
    await expect(list({ all: true }, p)).rejects.toMatchObject({ code: ErrorCode.Forbidden });
  });
});

describe("users.revoke sweeps the rooms of its grant record", () => {
  async function addUser(): Promise<string> {
    const p = SigningKey.generate().principal;
    const user: UserRecord = { principal: p, handle: "h", role: "member", status: "active", addedAt: at, addedBy: p };
    await writer.createUser(user);
    return p;
  }

  it("deletes the leftover consumers of every room granted before the revoke, read from the fenced copy", async () => {
    const p = await addUser();
    const rooms = [await newRoom(p), await newRoom(SigningKey.generate().principal)];
    await grantMembership(writer, rooms[1]!, p, "member", p, at);
    await settled(p);
    await revoke(p);
    expect(deleted.sort()).toEqual(rooms.sort());
  });

  it("still answers when the fence fails: the revoke is durable, the sweep waits for the next start", async () => {
    const p = await addUser();
    await newRoom(p);
    proxied.info(() => Promise.reject(new Error("no stream leader")));
    await expect(revoke(p)).resolves.toMatchObject({ user: { principal: p, status: "revoked" } });
    expect((await writer.getUser(p))?.value.status).toBe("revoked");
  });
});

describe("rooms.get's page of members", () => {
  it("never names a member whose removal was acknowledged, though the page was read from before it", async () => {
    const owner = SigningKey.generate().principal;
    const gone = SigningKey.generate().principal;
    const room = await newRoom(owner);
    await grantMembership(writer, room, gone, "member", owner, at);
    // The page as a consumer on a lagging replica would still deliver it after the removal.
    const stale = await reader.pageEntries<MemberRecord>("members", 1, 100, `${room}.*`);
    expect(stale.items.map((m) => m.principal).sort()).toEqual([owner, gone].sort());
    await revokeMembership(writer, room, gone);
    const store = Object.assign(Object.create(reader) as MembershipStore, { pageEntries: async () => stale });
    const spec = roomHandlers({ store } as unknown as MembershipDeps).get;
    const caller: SignedCaller = { anonymous: false, principal: owner, publicKey: new Uint8Array(32), role: "member" };
    const page = (await spec.handler({ roomId: room }, caller, ctx)) as MembershipRoomsGetReply;
    expect(page.members.map((m) => m.principal)).toEqual([owner]);
  });

  it("confirms a whole page with one fence, and refuses it (503) when the fence fails", async () => {
    const owner = SigningKey.generate().principal;
    const room = await newRoom(owner);
    const listed: MemberRecord[] = [];
    for (let i = 0; i < 30; i++) listed.push((await grantMembership(writer, room, SigningKey.generate().principal, "member", owner, at)).member);
    const copy = membershipCopy(proxiedMembers.kv);
    const before = copy.fences;
    expect(await reader.currentMembers(listed)).toEqual(listed);
    expect(copy.fences - before).toBe(1);
    proxiedMembers.info(() => Promise.reject(new Error("no stream leader")));
    await expect(reader.currentMembers(listed)).rejects.toMatchObject({ code: ErrorCode.Unavailable });
  });
});
