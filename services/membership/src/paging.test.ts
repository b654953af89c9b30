import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { ErrorCode, UnibusError } from "@unibus/contracts";
import { SigningKey } from "@unibus/crypto";
import { connect } from "@unibus/sdk";
import type { UnibusClient } from "@unibus/sdk";
import { startTestServer, rejectionOf } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { noKicks } from "./kick.js";
import type { UserRecord } from "./store/records.js";
import { createMembershipService } from "./service.js";
import type { RunningMembershipService } from "./service.js";

const silent = pino({ level: "silent" });

const rejection = (p: Promise<unknown>): Promise<UnibusError> => rejectionOf(p, UnibusError);

const BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
/** A principal-shaped key for seeding (never used to sign). */
function fakePrincipal(): string {
  return `U${[...randomBytes(55)].map((b) => BASE32[b % 32]).join("")}`;
}

const SEEDED = 10_000;
let server: TestServer;
let nc: NatsConnection;
let svc: RunningMembershipService;
const bootKey = SigningKey.generate();
const adminKey = SigningKey.generate();
const memberKey = SigningKey.generate();
let admin: UnibusClient;
let member: UnibusClient;
const seeded = new Set<string>();

beforeAll(async () => {
  server = await startTestServer({ jetstream: true });
  nc = await server.connect();
  svc = await createMembershipService(nc, { logger: silent, kicker: noKicks, bootstrapPrincipal: bootKey.principal });
  const boot = await connect({ url: server.url, identity: bootKey });
  await boot.admin.bootstrap(adminKey.principal, "root");
  await boot.close();
  [admin, member] = await Promise.all([connect({ url: server.url, identity: adminKey }), connect({ url: server.url, identity: memberKey })]);
  await admin.users.add(memberKey.principal, "mia", "member");
  // Seeded straight into the bucket: 10,000 signed adds would test the add path, not paging.
  const users = svc.store.buckets.users;
  const addedAt = new Date().toISOString();
  for (let batch = 0; batch < SEEDED / 500; batch++) {
    await Promise.all(
      Array.from({ length: 500 }, (_, i) => {
        const principal = fakePrincipal();
        seeded.add(principal);
        const user: UserRecord = { principal, handle: `u${batch}-${i}`, role: "member", status: "active", addedAt, addedBy: adminKey.principal };
        return users.put(principal, JSON.stringify(user));
      }),
    );
  }
}, 120_000);

afterAll(async () => {
  await Promise.allSettled([admin?.close(), member?.close()]);
  await svc?.stop();
  await server?.stop();
});

describe("users.list pages", () => {
  it("lists 10,000 users through pages, each exactly once, every page well under the payload limit", async () => {
    const all = new Map<string, number>();
    let cursor: string | undefined;
    let pages = 0;
    do {
      const page = await admin.users.list(cursor === undefined ? {} : { cursor });
      pages++;
      expect(page.users.length).toBeLessThanOrEqual(500);
      expect(Buffer.byteLength(JSON.stringify(page))).toBeLessThan(512 * 1024);
      for (const u of page.users) all.set(u.principal, (all.get(u.principal) ?? 0) + 1);
      cursor = page.next_cursor;
    } while (cursor !== undefined);
    expect(all.size).toBe(SEEDED + 2);
    expect([...all.values()].every((n) => n === 1)).toBe(true);
    for (const p of seeded) expect(all.has(p)).toBe(true);
    expect(all.has(adminKey.principal) && all.has(memberKey.principal)).toBe(true);
    expect(pages).toBeGreaterThanOrEqual(Math.ceil((SEEDED + 2) / 500));
  }, 60_000);

  it("the SDK iterator follows the cursor to the end", async () => {
    let n = 0;
    for await (const u of admin.users.listAll({ limit: 1000 })) {
      expect(u.principal).toMatch(/^U/);
      n++;
    }
    expect(n).toBe(SEEDED + 2);
  }, 60_000);

  it("respects the requested page size and refuses one over the maximum", async () => {
    const page = await admin.users.list({ limit: 7 });
    expect(page.users).toHaveLength(7);
    expect(page.next_cursor).toBeDefined();
    const next = await admin.users.list({ limit: 7, cursor: page.next_cursor as string });
    expect(next.users).toHaveLength(7);
    expect(next.users.map((u) => u.principal)).not.toContain(page.users[0]?.principal);
    expect((await rejection(admin.users.list({ limit: 1001 }))).code).toBe(ErrorCode.BadRequest);
    expect((await rejection(admin.users.list({ limit: 0 }))).code).toBe(ErrorCode.BadRequest);
  });

  it("a cursor it did not issue is 400 invalid_cursor; one malformed for the contract is 400 schema_violation", async () => {
    for (const cursor of ["garbage", "s0", "s99999999999999999", "rabcdefgh12"]) {
      const err = await rejection(admin.users.list({ cursor }));
      expect([err.code, err.reason]).toEqual([ErrorCode.BadRequest, "invalid_cursor"]);
    }
    const err = await rejection(admin.users.list({ cursor: "s1;drop" }));
    expect([err.code, err.reason]).toEqual([ErrorCode.BadRequest, "schema_violation"]);
  });

  it("a cursor past the end is an empty last page", async () => {
    const page = await admin.users.list({ cursor: "s999999999" });
    expect(page).toEqual({ users: [] });
  });

  it("a user changed during a listing is never skipped (it may come again, the iterator yields it once)", async () => {
    const first = await admin.users.list({ limit: 50 });
    const changed = first.users[10] as UserRecord;
    // Rewritten after its page was read: it moves behind the cursor.
    await svc.store.buckets.users.put(changed.principal, JSON.stringify({ ...changed, handle: "renamed" }));
    const rest = new Set(first.users.map((u) => u.principal));
    let cursor = first.next_cursor;
    let again = false;
    while (cursor !== undefined) {
      const page = await admin.users.list({ cursor, limit: 1000 });
      for (const u of page.users) {
        if (u.principal === changed.principal) again = u.handle === "renamed";
        rest.add(u.principal);
      }
      cursor = page.next_cursor;
    }
    expect(rest.size).toBe(SEEDED + 2);
    expect(again).toBe(true);
  }, 60_000);

  it("is admin only, page or not", async () => {
    expect((await rejection(member.users.list({ limit: 1 }))).code).toBe(ErrorCode.Forbidden);
  });
});

describe("rooms.list pages", () => {
  const mine: string[] = [];
  beforeAll(async () => {
    for (let i = 0; i < 5; i++) mine.push((await member.rooms.create(`m${i}`, { persist: false, encrypt: true })).room.id);
    for (let i = 0; i < 3; i++) await admin.rooms.create(`a${i}`, { persist: false, encrypt: true });
  });

  it("the caller's own rooms page by id, each once, with the role", async () => {
    const seen: string[] = [];
    let cursor: string | undefined;
    let pages = 0;
    do {
      const page = await member.rooms.list({ limit: 2, ...(cursor === undefined ? {} : { cursor }) });
      pages++;
      expect(page.rooms.length).toBeLessThanOrEqual(2);
      for (const r of page.rooms) {
        expect(r.role).toBe("owner");
        seen.push(r.room.id);
      }
      cursor = page.next_cursor;
    } while (cursor !== undefined);
    expect(seen).toEqual([...mine].sort());
    expect(pages).toBe(3);
  });

  it("every room pages for an admin, each once", async () => {
    const ids: string[] = [];
    for await (const r of admin.rooms.listAll({ all: true, limit: 3 })) ids.push(r.room.id);
    expect(ids).toHaveLength(8);
    expect(new Set(ids).size).toBe(8);
    for (const id of mine) expect(ids).toContain(id);
  });

  it("a cursor of the other kind is 400 invalid_cursor", async () => {
    const own = await rejection(member.rooms.list({ cursor: "s1" }));
    expect([own.code, own.reason]).toEqual([ErrorCode.BadRequest, "invalid_cursor"]);
    const all = await rejection(admin.rooms.list({ all: true, cursor: `r${mine[0] ?? ""}` }));
    expect([all.code, all.reason]).toEqual([ErrorCode.BadRequest, "invalid_cursor"]);
    expect((await rejection(member.rooms.list({ limit: 501 }))).code).toBe(ErrorCode.BadRequest);
  });
});

describe("rooms.get pages its members", () => {
  let roomId: string;
  const seededMembers = new Set<string>();
  beforeAll(async () => {
    roomId = (await member.rooms.create("crowd", { persist: false, encrypt: true })).room.id;
    const other = (await member.rooms.create("elsewhere", { persist: false, encrypt: true })).room.id;
    const members = svc.store.buckets.members;
    const addedAt = new Date().toISOString();
    // Records only (no grants): paging reads the members bucket.
    for (let i = 0; i < 12; i++) {
      const principal = fakePrincipal();
      seededMembers.add(principal);
      await members.put(`${roomId}.${principal}`, JSON.stringify({ roomId, principal, role: "member", addedAt, addedBy: memberKey.principal }));
      const stranger = fakePrincipal();
      await members.put(`${other}.${stranger}`, JSON.stringify({ roomId: other, principal: stranger, role: "member", addedAt, addedBy: memberKey.principal }));
    }
  });

  it("follows the cursor through this room's members only, each once", async () => {
    const seen: string[] = [];
    let cursor: string | undefined;
    let pages = 0;
    do {
      const page = await member.rooms.get(roomId, { limit: 5, ...(cursor === undefined ? {} : { cursor }) });
      pages++;
      expect(page.room.id).toBe(roomId);
      expect(page.members.length).toBeLessThanOrEqual(5);
      for (const m of page.members) {
        expect(m.roomId).toBe(roomId);
        seen.push(m.principal);
      }
      cursor = page.next_cursor;
    } while (cursor !== undefined);
    expect(pages).toBe(3);
    expect(seen.sort()).toEqual([memberKey.principal, ...seededMembers].sort());
    const all: string[] = [];
    for await (const m of member.rooms.members(roomId)) all.push(m.principal);
    expect(all.sort()).toEqual(seen);
  });

  it("a bad cursor is 400 invalid_cursor, and a page past the end is empty", async () => {
    const err = await rejection(member.rooms.get(roomId, { cursor: "rnotaseq1" }));
    expect([err.code, err.reason]).toEqual([ErrorCode.BadRequest, "invalid_cursor"]);
    const past = await member.rooms.get(roomId, { cursor: "s999999999" });
    expect(past.members).toEqual([]);
    expect(past.next_cursor).toBeUndefined();
    // Inside the stream but past this room's last member (the last write is
    // another room's): nothing matches, and the page ends at once, empty.
    const last = (await svc.store.buckets.members.status()).streamInfo.state.last_seq;
    const tail = await member.rooms.get(roomId, { cursor: `s${last}` });
    expect(tail.members).toEqual([]);
    expect(tail.next_cursor).toBeUndefined();
  });
});
