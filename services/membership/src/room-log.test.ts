import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { ErrorCode, UnibusError } from "@unibus/contracts";
import { SigningKey } from "@unibus/crypto";
import { RoomLogOp, connect, verifyRoomLog } from "@unibus/sdk";
import type { UnibusClient } from "@unibus/sdk";
import { rejectionOf, startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { noKicks } from "./kick.js";
import { createMembershipService } from "./service.js";
import type { RunningMembershipService } from "./service.js";

const silent = pino({ level: "silent" });

let server: TestServer;
let nc: NatsConnection;
let svc: RunningMembershipService;
const bootKey = SigningKey.generate();
const adminKey = SigningKey.generate();
const ownerKey = SigningKey.generate();
const guests = Array.from({ length: 40 }, () => SigningKey.generate());
let admin: UnibusClient;
let owner: UnibusClient;
let roomId = "";

beforeAll(async () => {
  server = await startTestServer({ jetstream: true });
  nc = await server.connect();
  svc = await createMembershipService(nc, { logger: silent, kicker: noKicks, bootstrapPrincipal: bootKey.principal });
  const boot = await connect({ url: server.url, identity: bootKey });
  await boot.admin.bootstrap(adminKey.principal, "root");
  await boot.close();
  admin = await connect({ url: server.url, identity: adminKey });
  owner = await connect({ url: server.url, identity: ownerKey });
  await admin.users.add(ownerKey.principal, "owner", "member");
  await Promise.all(guests.map((g, i) => admin.users.add(g.principal, `g${i}`, "member")));
  ({ room: { id: roomId } } = await owner.rooms.create("logged", { persist: false, encrypt: true }));
  // Concurrent invites: the service queues its appends per room, none is lost or forked.
  await Promise.all(guests.map((g) => owner.rooms.invite(roomId, g.principal)));
});

afterAll(async () => {
  await Promise.allSettled([admin?.close(), owner?.close()]);
  await svc?.stop();
  await nc?.close();
  await server?.stop();
});

describe("rooms.log", () => {
  it("serves the whole chain in pages (long ranges as one consumer page) and it verifies", async () => {
    const first = await owner.rooms.log(roomId, 0, 25);
    expect(first.headSeq).toBe(guests.length);
    expect(first.entries.map((e) => e.seq)).toEqual(Array.from({ length: 25 }, (_, i) => i));
    const rest = await owner.rooms.log(roomId, 25);
    expect(rest.entries.map((e) => e.seq)).toEqual(Array.from({ length: guests.length + 1 - 25 }, (_, i) => 25 + i));
    const log = verifyRoomLog(roomId, [...first.entries, ...rest.entries]);
    expect(log.members.size).toBe(guests.length + 1);
    expect((await owner.roomLogs.sync(roomId)).headSeq).toBe(guests.length);
    expect((await owner.rooms.log(roomId, guests.length + 5)).entries).toEqual([]);
  });

  it("answers only members and admins", async () => {
    const outsider = SigningKey.generate();
    await admin.users.add(outsider.principal, "outsider", "member");
    const c = await connect({ url: server.url, identity: outsider });
    try {
      expect((await rejectionOf(c.rooms.log(roomId), UnibusError)).code).toBe(ErrorCode.Forbidden);
      expect((await admin.rooms.log(roomId)).headSeq).toBe(guests.length);
    } finally {
      await c.close();
    }
  });

  it("an admin's change is logged as an admin entry, which clients accept only from a pinned admin", async () => {
    const guest = guests[0]!;
    await admin.rooms.remove(roomId, guest.principal);
    const { entries, headSeq } = await admin.rooms.log(roomId, guests.length + 1);
    expect(entries).toEqual([expect.objectContaining({ seq: headSeq, op: RoomLogOp.remove, target: guest.principal, actorRole: "admin", signer: adminKey.principal })]);
    const all = [...(await owner.rooms.log(roomId, 0)).entries];
    expect((await rejectionOf(Promise.resolve().then(() => verifyRoomLog(roomId, all)), UnibusError)).reason).toBe("log_unauthorized");
    expect(verifyRoomLog(roomId, all, { trustedAdmins: [adminKey.principal] }).members.has(guest.principal)).toBe(false);
  });
});

describe("the log is the source of truth", () => {
  it("a member record lost after its log entry (a crash between the two) is repaired on start; one the log does not hold is revoked", async () => {
    const kept = guests[1]!.principal;
    const stray = SigningKey.generate().principal;
    // As a crash would leave them: the record of a logged invite missing, a record with no log entry present.
    await svc.store.updateMember(roomId, kept, () => null);
    await svc.store.setRoomGrant(kept, roomId, null);
    await svc.store.updateMember(roomId, stray, () => ({ roomId, principal: stray, role: "member", addedAt: new Date().toISOString(), addedBy: ownerKey.principal }));
    await svc.store.setRoomGrant(stray, roomId, "member");
    await svc.stop();
    svc = await createMembershipService(nc, { logger: silent, kicker: noKicks, bootstrapPrincipal: bootKey.principal });
    expect((await svc.store.getMember(roomId, kept))?.value.role).toBe("member");
    expect((await svc.store.getRoomsByMember(kept))?.value.rooms[roomId]).toBe("member");
    expect(await svc.store.getMember(roomId, stray)).toBeNull();
    expect((await svc.store.getRoomsByMember(stray))?.value.rooms[roomId]).toBeUndefined();
  });
});
