import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { ErrorCode, UnibusError } from "@unibus/contracts";
import { SigningKey } from "@unibus/crypto";
import { connect } from "@unibus/sdk";
import type { UnibusClient } from "@unibus/sdk";
import { rejectionOf, startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { noKicks } from "./kick.js";
import { RoomLimit } from "./handlers/rooms.js";
import { createMembershipService } from "./service.js";
import type { RunningMembershipService } from "./service.js";

// The real limit is 5,000 rooms (what a login JWT can carry); the behaviour
// at the limit is the same at 2, which keeps the test fast.
const LIMIT = 2;

let server: TestServer;
let nc: NatsConnection;
let svc: RunningMembershipService;
const bootKey = SigningKey.generate();
const adminKey = SigningKey.generate();
const ownerKey = SigningKey.generate();
const fullKey = SigningKey.generate();
const clients: UnibusClient[] = [];

async function client(key: SigningKey): Promise<UnibusClient> {
  const c = await connect({ url: server.url, identity: key });
  clients.push(c);
  return c;
}

const rejection = (p: Promise<unknown>): Promise<UnibusError> => rejectionOf(p, UnibusError);

let admin: UnibusClient;
let owner: UnibusClient;
let full: UnibusClient;

beforeAll(async () => {
  server = await startTestServer({ jetstream: true });
  nc = await server.connect();
  svc = await createMembershipService(nc, { logger: pino({ level: "silent" }), kicker: noKicks, bootstrapPrincipal: bootKey.principal, roomLimit: LIMIT });
  const boot = await client(bootKey);
  admin = await client(adminKey);
  await boot.admin.bootstrap(adminKey.principal, "root");
  await admin.users.add(ownerKey.principal, "owner", "member");
  await admin.users.add(fullKey.principal, "full", "member");
  [owner, full] = await Promise.all([client(ownerKey), client(fullKey)]);
});

afterAll(async () => {
  await Promise.allSettled(clients.map((c) => c.close()));
  await svc?.stop();
  await server?.stop();
});

describe("room_limit", () => {
  it("the default is the 5,000 rooms a login JWT can still carry", () => {
    expect(RoomLimit.perPrincipal).toBe(5_000);
  });

  it("create past the limit is refused with room_limit and writes nothing", async () => {
    for (let i = 0; i < LIMIT; i++) await full.rooms.create(`mine-${i}`, { persist: false, encrypt: true });
    const before = await svc.store.getRoomsByMember(fullKey.principal);
    expect(Object.keys(before?.value.rooms ?? {})).toHaveLength(LIMIT);

    const err = await rejection(full.rooms.create("one-too-many", { persist: true, encrypt: true }));
    expect(err.code).toBe(ErrorCode.Forbidden);
    expect(err.reason).toBe(RoomLimit.reason);
    expect(err.details?.limit).toBe(LIMIT);
    expect(err.message).toContain(`${LIMIT} rooms`);

    // No grant, no room record: the refusal came before any write.
    const after = await svc.store.getRoomsByMember(fullKey.principal);
    expect(after?.revision).toBe(before?.revision);
    const all = (await admin.rooms.list({ all: true })).rooms.map((r) => r.room.name);
    expect(all).not.toContain("one-too-many");
  });

  it("inviting a principal that is at the limit is refused with room_limit and changes no record", async () => {
    const { room } = await owner.rooms.create("open", { persist: false, encrypt: true });
    const before = await svc.store.getRoomsByMember(fullKey.principal);
    const err = await rejection(owner.rooms.invite(room.id, fullKey.principal));
    expect(err.code).toBe(ErrorCode.Forbidden);
    expect(err.reason).toBe(RoomLimit.reason);
    expect(err.details?.limit).toBe(LIMIT);
    expect(await svc.store.getMember(room.id, fullKey.principal)).toBeNull();
    expect((await svc.store.getRoomsByMember(fullKey.principal))?.revision).toBe(before?.revision);
    // Nor does the room's membership log name the refused invitee.
    expect((await owner.rooms.get(room.id)).members.map((m) => m.principal)).toEqual([ownerKey.principal]);
  });

  it("a role change in a room the principal is already in is not counted against the limit", async () => {
    const { room } = await owner.rooms.create("promote", { persist: false, encrypt: true });
    // The owner now has 2 rooms (open, promote): at the limit.
    const k = SigningKey.generate();
    await admin.users.add(k.principal, "guest", "member");
    await owner.rooms.invite(room.id, k.principal);
    // Re-inviting the owner-at-the-limit into its own room as owner is a no-op conflict, not room_limit.
    const same = await rejection(owner.rooms.invite(room.id, ownerKey.principal, "owner"));
    expect(same.reason).not.toBe(RoomLimit.reason);
    // Promoting the guest (1 room) works; a third room for the owner does not.
    expect((await owner.rooms.invite(room.id, k.principal, "owner")).member.role).toBe("owner");
    expect((await rejection(owner.rooms.create("third", { persist: false, encrypt: true }))).reason).toBe(RoomLimit.reason);
  });
});
